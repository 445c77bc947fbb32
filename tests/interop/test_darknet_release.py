"""Darknet's released COCO yolov3-tiny and yolov4-tiny (`dataset`: ../shared/weights/darknet beside the checkout)
against OpenCV's Darknet reader on Darknet's sample photos: raw outputs, yolo layers and detections; the export
round trip to the same weights file; and the zoo models packed from them."""
import copy
from pathlib import Path

import cv2
import mxnet as mx
import numpy as np
import pytest

from gluon_yolo3 import api
from gluon_yolo3.data.feed import resize_with_geometry, to_original
from gluon_yolo3.interop.darknet.cfg import parse_cfg, recipe_from_cfg
from gluon_yolo3.interop.darknet.jobs import export_darknet, import_darknet, load_darknet, read_names
from gluon_yolo3.interop.darknet.layout import check_layout, darknet_layout
from gluon_yolo3.interop.darknet.weights_file import read_weights
from gluon_yolo3.recipe import DEFAULTS, merge

RELEASES = ("yolov3-tiny", "yolov4-tiny")


# Objects both releases find in Darknet's sample photos (at 0.3 yolov3-tiny also finds a cow in horses.jpg, a sheep
# in person.jpg, a car in dog.jpg, yolov4-tiny a cow and a sheep in horses.jpg and a car in dog.jpg: those are
# checked against OpenCV's reader, not named here)
RELEASE_PHOTOS = {"dog": {"dog", "bicycle", "truck"}, "horses": {"horse"}, "person": {"person", "dog", "horse"}}


def release_files(root, name="yolov3-tiny"):
    return root / f"{name}.cfg", root / f"{name}.weights", read_names(root / "coco.names")


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


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("photo", sorted(RELEASE_PHOTOS))
def test_release_tiny_raw_outputs_equal_opencv_on_darknet_photos(release, photo, darknet_release,
                                                                 compare_with_opencv):
    cfg, weights, _ = release_files(darknet_release, release)
    image = cv2.imread(str(darknet_release / "samples" / f"{photo}.jpg"))       # BGR, as OpenCV reads it
    # A few objects per photo: yolov3-tiny has 7 to 9 class scores above 0.2 at stride 32 and 3 at stride 16,
    # yolov4-tiny 2 to 9.
    # Tolerance: the random-weight test's 1e-4 elementwise holds (largest difference 7e-6 of the largest output).
    # It cannot see BatchNorm's epsilon here: the release's running variances are >= 0.013 (median 2.8), so
    # MXNet's usual 1e-5 instead of Darknet's 1e-6 moves the raw outputs by only 3e-5 to 1.1e-4 of their
    # largest. It moves them all though: their mean absolute difference, 1.2e-6 to 1.7e-6 of the mean magnitude
    # (float32 rounding, on all seven sample photos), becomes 1.4e-5 to 2.4e-5. 5e-6 sits between, 3x from each.
    compare_with_opencv(cfg, weights, image, 416, min_scores=2, mean_rtol=5e-6)


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("photo", sorted(RELEASE_PHOTOS))
def test_release_tiny_detections_equal_opencv_on_darknet_photos(release, photo, darknet_release, opencv_detections):
    cfg, weights, names = release_files(darknet_release, release)
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


@pytest.mark.parametrize("release", RELEASES)
def test_zoo_tiny_coco_finds_on_dog_what_darknet_reports(release, repo, darknet_release, opencv_detections):
    """zoo/yolov3_tiny_coco and zoo/yolov4_tiny_coco (float16 storage) through the public API: on dog.jpg, at the
    recipe's score threshold 0.3, the detections of OpenCV's reader with the release's own files, in the photo's
    pixels."""
    cfg, weights, names = release_files(darknet_release, release)
    zoo = repo / "zoo" / f"{release.replace('-', '_')}_coco"
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
    # the truck both car and truck (class-aware NMS keeps both labels), with either release
    assert set(ours["names"]) == {"dog", "bicycle", "truck", "car"}, ours["names"]


def test_yolov4_tiny_export_gives_back_the_release(darknet_release, tmp_path):
    """import-darknet then export-darknet: the release's weights float for float (header aside), and a cfg that
    computes what the release's does, layer by layer (its anchors written per mask, anchor 0 left out)."""
    cfg, weights, _ = release_files(darknet_release, "yolov4-tiny")
    imported = import_darknet(cfg, weights, tmp_path / "imported")
    recipe = api.load(imported["recipe"])
    out = export_darknet(recipe, tmp_path / "imported", tmp_path / "out")
    _, floats = read_weights(weights)
    _, again = read_weights(out["weights"])
    assert again.dtype == floats.dtype and again.size == floats.size == 6_062_814
    np.testing.assert_array_equal(again, floats)
    assert Path(out["weights"]).stat().st_size == Path(weights).stat().st_size
    _, net, _ = load_darknet(out["cfg"], out["weights"])
    check_layout(parse_cfg(cfg), darknet_layout(net), cfg)        # the release's cfg, against the exported network
    assert "scale_x_y=1.05" in Path(out["cfg"]).read_text()
