"""AMX for int8: DNNL_MAX_CPU_ISA set at import only where the CPU has AMX and Linux grants the tiles; a user's
value kept; int8 convolutions then run on AMX (oneDNN's own verbose log says so) and give the integers numpy gives."""
import os
import subprocess
import sys

import numpy as np
import pytest

from gluon_yolo3 import amx

FLAGS = "flags\t\t: fpu sse avx512f avx512_vnni {extra}\n"


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """allow_amx() as at a fresh import: MXNet not loaded, no user variable, a CPU with AMX, permission granted."""
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\n" + FLAGS.format(extra="amx_bf16 amx_tile amx_int8"))
    monkeypatch.setattr(amx, "CPUINFO", info)
    monkeypatch.setattr(amx.sys, "platform", "linux")
    monkeypatch.setattr(amx.platform, "machine", lambda: "x86_64")
    monkeypatch.delitem(sys.modules, "mxnet", raising=False)
    for name in amx.USER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    requests = []
    monkeypatch.setattr(amx, "request_tile_permission", lambda: requests.append(1) or True)
    return info, requests


def test_sets_the_isa_once_the_tiles_are_granted(fresh):
    assert amx.allow_amx() and os.environ[amx.VARIABLE] == "AVX512_CORE_AMX"
    assert fresh[1] == [1]


def test_nothing_without_amx_in_the_cpu_flags(fresh):
    fresh[0].write_text(FLAGS.format(extra="amx_bf16"))           # tiles for bf16 only: no int8
    assert not amx.allow_amx() and amx.VARIABLE not in os.environ and fresh[1] == []


def test_nothing_when_linux_refuses_the_tiles(fresh, monkeypatch):
    monkeypatch.setattr(amx, "request_tile_permission", lambda: False)
    assert not amx.allow_amx() and amx.VARIABLE not in os.environ


def test_nothing_once_mxnet_is_loaded(fresh, monkeypatch):
    monkeypatch.setitem(sys.modules, "mxnet", object())
    assert not amx.allow_amx() and amx.VARIABLE not in os.environ


@pytest.mark.parametrize("name, value, asks", [
    ("DNNL_MAX_CPU_ISA", "AVX512_CORE_VNNI", False),
    ("MKLDNN_MAX_CPU_ISA", "AVX2", False),
    ("DNNL_MAX_CPU_ISA", "avx512_core_amx", True),      # the user's own AMX choice needs the permission too
    ("DNNL_MAX_CPU_ISA", "ALL", False),                 # oneDNN 2.4 leaves AMX out of "ALL"
])
def test_a_users_choice_is_kept(fresh, monkeypatch, name, value, asks):
    monkeypatch.setenv(name, value)
    assert not amx.allow_amx()
    assert os.environ[name] == value and fresh[1] == ([1] if asks else [])
    if name != amx.VARIABLE:
        assert amx.VARIABLE not in os.environ


INT8_CONV = """
import os, sys, numpy as np
import gluon_yolo3, mxnet as mx
from mxnet import nd
rng = np.random.RandomState(0)
x = nd.array(rng.randint(0, 256, (2, 64, 12, 12)), dtype="uint8")
w = nd.array(rng.randint(-127, 128, (96, 64, 3, 3)), dtype="int8")
def conv():
    one = nd.array([1.0])
    y = nd.contrib.quantized_conv(x, w, 0 * one, 255 * one, -127 * one, 127 * one, kernel=(3, 3), pad=(1, 1),
                                  num_filter=96, no_bias=True)[0]
    return y.asnumpy()
if os.fork() == 0:                  # a DataLoader worker: forked, so it holds the parent's permission
    conv()
    os._exit(0)
assert os.wait()[1] == 0, "the forked child died"
np.save(sys.argv[1], conv())
print("ISA", os.environ.get("DNNL_MAX_CPU_ISA"))
"""


def numpy_conv():
    """INT8_CONV's convolution in int64 numpy: (2, 96, 12, 12)."""
    rng = np.random.RandomState(0)
    x = np.pad(rng.randint(0, 256, (2, 64, 12, 12)), ((0, 0), (0, 0), (1, 1), (1, 1))).astype(np.int64)
    w = rng.randint(-127, 128, (96, 64, 3, 3)).astype(np.int64)
    return sum(np.einsum("bchw,oc->bohw", x[:, :, i:i + 12, j:j + 12], w[:, :, i, j])
               for i in range(3) for j in range(3))


@pytest.mark.skipif(not amx.cpu_has_amx_int8(), reason="this CPU has no AMX int8")
@pytest.mark.slow
def test_int8_runs_on_amx_with_the_integers_of_numpy(tmp_path):
    def run(**extra):
        env = {k: v for k, v in os.environ.items() if k not in amx.USER_VARIABLES}
        env.update(DNNL_VERBOSE="1", **extra)
        out = tmp_path / f"y{len(extra)}.npy"
        done = subprocess.run([sys.executable, "-c", INT8_CONV, str(out)], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        convs = [line.split(",")[4] for line in done.stdout.splitlines()
                 if line.startswith("dnnl_verbose,exec,cpu,convolution")]
        return np.load(out), convs, done.stdout
    amx_out, amx_impl, log = run()
    assert "ISA AVX512_CORE_AMX" in log
    assert amx_impl and all("amx_int8" in impl for impl in amx_impl), amx_impl
    vnni_out, vnni_impl, log = run(DNNL_MAX_CPU_ISA="AVX512_CORE_VNNI")
    assert "ISA AVX512_CORE_VNNI" in log and not any("amx" in impl for impl in vnni_impl), vnni_impl
    reference = numpy_conv()
    assert amx_out.dtype == np.int32 and np.abs(reference).max() > 100000
    np.testing.assert_array_equal(amx_out, reference)
    np.testing.assert_array_equal(vnni_out, reference)
