"""Darknet interop against OpenCV's Darknet reader (cv2.dnn.readNetFromDarknet), on weight files these
tests write themselves (random values, both header versions), at small inputs. Darknet's released weights:
test_darknet_release.py."""
import copy
import struct

import cv2
import numpy as np
import pytest
import yaml

from gluon_yolo3 import api
from gluon_yolo3.interop.darknet.cfg import (DarknetError, count_floats, describe_cfg, parse_cfg, parse_cfg_text,
                                             recipe_from_cfg, walk_cfg)
from gluon_yolo3.interop.darknet.jobs import load_darknet
from gluon_yolo3.interop.darknet.layout import check_layout, darknet_layout
from gluon_yolo3.interop.darknet.weights_file import WeightsHeader, read_weights
from gluon_yolo3.recipe import DEFAULTS, merge


def build_from_cfg(path):
    partial = recipe_from_cfg(parse_cfg(path), path)
    recipe = merge(copy.deepcopy(DEFAULTS), partial)
    return partial, api.build(recipe, len(partial["data"]["classes"]))


@pytest.fixture(scope="module")
def image():
    """A natural-looking test image: a synthetic-dataset picture (shapes on gradients), BGR uint8."""
    from gluon_yolo3.data.synthetic import SyntheticShapes
    rgb, _ = SyntheticShapes(num_images=1, image_size=(120, 150), split="test")[0]
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


# --------------------------------------------------------------------------------- the layer walk

@pytest.mark.parametrize("name, floats, size", [
    ("yolov3", 62_001_757, 248_007_048),       # the release yolov3.weights
    ("yolov3-tiny", 8_858_734, 35_434_956),    # the release yolov3-tiny.weights
    ("yolov4-tiny", 6_062_814, 24_251_276),    # the release yolov4-tiny.weights
])
def test_layer_walk_matches_release_file_sizes(name, floats, size, darknet_cfgs):
    path = darknet_cfgs / f"{name}.cfg"
    sections = parse_cfg(path)
    assert count_floats(sections) == floats
    assert floats * 4 + WeightsHeader(0, 2, 0).size == size
    # the network built from the cfg holds exactly these floats, in a layout matching the cfg layer by layer
    _, net = build_from_cfg(path)
    layout = darknet_layout(net)
    check_layout(sections, layout, path)
    assert layout.floats == floats


def test_yolov3_spp_layout_matches_its_cfg(darknet_cfgs):
    path = darknet_cfgs / "yolov3-spp.cfg"
    sections = parse_cfg(path)
    partial, net = build_from_cfg(path)
    assert partial["model"]["neck"] == {"type": "yolov3_spp"}
    layout = darknet_layout(net)
    check_layout(sections, layout, path)
    # yolov3 plus the 1x1 conv 2048 -> 512 (with BN) after the SPP concat
    assert layout.floats == count_floats(sections) == 62_001_757 + 2048 * 512 + 4 * 512


def test_recipe_from_cfg_reads_classes_anchors_and_size(darknet_cfgs):
    partial = recipe_from_cfg(parse_cfg(darknet_cfgs / "yolov3-tiny.cfg"))
    model = partial["model"]
    assert model["input_size"] == 416
    assert model["backbone"] == {"type": "darknet_tiny", "width": 1.0}
    # masks 0,1,2 (stride 16) first, then 3,4,5 (stride 32)
    assert model["anchors"] == [[[10, 14], [23, 27], [37, 58]], [[81, 82], [135, 169], [344, 319]]]
    assert model["norm"]["eps"] == 1e-6
    assert partial["data"]["classes"][:3] == ["person", "bicycle", "car"]
    assert partial["data"]["mean"] == [0.0, 0.0, 0.0] and partial["data"]["std"] == [1.0, 1.0, 1.0]
    assert "scale_x_y" not in model


def test_recipe_from_yolov4_tiny_cfg_masks_and_grid_sensitivity(darknet_cfgs):
    model = recipe_from_cfg(parse_cfg(darknet_cfgs / "yolov4-tiny.cfg"))["model"]
    assert model["backbone"] == {"type": "csp_darknet_tiny", "width": 1.0}
    assert model["neck"] == {"type": "yolov3_tiny", "width": 1.0}
    # masks 1,2,3 (stride 16) and 3,4,5 (stride 32) over six anchors: anchor 0 (10,14) is never used and
    # anchor 3 (81,82) serves both scales
    assert model["anchors"] == [[[23, 27], [37, 58], [81, 82]], [[81, 82], [135, 169], [344, 319]]]
    assert model["scale_x_y"] == 1.05


def test_route_groups_in_the_layer_walk(tmp_path):
    """Darknet's [route] groups=g group_id=k passes on C / g channels of its source (hand-made cfg)."""
    text = ("[net]\nwidth=64\nheight=64\nchannels=3\n[convolutional]\nfilters=24\nsize=3\n"
            "[route]\nlayers=-1\ngroups={g}\ngroup_id={k}\n[convolutional]\nfilters=8\nsize=1\n")
    layers = walk_cfg(parse_cfg_text(text.format(g=3, k=2)))
    assert [layer.channels for layer in layers] == [24, 8, 8]
    assert layers[2].floats == 8 * 8 * 1 * 1 + 8          # no batch_normalize: bias + weights of 8 -> 8
    for g, k, what in ((5, 0, "does not divide the 24 channels"), (2, 2, "group_id must lie in 0..groups-1")):
        with pytest.raises(DarknetError, match=what):
            walk_cfg(parse_cfg_text(text.format(g=g, k=k)))


def test_cfg_parser_comments_and_errors(tmp_path):
    sections = parse_cfg_text("# top\n[net]\nwidth = 64 \n; note\n\n[conv]\nfilters=8\n")
    assert [s.kind for s in sections] == ["net", "convolutional"]
    assert sections[0].options["width"] == "64" and sections[1].line == 6
    bad = tmp_path / "bad.cfg"
    bad.write_text("[net]\nwidth=64\nthis line is wrong\n")
    with pytest.raises(DarknetError, match=r"bad\.cfg: line 3"):
        parse_cfg(bad)
    odd = tmp_path / "odd.cfg"
    odd.write_text("[net]\nwidth=64\nheight=64\n[convolutional]\nfilters=8\nsize=3\n[crop]\n")
    with pytest.raises(DarknetError, match=r"line 7: layer 1 \[crop\] is not supported"):
        describe_cfg(parse_cfg(odd), odd)


def test_cfg_that_differs_from_the_network_names_its_line(tmp_path, darknet_cfgs):
    text = (darknet_cfgs / "yolov3-tiny.cfg").read_text()
    # the 1x1 conv after the 1024 conv (layer 13): 256 -> 200 filters
    head = text.index("###########")
    text = text[:head] + text[head:].replace("filters=256", "filters=200", 1)
    path = tmp_path / "changed.cfg"
    path.write_text(text)
    line = text[:text.index("filters=200")].count("\n") - 1   # the [convolutional] header above it
    with pytest.raises(DarknetError, match=rf"changed\.cfg:{line}: layer 13 \[convolutional\]: "
                                          rf"filters=200, but .* has filters=256"):
        load_darknet(path, tmp_path / "unused.weights")


# ------------------------------------------------------------------------------- the weights file

@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory, random_weights, small_cfg, write_darknet_weights):
    """yolov3-tiny at 96 px with random weights, written in both header versions."""
    folder = tmp_path_factory.mktemp("tiny")
    cfg = small_cfg("yolov3-tiny", 96, folder)
    arrays = random_weights(cfg.read_text(), np.random.default_rng(0))
    new = folder / "new.weights"
    old = folder / "old.weights"
    write_darknet_weights(new, arrays, major=0, minor=2, seen=32013312)
    write_darknet_weights(old, arrays, major=0, minor=1, seen=64000)
    return cfg, new, old, arrays


def test_both_header_versions(tiny_files):
    cfg, new, old, arrays = tiny_files
    floats = sum(a.size for a in arrays)
    assert new.stat().st_size == 20 + 4 * floats and old.stat().st_size == 16 + 4 * floats
    header_new, body_new = read_weights(new)
    header_old, body_old = read_weights(old)
    assert (header_new.seen, header_new.seen_bytes) == (32013312, 8)
    assert (header_old.seen, header_old.seen_bytes) == (64000, 4)
    np.testing.assert_array_equal(body_new, body_old)
    _, net_new, _ = load_darknet(cfg, new)
    _, net_old, _ = load_darknet(cfg, old)
    for (name, a), b in zip(net_new.collect_params().items(), net_old.collect_params().values()):
        np.testing.assert_array_equal(a.data().asnumpy(), b.data().asnumpy(), err_msg=name)
    # the first conv's BN: beta, gamma, mean, var, then the weights (16, 3, 3, 3), as written
    stem = net_new.backbone.body16[0]
    np.testing.assert_array_equal(stem.bn.beta.data().asnumpy(), arrays[0])
    np.testing.assert_array_equal(stem.bn.running_var.data().asnumpy(), arrays[3])
    np.testing.assert_array_equal(stem.conv.weight.data().asnumpy(), arrays[4].reshape(16, 3, 3, 3))


def test_truncated_or_long_weights_fail_with_counts(tiny_files, tmp_path, invoke, write_darknet_weights):
    cfg, _, _, arrays = tiny_files
    short = tmp_path / "short.weights"
    write_darknet_weights(short, arrays, drop_floats=1)
    cv2.dnn.readNetFromDarknet(str(cfg), str(short))     # OpenCV accepts it silently
    result = invoke("import-darknet", cfg, short, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "8,858,733 floats" in result.output and "need 8,858,734" in result.output
    assert "truncated" in result.output and "short.weights" in result.output
    assert not (tmp_path / "out").exists()
    long = tmp_path / "long.weights"
    write_darknet_weights(long, arrays + [np.zeros(3, np.float32)])
    with pytest.raises(DarknetError, match=r"8,858,737 floats .* need 8,858,734 .* too long"):
        load_darknet(cfg, long)


@pytest.mark.parametrize("name, size", [("yolov3-tiny", 96), ("yolov4-tiny", 96),
                                        pytest.param("yolov3", 64, marks=pytest.mark.slow),
                                        pytest.param("yolov3-spp", 64, marks=pytest.mark.slow)])
def test_raw_yolo_outputs_equal_opencv(name, size, tmp_path, image, random_weights, small_cfg, write_darknet_weights,
                                       compare_with_opencv):
    cfg = small_cfg(name, size, tmp_path)
    weights = tmp_path / f"{name}.weights"
    write_darknet_weights(weights, random_weights(cfg.read_text(), np.random.default_rng(1)))
    compare_with_opencv(cfg, weights, image, size)


def test_import_darknet_cli_then_predict(tiny_files, tmp_path, image, invoke):
    cfg, new, _, _ = tiny_files
    out = tmp_path / "imported"
    result = invoke("import-darknet", cfg, new, "--out", out)
    assert result.exit_code == 0, result.output
    recipe_text = (out / "recipe.yaml").read_text()
    assert yaml.safe_load(recipe_text)["model"]["norm"]["eps"] == 1e-6
    path = tmp_path / "image.jpg"
    cv2.imwrite(str(path), image)
    result = invoke("predict", out / "recipe.yaml", path, "--weights", out, "--out", tmp_path / "pred",
                    "--score-thresh", "0.5")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pred" / "detections.json").exists()


# ------------------------------------------------------------------------- export-darknet round trip

def test_export_darknet_round_trip_through_opencv(tmp_path, demo_sets, invoke, trained_demo, opencv_detections):
    recipe, run = trained_demo
    out = tmp_path / "darknet"
    result = invoke("export-darknet", recipe["_file_"], "--weights", run, "--out", out,
                    *sum((["--set", s] for s in demo_sets), []))
    assert result.exit_code == 0, result.output
    cfg, weights = out / "demo_tiny.cfg", out / "demo_tiny.weights"
    assert (out / "demo_tiny.names").read_text().split() == ["circle", "square", "triangle"]
    header = struct.unpack("<3iQ", weights.read_bytes()[:20])
    assert header[:3] == (0, 2, 0)
    from gluon_yolo3.data.synthetic import SyntheticShapes
    dataset = SyntheticShapes(num_images=16, image_size=64, split="val", min_size=0.25, clutter=False)
    thresh = 0.25           # above OpenCV's 0.2, below which its yolo layer zeroes class scores
    predictor = api.Predictor(recipe, run, score_thresh=thresh)
    matched = total = 0
    for i in range(len(dataset)):
        rgb, _ = dataset[i]                      # 64 x 64: the letterbox leaves it as it is
        theirs = opencv_detections(cfg, weights, rgb, score_thresh=thresh)
        ours = predictor.predict_one(rgb)
        total += len(ours["ids"])
        for box, score, cid in zip(ours["boxes"], ours["scores"], ours["ids"]):
            same = [t for t in theirs if t[0] == cid and np.abs(t[2] - box).max() < 0.5]
            matched += bool(same) and abs(same[0][1] - score) < 2e-3
        assert abs(len(theirs) - len(ours["ids"])) <= 1
    assert total >= 10 and matched >= total - 1, (matched, total)
