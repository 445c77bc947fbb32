"""OpenMP thread default: one thread per physical core, set before MXNet loads, a user's value kept."""
import os
import subprocess
import sys

import pytest

from gluon_yolo3 import threads


def fake_topology(tmp_path, siblings):
    for cpu, text in enumerate(siblings):
        folder = tmp_path / f"cpu{cpu}" / "topology"
        folder.mkdir(parents=True)
        (folder / "thread_siblings_list").write_text(text + "\n")


def test_hyper_threads_count_once(tmp_path, monkeypatch):
    fake_topology(tmp_path, ["0,2", "1,3", "0,2", "1,3"])
    monkeypatch.setattr(threads, "SYSFS_CPU", tmp_path)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert threads.physical_cores() == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2})    # pinned to one core's two threads
    assert threads.physical_cores() == 1


def test_one_thread_per_core_counts_every_cpu(tmp_path, monkeypatch):
    fake_topology(tmp_path, ["0", "1", "2"])
    monkeypatch.setattr(threads, "SYSFS_CPU", tmp_path)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert threads.physical_cores() == 3


def _after_import(env, names=("MXNET_OMP_MAX_THREADS", "OMP_NUM_THREADS")):
    """The values of the variables `names` once a fresh process with `env` imported gluon_yolo3, then mxnet."""
    code = "import os, gluon_yolo3, mxnet; print(" + ", ".join(f"os.environ.get({n!r})" for n in names) + ")"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.split()


def _mxnet_threads(env):
    """Threads MXNet really runs a convolution on: the threads of the process that each did at least a quarter
    of the busiest one's CPU time over five large 3x3 convolutions (/proc/self/task). Counted per thread, not
    as CPU seconds over wall seconds, so that another job on the cores does not change the answer."""
    code = """
import os, gluon_yolo3, mxnet as mx
def cpu_ticks():
    ticks = {}
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks[tid] = int(fields[11]) + int(fields[12])      # utime + stime
    return ticks
x = mx.nd.ones((4, 64, 128, 128)); w = mx.nd.ones((64, 64, 3, 3))
conv = lambda: mx.nd.Convolution(x, w, kernel=(3, 3), pad=(1, 1), num_filter=64, no_bias=True).wait_to_read()
conv()
before = cpu_ticks()
for _ in range(5):
    conv()
work = [t - before.get(tid, 0) for tid, t in cpu_ticks().items()]
print(sum(w >= max(work) / 4 for w in work))
"""
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def clean_env():
    return {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", threads.VARIABLE, *threads.SPIN)}


@pytest.mark.slow
def test_import_sets_mxnets_variable_only_and_keeps_a_users_value():
    env = clean_env()
    assert _after_import(env) == [str(threads.physical_cores()), "None"]     # OpenBLAS left alone
    assert _after_import(dict(env, OMP_NUM_THREADS="3")) == ["None", "3"]
    assert _after_import(dict(env, MXNET_OMP_MAX_THREADS="1")) == ["1", "None"]


@pytest.mark.skipif((threads.physical_cores() or 1) < 2, reason="needs two physical cores")
@pytest.mark.slow
def test_mxnet_uses_the_cores_after_import():
    # MXNet alone takes half the logical CPUs (1 here); after `import gluon_yolo3`, one per core
    assert _mxnet_threads(dict(clean_env(), MXNET_OMP_MAX_THREADS="1")) == 1
    assert _mxnet_threads(clean_env()) == threads.physical_cores()


@pytest.mark.slow
def test_import_sets_the_spin_policy_and_keeps_a_users_value():
    def after(env):
        return _after_import(env, tuple(threads.SPIN))
    assert after(clean_env()) == ["ACTIVE", "300000"]
    assert after(dict(clean_env(), OMP_WAIT_POLICY="PASSIVE")) == ["PASSIVE", "None"]
    assert after(dict(clean_env(), GOMP_SPINCOUNT="0")) == ["None", "0"]


def test_nothing_changes_once_mxnet_is_loaded(monkeypatch):
    import mxnet  # noqa: F401
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv(threads.VARIABLE, raising=False)
    assert threads.use_physical_cores() is None
    assert threads.VARIABLE not in os.environ
    for name in threads.SPIN:
        monkeypatch.delenv(name, raising=False)
    assert threads.spin_before_sleeping() is False
    assert not any(name in os.environ for name in threads.SPIN)
