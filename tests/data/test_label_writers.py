"""Detections written as a VOC folder or a YOLO txt dataset read back by the package's own readers (through
`data.root`, as `data check` and `train` read them) with the same boxes."""
import cv2
import numpy as np
import pytest

from gluon_yolo3.data.label_writers import label_writer
from gluon_yolo3.files import WriteError
from gluon_yolo3.registry import DATASETS

CLASSES = ["cat", "dog", "person"]


@pytest.fixture
def detections(tmp_path):
    """[(name, image, boxes, ids, source file or None)]: a PNG and a JPEG file, a video frame without a file, an
    image without detections."""
    rng = np.random.default_rng(0)
    png, jpeg = tmp_path / "in" / "photo.png", tmp_path / "in" / "shot.JPEG"
    png.parent.mkdir()
    items = []
    for name, path, (h, w) in (("photo", png, (60, 80)), ("shot", jpeg, (50, 70)), ("clip_000012", None, (48, 64)),
                               ("empty", None, (30, 30))):
        image = cv2.resize(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8), (w, h))    # smooth, as photos are
        if path is not None:
            assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        items.append([name, image, None, None, None if path is None else str(path)])
    items[0][2:4] = np.array([[3.4, 5.6, 40.2, 33.5], [0.0, 0.0, 80.0, 60.0]]), np.array([1, 2])
    items[1][2:4] = np.array([[10.0, 12.0, 11.2, 30.0], [20.5, 1.49, 69.9, 49.5]]), np.array([0, 0])   # 1st: 1 px wide
    items[2][2:4] = np.array([[5.0, 6.0, 20.0, 30.0]]), np.array([2])
    items[3][2:4] = np.zeros((0, 4)), np.zeros(0, np.int64)
    return [tuple(i) for i in items]


def read_back(root):
    """{image id: label (N, 6)} of both splits of the folder `root` (a seeded 80/20 split without split files)."""
    labels = {}
    for split in ("train", "val"):
        dataset = DATASETS.build({"type": "folder", "root": str(root), "split": split, "classes": CLASSES,
                                  "cache": False})
        assert dataset.problems == []
        for i in range(len(dataset)):
            image, label = dataset[i]
            labels[dataset.image_id(i)] = (image, label)
    return labels


def write_all(fmt, root, detections):
    """Every detection written with a `fmt` writer into `root`; -> the sorted file names of its image folder."""
    writer = label_writer(fmt, root, CLASSES)
    for name, image, boxes, ids, source in detections:
        writer.add(name, image, boxes, ids, source_file=source)
    writer.close()
    return sorted(p.name for p in (root / writer.image_folder).iterdir())


def test_voc_folder_reads_back_with_whole_pixel_boxes(tmp_path, detections):
    assert write_all("voc", tmp_path / "voc", detections) == ["clip_000012.jpg", "empty.jpg", "photo.jpg", "shot.jpg"]
    assert (tmp_path / "voc/JPEGImages/shot.jpg").read_bytes() == (tmp_path / "in/shot.JPEG").read_bytes()
    xml = (tmp_path / "voc/Annotations/photo.xml").read_text()
    assert "<width>80</width>" in xml and "<height>60</height>" in xml and "<depth>3</depth>" in xml
    assert "<xmin>4</xmin>" in xml and "<ymin>7</ymin>" in xml and "<xmax>40</xmax>" in xml   # 1-based, inclusive
    back = read_back(tmp_path / "voc")
    # pixel edges rounded to whole pixels; the 1-pixel-wide box left out (VOC readers take it as empty)
    want = {"photo": [[3, 6, 40, 34, 1], [0, 0, 80, 60, 2]], "shot": [[20, 1, 70, 50, 0]],
            "clip_000012": [[5, 6, 20, 30, 2]], "empty": np.zeros((0, 5))}
    assert sorted(back) == sorted(want)
    for name, image, _, _, source in detections:
        got_image, label = back[name]
        np.testing.assert_array_equal(label[:, :5], np.asarray(want[name], np.float32).reshape(-1, 5))
        assert got_image.shape == image.shape
        if source is None or source.endswith("JPEG"):      # frames: JPEG quality 95; copies: the same pixels
            assert np.abs(got_image.astype(int) - image).mean() < (8 if source is None else 1e-9)


def test_yolo_dataset_reads_back_with_the_same_boxes(tmp_path, detections):
    assert write_all("yolo", tmp_path / "yolo", detections) == ["clip_000012.jpg", "empty.jpg", "photo.png",
                                                                "shot.JPEG"]
    assert (tmp_path / "yolo/images/photo.png").read_bytes() == (tmp_path / "in/photo.png").read_bytes()
    assert (tmp_path / "yolo/labels/photo.txt").read_text().splitlines()[0] == "1 0.272500 0.325833 0.460000 0.465000"
    assert (tmp_path / "yolo/labels/empty.txt").read_text() == ""
    assert (tmp_path / "yolo/classes.txt").read_text() == "cat\ndog\nperson\n"
    back = read_back(tmp_path / "yolo")
    assert sorted(back) == sorted(d[0] for d in detections)
    for name, image, boxes, ids, _ in detections:
        got_image, label = back[name]
        np.testing.assert_allclose(label[:, :4], boxes, atol=1e-3 * max(image.shape))
        np.testing.assert_array_equal(label[:, 4], ids)
        assert got_image.shape == image.shape


@pytest.mark.parametrize("fmt, annotation", [("voc", "Annotations/a.xml"), ("yolo", "labels/a.txt")])
def test_a_folder_that_holds_annotations_is_refused(tmp_path, fmt, annotation):
    path = tmp_path / "labels" / annotation
    path.parent.mkdir(parents=True)
    path.write_text("corrected by hand")
    with pytest.raises(WriteError, match="already holds annotations"):
        label_writer(fmt, tmp_path / "labels", CLASSES)
    assert path.read_text() == "corrected by hand"
    with pytest.raises(ValueError, match="unknown label format 'coco'"):
        label_writer("coco", tmp_path / "other", CLASSES)
