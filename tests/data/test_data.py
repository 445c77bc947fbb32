"""Data layer: sanitize_boxes, synthetic shapes, the VOC reader and the transforms (checked on pixels)."""
import shutil
import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest

from gluon_yolo3.data import transforms as T
from gluon_yolo3.data.base import DatasetError, sanitize_boxes
from gluon_yolo3.data.synthetic import SyntheticShapes
from gluon_yolo3.data.voc import VOCDetection
from gluon_yolo3.registry import DATASETS, TRANSFORMS, RegistryError

# ----------------------------------------------------------------------------------------- helpers

COLOURS = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)], np.uint8)
RECTS = np.array([(5, 8, 40, 30), (60, 10, 110, 50), (20, 55, 70, 85), (100, 60, 118, 88),
                  (45, 35, 55, 45)], np.float32)


def rect_sample():
    """A 90x120 black image with solid rectangles of unique colours; label class k = colour k."""
    image = np.zeros((90, 120, 3), np.uint8)
    label = np.zeros((len(RECTS), 6), np.float32)
    for k, (x1, y1, x2, y2) in enumerate(RECTS.astype(int)):
        image[y1:y2, x1:x2] = COLOURS[k]
        label[k] = (x1, y1, x2, y2, k, k % 2)
    return image, label


def pixel_box(image, colour):
    """Pixel-edge bounding box of the pixels of exactly `colour`, or None."""
    mask = (image == colour).all(axis=2)
    if not mask.any():
        return None
    ys, xs = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return np.array([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], np.float32)


def assert_boxes_match_pixels(image, label, tol=1.0, all_kept=True):
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert label.dtype == np.float32 and label.shape[1] == 6
    for row in label:
        k = int(row[4])
        assert row[5] == k % 2, "difficult column changed"
        box = pixel_box(image, COLOURS[k])
        assert box is not None, f"object {k} is labelled but not visible"
        np.testing.assert_allclose(row[:4], box, atol=tol, err_msg=f"object {k}")
    if all_kept:
        visible = {k for k in range(len(COLOURS)) if pixel_box(image, COLOURS[k]) is not None}
        assert visible == set(label[:, 4].astype(int).tolist())


# ----------------------------------------------------------------------------------- sanitize_boxes

def test_sanitize_boxes_reports_each_case_with_file_name():
    boxes = np.array([[10, 10, 20, 20, 0, 0],      # fine
                      [0, 0, 100, 80, 1, 1],       # touches every edge: fine
                      [5, 5, 5, 9, 0, 0],          # zero width
                      [5, 7, 9, 7, 0, 0],          # zero height
                      [30, 10, 20, 20, 1, 0],      # inverted
                      [200, 10, 220, 20, 0, 0],    # outside right
                      [-30, 10, 0, 20, 0, 0],      # outside left (touching the edge)
                      [-5, 10, 15, 20, 2, 1],      # partly outside left
                      [90, 70, 130, 110, 1, 0]],   # partly outside right and bottom
                     np.float32)
    kept, problems = sanitize_boxes(boxes, 100, 80, "img_7.xml")
    np.testing.assert_array_equal(kept, [[10, 10, 20, 20, 0, 0], [0, 0, 100, 80, 1, 1],
                                         [0, 10, 15, 20, 2, 1], [90, 70, 100, 80, 1, 0]])
    assert kept.dtype == np.float32
    assert len(problems) == 7
    assert all(p.startswith("img_7.xml: ") for p in problems)
    expected = [("zero-area", "[5, 5, 5, 9]"), ("zero-area", "[5, 7, 9, 7]"),
                ("inverted", "[30, 10, 20, 20]"), ("outside", "[200, 10, 220, 20]"),
                ("outside", "[-30, 10, 0, 20]"), ("clipped", "[-5, 10, 15, 20]"),
                ("clipped", "[90, 70, 130, 110]")]
    for problem, (word, box) in zip(problems, expected):
        assert word in problem and box in problem, problem
    assert "partly" in problems[-1] and "[90, 70, 100, 80]" in problems[-1]


def test_sanitize_boxes_empty_and_clean():
    kept, problems = sanitize_boxes(np.zeros((0, 6)), 10, 10, "a.xml")
    assert kept.shape == (0, 6) and problems == []
    kept, problems = sanitize_boxes([[1, 2, 3, 4]], 10, 10, "a.xml")
    assert kept.tolist() == [[1, 2, 3, 4]] and problems == []
    kept, problems = sanitize_boxes([[np.nan, 2, 3, 4]], 10, 10, "a.xml")
    assert len(kept) == 0 and "non-finite" in problems[0]


# ------------------------------------------------------------------------------------- synthetic

def test_synthetic_deterministic_and_registered():
    ds = SyntheticShapes(num_images=10, seed=3)
    a, b = ds[4], SyntheticShapes(num_images=10, seed=3)[4]
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], ds[-6][0])
    assert not np.array_equal(a[0], SyntheticShapes(num_images=10, seed=4)[4][0])
    built = DATASETS.build({"type": "synthetic", "num_images": 10, "seed": 3})
    np.testing.assert_array_equal(built[4][0], a[0])
    assert len(ds) == 10 and ds.image_id(4) == "train_000004"
    with pytest.raises(IndexError):
        ds[10]
    assert len(list(ds)) == 10


def test_synthetic_splits_disjoint():
    train, val, test = (SyntheticShapes(num_images=20, split=s) for s in ("train", "val", "test"))
    for i in range(20):
        assert not np.array_equal(train[i][0], val[i][0])
        assert not np.array_equal(train[i][0], test[i][0])
        assert not np.array_equal(val[i][0], test[i][0])
    train_images = {train[i][0].tobytes() for i in range(20)}
    assert not train_images & {val[i][0].tobytes() for i in range(20)}
    with pytest.raises(ValueError):
        SyntheticShapes(split="holdout")


@pytest.mark.parametrize("size", [128, [96, 160]])
def test_synthetic_boxes_are_tight_boxes_of_masks(size):
    ds = SyntheticShapes(num_images=40, image_size=size, min_size=0.1, max_size=0.7, max_objects=5)
    h, w = (size, size) if np.isscalar(size) else size
    side = min(h, w)
    counts = []
    for i in range(len(ds)):
        image, label, masks = ds.sample_with_masks(i)
        assert image.shape == (h, w, 3) and image.dtype == np.uint8
        assert label.dtype == np.float32 and label.shape == (len(masks), 6)
        assert masks.shape == (len(label), h, w) and masks.dtype == bool
        np.testing.assert_array_equal(ds[i][1], label)
        assert 1 <= len(label) <= 5
        counts.append(len(label))
        for row, mask in zip(label, masks):
            assert mask.any()
            ys, xs = np.nonzero(mask)
            np.testing.assert_array_equal(row[:4], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            bw, bh = row[2] - row[0], row[3] - row[1]
            # size: max_size * side, stretched by at most sqrt(1.6) by the aspect ratio
            assert max(bw, bh) <= 0.7 * side * np.sqrt(1.6) + 1
            # visible area: >= 60% of a triangle (half its box) of the smallest size
            assert mask.sum() >= 0.6 * 0.5 * (0.1 * side) ** 2 * 0.9
        assert set(label[:, 4].astype(int)) <= {0, 1, 2}
        assert (label[:, 5] == 0).all()
        assert (masks.sum(axis=0) <= 1).all(), "visible masks must not overlap"
    assert len(set(counts)) >= 3, "object count should vary"


def test_synthetic_classes_differ_by_shape():
    """The last drawn object is never occluded: its fill ratio (mask area / box area) tells its shape."""
    ds = SyntheticShapes(num_images=60, classes=("triangle", "square", "circle"), seed=1)
    expected = {"square": (0.97, 1.0), "circle": (0.70, 0.82), "triangle": (0.45, 0.6)}
    seen = set()
    for i in range(len(ds)):
        _, label, masks = ds.sample_with_masks(i)
        row, mask = label[-1], masks[-1]
        name = ds.classes[int(row[4])]
        fill = mask.sum() / ((row[2] - row[0]) * (row[3] - row[1]))
        lo, hi = expected[name]
        assert lo <= fill <= hi, (i, name, fill)
        seen.add(name)
    assert seen == set(expected)


def test_synthetic_colour_is_not_the_class():
    ds = SyntheticShapes(num_images=40, clutter=False)
    colours = {0: [], 1: [], 2: []}
    for i in range(len(ds)):
        image, label, masks = ds.sample_with_masks(i)
        for row, mask in zip(label, masks):
            colours[int(row[4])].append(image[mask].mean(axis=0))
    spreads = [np.std(np.array(c), axis=0).mean() for c in colours.values()]
    assert min(spreads) > 40  # each class takes widely varying colours


# ------------------------------------------------------------------------- geometric transforms

def run(transform, seed):
    image, label = rect_sample()
    return transform(image, label, np.random.default_rng(seed))


@pytest.mark.parametrize("size", [64, [120, 200], [45, 60], [180, 100]])
def test_resize_matches_pixels(size):
    image, label = run(T.Resize(size, interp="nearest"), 0)
    h, w = (size, size) if np.isscalar(size) else size
    assert image.shape == (h, w, 3)
    assert_boxes_match_pixels(image, label)


@pytest.mark.parametrize("size", [128, [64, 160], [100, 80]])
def test_letterbox_matches_pixels_and_pads_centred(size):
    image, label = run(T.Letterbox(size, fill=114, interp="nearest"), 0)
    h, w = (size, size) if np.isscalar(size) else size
    assert image.shape == (h, w, 3)
    assert_boxes_match_pixels(image, label)
    content = ~(image == 114).all(axis=2)  # the source image is black + colours, never grey
    ys, xs = np.flatnonzero(content.any(axis=1)), np.flatnonzero(content.any(axis=0))
    top, bottom, left, right = ys[0], h - 1 - ys[-1], xs[0], w - 1 - xs[-1]
    assert abs(top - bottom) <= 1 and abs(left - right) <= 1
    assert min(top, left) == 0, "one side fills the target"
    nh, nw = ys[-1] - ys[0] + 1, xs[-1] - xs[0] + 1
    assert abs(nw / nh - 120 / 90) < 0.05, "aspect ratio kept"


def test_letterbox_params_invert():
    sx, sy, px, py, nw, nh = T.letterbox_params((90, 120), (128, 128))
    assert (nw, nh, px, py) == (128, 96, 0, 16)
    _, label = run(T.Letterbox(128), 0)
    back = (label[:, [0, 2]] - px) / sx
    np.testing.assert_allclose(back, RECTS[:, [0, 2]], atol=1e-4)


def test_flip_matches_pixels():
    image, label = run(T.RandomFlip(p=1.0), 0)
    assert_boxes_match_pixels(image, label, tol=0)
    np.testing.assert_array_equal(label[:, 0], 120 - RECTS[:, 2])
    same_image, same_label = run(T.RandomFlip(p=0.0), 0)
    np.testing.assert_array_equal(same_image, rect_sample()[0])
    np.testing.assert_array_equal(same_label, rect_sample()[1])


def test_crop_matches_pixels():
    cropped = 0
    for seed in range(12):
        image, label = run(T.RandomCrop(p=1.0), seed)
        assert_boxes_match_pixels(image, label, tol=0, all_kept=False)
        if image.shape != (90, 120, 3):
            cropped += 1
            assert len(label) >= 1, "an accepted crop keeps at least one box"
            assert image.shape[0] >= 0.3 * 90 - 1 and image.shape[1] >= 0.3 * 120 - 1
    assert cropped >= 6  # some constraints (IoU 0.9) rarely admit a window


def test_crop_drops_boxes_whose_centre_leaves_the_window():
    crop = T.RandomCrop(p=1.0)
    crop.window = lambda rng, h, w, boxes: np.array([30, 0, 120, 90])
    image, label = run(crop, 0)
    # rect 0 (5..40, centre 22.5) leaves; rect 2 (20..70, centre 45) is clipped to 0..40
    assert sorted(label[:, 4].astype(int).tolist()) == [1, 2, 3, 4]
    np.testing.assert_array_equal(label[label[:, 4] == 2][0, :4], [0, 55, 40, 85])
    assert image.shape == (90, 90, 3)


def test_expand_matches_pixels():
    for seed in range(6):
        image, label = run(T.RandomExpand(p=1.0, max_ratio=3.0), seed)
        assert image.shape[0] >= 90 and image.shape[1] >= 120
        assert_boxes_match_pixels(image, label, tol=0)
        assert (image[0, 0] == (124, 116, 104)).all() or image.shape == (90, 120, 3)


def test_composed_geometry_matches_pixels():
    pipeline = T.Compose([{"type": "random_expand", "p": 0.8}, {"type": "random_crop", "p": 0.8},
                          "random_flip", {"type": "letterbox", "size": 96, "interp": "nearest"}])
    for seed in range(10):
        image, label = run(pipeline, seed)
        assert image.shape == (96, 96, 3)
        assert_boxes_match_pixels(image, label, tol=1, all_kept=False)


@pytest.mark.parametrize("mode", ["letterbox", "resize"])
def test_network_boxes_map_back_to_the_image_clipped_to_its_edges(mode):
    """A 200 x 100 image fed at 64 px: a box inside maps back exactly (hand-computed), a box the network draws
    past the image (into the letterbox padding, or past the input) ends at the image's edge."""
    from gluon_yolo3.data.feed import build_resize, resize_with_geometry, to_original
    _, geometry = resize_with_geometry(build_resize(mode, 64), np.zeros((100, 200, 3), np.uint8))
    sx, sy, ox, oy, w, h = geometry
    assert (w, h) == (200, 100)
    if mode == "letterbox":       # 200 x 100 -> 64 x 32, centred: 16 rows of padding above
        np.testing.assert_allclose([sx, sy, ox, oy], [0.32, 0.32, 0, 16])
    else:
        np.testing.assert_allclose([sx, sy, ox, oy], [0.32, 0.64, 0, 0])
    inside = np.array([[ox + 32 * sx, oy + 10 * sy, ox + 96 * sx, oy + 60 * sy]], np.float32)
    np.testing.assert_allclose(to_original(inside, geometry), [[32, 10, 96, 60]], atol=1e-3)
    past = np.array([[-5, -5, 70, 70]], np.float32)
    np.testing.assert_allclose(to_original(past, geometry), [[0, 0, 200, 100]])


def test_boxes_below_one_pixel_are_dropped():
    image = np.zeros((40, 40, 3), np.uint8)
    label = np.array([[0, 0, 2, 20, 0, 0], [10, 10, 30, 30, 1, 1]], np.float32)
    _, out = T.Resize(10)(image, label, np.random.default_rng(0))
    np.testing.assert_array_equal(out, [[2.5, 2.5, 7.5, 7.5, 1, 1]])
    _, out = T.Resize(10)(image, np.zeros((0, 6), np.float32), np.random.default_rng(0))
    assert out.shape == (0, 6)


def test_color_jitter():
    image = SyntheticShapes(num_images=1)[0][0]
    label = np.array([[1, 2, 30, 40, 2, 1]], np.float32)
    jitter = TRANSFORMS.build({"type": "color_jitter", "hue": 0.1, "saturation": 0.7, "value": 0.4})
    a, la = jitter(image, label, np.random.default_rng(5))
    b, _ = jitter(image, label, np.random.default_rng(5))
    c, _ = jitter(image, label, np.random.default_rng(6))
    assert a.shape == image.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, image)
    np.testing.assert_array_equal(la, label)
    same, _ = T.ColorJitter(hue=0, saturation=0, value=0)(image, label, np.random.default_rng(0))
    assert np.abs(same.astype(int) - image).mean() < 2  # only HSV round-off


def test_compose_builds_from_registry():
    pipeline = T.Compose([{"type": "resize", "size": [32, 48]}, "random_flip"])
    assert [type(t) for t in pipeline.transforms] == [T.Resize, T.RandomFlip]
    image, label = pipeline(*rect_sample(), rng=np.random.default_rng(0))
    assert image.shape == (32, 48, 3) and label.shape[1] == 6
    with pytest.raises(RegistryError, match="random_flip"):
        T.Compose([{"type": "random_flp"}])
    with pytest.raises(RegistryError, match="size"):
        T.Compose([{"type": "letterbox", "sise": 32}])
    for name in ("resize", "letterbox", "random_flip", "random_crop", "random_expand", "color_jitter"):
        assert name in TRANSFORMS


# --------------------------------------------------------------------------------------------- VOC

def test_voc_small_tree(tmp_path, write_voc):
    root = write_voc(tmp_path / "voc", {
        "a": [("cat", 1, 1, 10, 20, 0), ("dog", 5, 6, 64, 48, 1)],
        "b": [("cat", 3, 3, 3, 9, 0), ("bird", 2, 2, 8, 8, 0), ("dog", -4, 2, 10, 8, 0)]})
    ds = VOCDetection(root, splits="train", classes=("cat", "dog"))
    assert len(ds) == 2 and ds.classes == ("cat", "dog") and ds.image_id(1) == "b"
    image, label = ds[0]
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(label, [[0, 0, 10, 20, 0, 0], [4, 5, 64, 48, 1, 1]])
    np.testing.assert_array_equal(ds[1][1], [[0, 1, 10, 8, 1, 0]])
    assert any(p.startswith("b.xml: ") and "zero-area" in p for p in ds.problems)
    assert any(p.startswith("b.xml: ") and "'bird'" in p for p in ds.problems)
    assert any(p.startswith("b.xml: ") and "clipped" in p for p in ds.problems)
    assert len(ds.problems) == 3
    assert VOCDetection(root, "train").classes == ("bird", "cat", "dog")
    easy = VOCDetection(root, "train", classes=("cat", "dog"), keep_difficult=False)
    assert easy.label(0).tolist() == [[0, 0, 10, 20, 0, 0]]


def test_voc_fatal_errors_name_the_path(tmp_path, write_voc):
    with pytest.raises(DatasetError, match="nowhere"):
        VOCDetection(tmp_path / "nowhere")
    root = write_voc(tmp_path / "voc", {"a": [("cat", 1, 1, 10, 20, 0)]})
    with pytest.raises(DatasetError, match="val.txt"):
        VOCDetection(root, splits="val")
    (root / "ImageSets/Main/empty.txt").write_text("\n")
    with pytest.raises(DatasetError, match="empty.txt"):
        VOCDetection(root, splits="empty")
    (root / "JPEGImages/a.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match="a.jpg: unreadable image: not an image"):     # found when built
        VOCDetection(root, "train")
    ds = VOCDetection(root, "train", check_images=False)
    with pytest.raises(DatasetError, match="a.jpg"):
        ds[0]
    (root / "Annotations/a.xml").write_text("<annotation><size>")
    with pytest.raises(DatasetError, match="no usable images"):
        VOCDetection(root, "train")


def test_voc_bccd(bccd_root):
    ds = VOCDetection(bccd_root)
    assert ds.classes == ("Platelets", "RBC", "WBC")
    assert len(ds) == 292
    for name in ("BloodImage_00338", "BloodImage_00343"):
        hits = [p for p in ds.problems if p.startswith(f"{name}.xml: ") and "zero-area" in p]
        assert len(hits) == 1, ds.problems
    labels = [ds.label(i) for i in range(len(ds))]
    for lab in labels:
        assert lab.dtype == np.float32 and lab.shape[1] == 6
        wh = lab[:, 2:4] - lab[:, 0:2]
        assert (wh >= 1).all(), "no empty box survives"
        assert (lab[:, 0:2] >= 0).all() and (lab[:, 2] <= 640).all() and (lab[:, 3] <= 480).all()
        assert set(np.unique(lab[:, 4])) <= {0.0, 1.0, 2.0}
    i338 = [ds.image_id(i) for i in range(len(ds))].index("BloodImage_00338")
    assert len(labels[i338]) == 13  # 14 objects, the point annotation dropped
    # 1-based inclusive VOC -> pixel edges
    xml = ET.parse(bccd_root / "Annotations" / f"{ds.image_id(0)}.xml").getroot()
    first = xml.find("object/bndbox")
    raw = [float(first.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")]
    np.testing.assert_array_equal(labels[0][0, :4], [raw[0] - 1, raw[1] - 1, raw[2], raw[3]])
    image, label = ds[0]
    bgr = cv2.imread(str(bccd_root / "JPEGImages" / f"{ds.image_id(0)}.jpg"))
    np.testing.assert_array_equal(image, bgr[:, :, ::-1])
    np.testing.assert_array_equal(label, labels[0])


def test_voc_bccd_broken_xml_is_reported(bccd_root, tmp_path):
    ids = ["BloodImage_00000", "BloodImage_00001", "BloodImage_00002", "BloodImage_00003"]
    root = tmp_path / "bccd"
    (root / "ImageSets/Main").mkdir(parents=True)
    for sub, ext in (("Annotations", "xml"), ("JPEGImages", "jpg")):
        (root / sub).mkdir()
        for i in ids:
            shutil.copy(bccd_root / sub / f"{i}.{ext}", root / sub / f"{i}.{ext}")
    (root / "ImageSets/Main/train.txt").write_text("\n".join(ids) + "\n")
    xml = root / "Annotations" / f"{ids[1]}.xml"
    xml.write_text(xml.read_text()[:300])  # truncated mid-file
    ds = VOCDetection(root, splits=("train",))
    assert [ds.image_id(i) for i in range(len(ds))] == [ids[0], ids[2], ids[3]]
    assert len(ds.problems) == 1 and ds.problems[0].startswith(f"{ids[1]}.xml: ")
    for i in range(len(ds)):
        image, label = ds[i]
        assert image.shape == (480, 640, 3) and len(label) > 0
