"""Zoo folders (`gluon-yolo3 pack`): float16 storage half the bytes, the same detections and mAP within
float16 rounding, sha256 sums written in `sha256sum -c` format and checked on load."""
import hashlib
import json
import os
import re

import mxnet as mx
import numpy as np
import pytest

from gluon_yolo3 import api
from gluon_yolo3.inference.weights import find_weights


@pytest.fixture(scope="module")
def packed(tmp_path_factory, demo_sets, invoke, sets, trained_demo):
    recipe, run = trained_demo
    out = tmp_path_factory.mktemp("zoo") / "demo"
    result = invoke("pack", recipe["_file_"], "--weights", run, "--out", out, *sets(demo_sets))
    assert result.exit_code == 0, result.output
    return recipe, run, out


def test_float16_storage_halves_the_file_and_rounds_each_weight(packed):
    _, run, out = packed
    source = find_weights(run)
    full, half = mx.nd.load(str(source)), mx.nd.load(str(out / "model.params"))
    assert set(full) == set(half)
    assert all(v.dtype == np.float16 for v in half.values())
    for name, value in full.items():
        np.testing.assert_array_equal(half[name].asnumpy(), value.asnumpy().astype(np.float16))
    assert (out / "model.params").stat().st_size < 0.52 * source.stat().st_size


def test_sums_match_hashlib_and_recipe_is_loadable(packed):
    _, _, out = packed
    lines = (out / "SHA256SUMS").read_text().splitlines()
    assert len(lines) == 2
    for line in lines:
        digest, name = re.fullmatch(r"([0-9a-f]{64})  (\S+)", line).groups()
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    recipe = api.load(out / "recipe.yaml")
    assert recipe["model"]["input_size"] == 64


def test_same_detections_and_map_as_float32(packed, demo_sets, invoke, sets):
    recipe, run, out = packed
    x = mx.nd.array(np.random.default_rng(0).normal(0, 1, (2, 3, 64, 64)).astype(np.float32))
    full = api.load_detector(recipe, run)
    half = api.load_detector(recipe, out)
    assert all(p.dtype == np.float32 for p in half.collect_params().values())
    ids_f, scores_f, boxes_f = (o.asnumpy() for o in full(x))
    ids_h, scores_h, boxes_h = (o.asnumpy() for o in half(x))
    keep = scores_f > 0.3
    np.testing.assert_array_equal(ids_f[keep], ids_h[keep])
    np.testing.assert_allclose(scores_f[keep], scores_h[keep], atol=0.02)
    np.testing.assert_allclose(boxes_f[keep[..., 0]], boxes_h[keep[..., 0]], atol=0.5)
    res_f = invoke("eval", recipe["_file_"], "--weights", run, "--json", out.parent / "f.json", *sets(demo_sets))
    res_h = invoke("eval", out / "recipe.yaml", "--weights", out, "--json", out.parent / "h.json")
    assert res_f.exit_code == 0 and res_h.exit_code == 0, res_f.output + res_h.output
    map_f = json.loads((out.parent / "f.json").read_text())["map"]
    map_h = json.loads((out.parent / "h.json").read_text())["map"]
    assert map_f > 0.2 and abs(map_f - map_h) < 0.01


def test_damaged_file_is_refused_with_its_name(packed, tmp_path, invoke):
    recipe, _, out = packed
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for name in ("model.params", "recipe.yaml", "SHA256SUMS"):
        (damaged / name).write_bytes((out / name).read_bytes())
    data = bytearray((damaged / "model.params").read_bytes())
    data[-3] ^= 0xFF
    (damaged / "model.params").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model\.params: sha256 .* differs"):
        api.load_detector(recipe, damaged)
    result = invoke("eval", out / "recipe.yaml", "--weights", damaged)
    assert result.exit_code != 0 and "damaged or replaced" in result.output


def test_unknown_dtype_is_an_error(packed, tmp_path, demo_sets, invoke, sets):
    recipe, run, _ = packed
    result = invoke("pack", recipe["_file_"], "--weights", run, "--out", tmp_path / "z", "--dtype", "int4",
                    *sets(demo_sets))
    assert result.exit_code != 0 and "float16" in result.output


def test_written_files_get_the_umasks_mode_not_mkstemps_0600(packed):
    _, _, out = packed
    umask = os.umask(0)
    os.umask(umask)
    for name in ("model.params", "recipe.yaml", "SHA256SUMS"):
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_a_weight_beyond_float16_is_refused_with_its_name(packed, tmp_path, demo_sets, invoke, sets):
    recipe, run, _ = packed
    arrays = mx.nd.load(str(find_weights(run)))
    name = sorted(k for k in arrays if k.endswith("running_var"))[0]
    arrays[name][0] = 1e6                          # float16 tops out at 65504
    mx.nd.save(str(tmp_path / "big.params"), arrays)
    result = invoke("pack", recipe["_file_"], "--weights", tmp_path / "big.params", "--out", tmp_path / "z",
                    *sets(demo_sets))
    assert result.exit_code != 0 and name in result.output and "float32" in result.output
