"""Darknet interop against OpenCV's Darknet reader (cv2.dnn.readNetFromDarknet), on weight files these
tests write themselves (random values, both header versions), at small inputs; and, where it is shared beside
the checkout (`dataset`), on Darknet's released COCO yolov3-tiny and its sample photos, with the zoo model
packed from it."""
import copy
import struct

import cv2
import mxnet as mx
import numpy as np
import pytest
import yaml

from gluon_yolo3 import api
from gluon_yolo3.data.feed import resize_with_geometry, to_original
from gluon_yolo3.interop.darknet.cfg import (DarknetError, count_floats, describe_cfg, parse_cfg, parse_cfg_text,
                                             recipe_from_cfg)
from gluon_yolo3.interop.darknet.jobs import load_darknet, read_names
from gluon_yolo3.interop.darknet.layout import check_layout, darknet_layout
from gluon_yolo3.interop.darknet.weights_file import WeightsHeader, read_weights
from gluon_yolo3.recipe import DEFAULTS, merge

OPENCV_THRESH = 0.2   # OpenCV's region layer zeroes class probabilities at or below this


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


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


# --------------------------------------------------------------------------------- against OpenCV

def opencv_like(raw, anchors, size):
    """Our raw outputs `(1, H, W, A, 5 + C)` transformed as OpenCV's region layer transforms its input:
    rows (y, x, anchor); x, y = (sigmoid + cell) / grid; w, h = exp * anchor / input size;
    objectness sigmoid; class columns objectness * sigmoid(class), unthresholded."""
    _, h, w, a, d = raw.shape
    out = np.empty_like(raw, dtype=np.float64)
    out[..., 0] = (sigmoid(raw[..., 0]) + np.arange(w).reshape(1, 1, w, 1)) / w
    out[..., 1] = (sigmoid(raw[..., 1]) + np.arange(h).reshape(1, h, 1, 1)) / h
    anchors = np.asarray(anchors, dtype=np.float64)
    out[..., 2] = np.exp(raw[..., 2]) * anchors[:, 0] / size
    out[..., 3] = np.exp(raw[..., 3]) * anchors[:, 1] / size
    out[..., 4] = sigmoid(raw[..., 4])
    out[..., 5:] = out[..., 4:5] * sigmoid(raw[..., 5:])
    return out.reshape(-1, d)


def assert_close(ours, theirs, what):
    """Within 1e-4 relative (to the tensor's largest magnitude where an element is near 0)."""
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max(), err_msg=what)


def compare_with_opencv(cfg, weights, image, size, min_scores=11, mean_rtol=None):
    """Our raw outputs and OpenCV's, layer by layer, within 1e-4 (`assert_close`) and, given `mean_rtol`, with
    a mean absolute difference under `mean_rtol` times their mean magnitude; OpenCV's yolo layers' boxes,
    objectness and class scores as `opencv_like` computes them from ours, where at least `min_scores` class
    scores of each yolo layer are above OpenCV's threshold."""
    cv_net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    blob = cv2.dnn.blobFromImage(image, 1 / 255.0, (size, size), swapRB=True, crop=False)
    partial, net, _ = load_darknet(cfg, weights)
    raw = [r.asnumpy() for r in net.head(*net.neck(*net.backbone(mx.nd.array(blob))))]
    layers = darknet_layout(net)
    yolo_index = [i for i, s in enumerate(layers.sections) if s.kind == "yolo"]   # coarsest first
    anchors = partial["model"]["anchors"]
    for k, index in enumerate(yolo_index):
        s = len(raw) - 1 - k
        # the raw output: the linear conv feeding the yolo layer, (1, A * (5 + C), H, W)
        cv_net.setInput(blob)
        cv_raw = cv_net.forward(f"conv_{index - 1}")
        ours = raw[s].reshape(raw[s].shape[:3] + (-1,)).transpose(0, 3, 1, 2)
        assert_close(ours, cv_raw, f"raw output of layer {index - 1}")
        if mean_rtol is not None:
            mean = np.abs(ours - cv_raw).mean() / np.abs(cv_raw).mean()
            assert mean < mean_rtol, f"raw output of layer {index - 1}: mean relative difference {mean:.2e}"
        # the yolo layer's output, post-activation
        cv_net.setInput(blob)
        cv_yolo = cv_net.forward(f"yolo_{index}")
        mine = opencv_like(raw[s], anchors[s], size)
        assert cv_yolo.shape == mine.shape
        assert_close(mine[:, :5], cv_yolo[:, :5], f"yolo layer {index}: boxes and objectness")
        probs, cv_probs = mine[:, 5:], cv_yolo[:, 5:]
        decided = np.abs(probs - OPENCV_THRESH) > 1e-5     # away from OpenCV's threshold
        np.testing.assert_array_equal((cv_probs > 0)[decided], (probs > OPENCV_THRESH)[decided])
        kept = decided & (probs > OPENCV_THRESH)
        assert kept.sum() >= min_scores, "too few class scores above OpenCV's threshold to compare"
        assert_close(probs[kept], cv_probs[kept], f"yolo layer {index}: class scores")


@pytest.mark.parametrize("name, size", [("yolov3-tiny", 96), pytest.param("yolov3", 64, marks=pytest.mark.slow),
                                        pytest.param("yolov3-spp", 64, marks=pytest.mark.slow)])
def test_raw_yolo_outputs_equal_opencv(name, size, tmp_path, image, random_weights, small_cfg, write_darknet_weights):
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

def opencv_detections(cfg, weights, rgb, score_thresh=0.3, iou_thresh=0.45):
    """Detections the usual OpenCV way (blobFromImage, the yolo layers' rows, NMSBoxes per class) on a
    square RGB image the network's size: list of (class, score, box x1y1x2y2 pixels)."""
    size = rgb.shape[0]
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.setInput(cv2.dnn.blobFromImage(rgb, 1 / 255.0, (size, size), swapRB=False, crop=False))
    rows = np.concatenate(net.forward(net.getUnconnectedOutLayersNames()))
    out = []
    for c in range(rows.shape[1] - 5):
        scores = rows[:, 5 + c]
        keep = np.flatnonzero(scores > score_thresh)
        boxes = [[(rows[i, 0] - rows[i, 2] / 2) * size, (rows[i, 1] - rows[i, 3] / 2) * size,
                  rows[i, 2] * size, rows[i, 3] * size] for i in keep]
        for j in np.asarray(cv2.dnn.NMSBoxes(boxes, scores[keep].tolist(), score_thresh, iou_thresh)).ravel():
            x, y, bw, bh = boxes[j]
            out.append((c, float(scores[keep[j]]), np.array([x, y, x + bw, y + bh])))
    return out


def test_export_darknet_round_trip_through_opencv(tmp_path, demo_sets, invoke, trained_demo):
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


# -------------------------------------------------------------- Darknet's release: real weights, real photos

# Objects Darknet's yolov3-tiny finds in its sample photos (at 0.3 it also finds a cow in horses.jpg, a sheep in
# person.jpg, a car in dog.jpg: those are checked against OpenCV's reader, not named here)
RELEASE_PHOTOS = {"dog": {"dog", "bicycle", "truck"}, "horses": {"horse"}, "person": {"person", "dog", "horse"}}


def release_files(root):
    return root / "yolov3-tiny.cfg", root / "yolov3-tiny.weights", read_names(root / "coco.names")


def assert_same_detections(ours, theirs, names, box_px, score_tol):
    """A Predictor's detections `ours` are OpenCV's `theirs` ([(class, score, box)], boxes in the same pixels):
    one to one, each with the same class name (`names[class]` for OpenCV's), box corners within `box_px`,
    score within `score_tol`."""
    left = list(theirs)
    for name, score, box in sorted(zip(ours["names"], ours["scores"], ours["boxes"]), key=lambda d: -d[1]):
        same = [t for t in left if names[t[0]] == name]
        assert same, f"{name} {score:.3f} {np.round(box, 1)}: not among OpenCV's remaining {left}"
        best = min(same, key=lambda t: np.abs(t[2] - box).max())
        assert np.abs(best[2] - box).max() < box_px, (name, box, best[2])
        assert abs(best[1] - score) < score_tol, (name, score, best[1])
        left = [t for t in left if t is not best]
    assert not left, f"OpenCV's detections that ours lack: {left}"


@pytest.mark.parametrize("photo", sorted(RELEASE_PHOTOS))
def test_release_tiny_raw_outputs_equal_opencv_on_darknet_photos(photo, darknet_release):
    cfg, weights, _ = release_files(darknet_release)
    image = cv2.imread(str(darknet_release / "samples" / f"{photo}.jpg"))       # BGR, as OpenCV reads it
    # A few objects per photo: 7 to 9 class scores above 0.2 at stride 32, 3 at stride 16.
    # Tolerance: the random-weight test's 1e-4 elementwise holds (largest difference 7e-6 of the largest output).
    # It cannot see BatchNorm's epsilon here: the release's running variances are >= 0.013 (median 2.8), so
    # MXNet's usual 1e-5 instead of Darknet's 1e-6 moves the raw outputs by only 3e-5 to 1.1e-4 of their
    # largest. It moves them all though: their mean absolute difference, 1.2e-6 to 1.7e-6 of the mean magnitude
    # (float32 rounding, on all seven sample photos), becomes 1.4e-5 to 2.4e-5. 5e-6 sits between, 3x from each.
    compare_with_opencv(cfg, weights, image, 416, min_scores=3, mean_rtol=5e-6)


@pytest.mark.parametrize("photo", sorted(RELEASE_PHOTOS))
def test_release_tiny_detections_equal_opencv_on_darknet_photos(photo, darknet_release):
    cfg, weights, names = release_files(darknet_release)
    partial, net, _ = load_darknet(cfg, weights)       # the cfg's own class list: 80 COCO names, in coco.names' order
    recipe = merge(copy.deepcopy(DEFAULTS), partial)
    predictor = api.Predictor(recipe, net=net, classes=partial["data"]["classes"], score_thresh=0.3)
    # letterboxed to 416 as Darknet feeds it; the square then goes unchanged through our letterbox and OpenCV's blob
    square, _ = resize_with_geometry(predictor.resize, api.read_image(darknet_release / "samples" / f"{photo}.jpg"))
    assert square.shape == (416, 416, 3)
    ours = predictor.predict_one(square)
    # OpenCV's boxes may cross the image's edge; ours end at it (feed.to_original), as Darknet's drawing clips them
    theirs = [(c, sc, np.clip(b, 0, 416)) for c, sc, b in opencv_detections(cfg, weights, square, score_thresh=0.3)]
    # measured: boxes within 0.001 px, scores within 4e-6
    assert_same_detections(ours, theirs, names, box_px=0.5, score_tol=1e-4)
    assert RELEASE_PHOTOS[photo] <= set(ours["names"]), ours["names"]


def test_zoo_tiny_coco_finds_on_dog_what_darknet_reports(repo, darknet_release):
    """zoo/yolov3_tiny_coco (float16 storage) through the public API: on dog.jpg, at the recipe's score threshold
    0.3, the detections of OpenCV's reader with the release's own files, in the photo's pixels."""
    cfg, weights, names = release_files(darknet_release)
    zoo = repo / "zoo" / "yolov3_tiny_coco"
    recipe = api.load(zoo / "recipe.yaml")
    # the network the release's cfg describes: input size, anchors, BatchNorm epsilon 1e-6, RGB / 255 (a wrong
    # epsilon moves these scores by 1e-5, under float16's rounding: the raw-output test above measures that)
    from_cfg = merge(copy.deepcopy(DEFAULTS), recipe_from_cfg(parse_cfg(cfg)))["model"]
    assert {k: recipe["model"][k] for k in from_cfg if k != "nms"} == {k: v for k, v in from_cfg.items() if k != "nms"}
    assert recipe["model"]["norm"]["eps"] == 1e-6
    assert (recipe["data"]["mean"], recipe["data"]["std"]) == ([0.0] * 3, [1.0] * 3)
    assert {v.dtype for v in mx.nd.load(str(zoo / "model.params")).values()} == {np.float16}
    predictor = api.Predictor(recipe, zoo)
    assert predictor.score_thresh == 0.3 and predictor.classes == names
    rgb = api.read_image(darknet_release / "samples" / "dog.jpg")
    ours = predictor.predict_one(rgb)
    square, geometry = resize_with_geometry(predictor.resize, rgb)      # 768 x 576 -> 416 x 312, padded to 416
    theirs = [(c, s, to_original(b[None], geometry)[0])
              for c, s, b in opencv_detections(cfg, weights, square, score_thresh=0.3)]
    # float16 weights: measured, scores within 2e-3 of OpenCV's, boxes within 0.1 photo pixels (an input pixel
    # is 1.85 of them)
    assert_same_detections(ours, theirs, names, box_px=1.0, score_tol=5e-3)
    # Darknet's published yolov3-tiny output on dog.jpg: dog, bicycle, car/truck; at 0.3 OpenCV's reader labels
    # each of its two boxes on the truck both car and truck (class-aware NMS keeps both labels)
    assert set(ours["names"]) == {"dog", "bicycle", "truck", "car"}, ours["names"]
