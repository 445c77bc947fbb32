"""COCO JSON and YOLO txt readers (checked against pycocotools and the synthetic ground truth), the
annotation cache, and one epoch of training through the CLI on each format."""
import json
import os

import numpy as np
import pytest

from gluon_yolo3.data import cache as cache_mod
from gluon_yolo3.data import coco as coco_mod
from gluon_yolo3.data import yolo_txt as yolo_mod
from gluon_yolo3.data.base import DatasetError
from gluon_yolo3.data.coco import COCODetection
from gluon_yolo3.data.voc import VOCDetection
from gluon_yolo3.data.yolo_txt import YOLOTxtDetection
from gluon_yolo3.registry import DATASETS


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets its own annotation cache folder."""
    monkeypatch.setenv(cache_mod.ENV_VAR, str(tmp_path / "cache"))


# ------------------------------------------------------------------------------------------- COCO

def test_coco_labels_equal_pycocotools_boxes_with_contiguous_labels(tmp_path, coco_cat_ids, write_coco):
    from pycocotools.coco import COCO
    path, ds = write_coco(tmp_path / "coco", extra_annotations=[
        {"image_id": 100, "category_id": 7, "bbox": [5, 5, 20, 10], "iscrowd": 1},     # crowd
        {"image_id": 101, "category_id": 3, "bbox": [10, 10, 0, 8]},                   # zero width
        {"image_id": 101, "category_id": 99, "bbox": [10, 10, 5, 8]},                  # unknown category
        {"image_id": 102, "category_id": 11, "bbox": [80, 80, 40, 40]},                # partly outside
    ])
    data = COCODetection(path)
    assert DATASETS.get("coco") is COCODetection
    # categories sorted by id give the labels; the names are the synthetic classes at those ids
    assert data.classes == ds.classes and data.label_to_cat_id == {0: 3, 1: 7, 2: 11}
    assert {v: k for k, v in data.label_to_cat_id.items()} == data.cat_id_to_label
    gt = COCO(str(path))
    assert len(data) == len(gt.getImgIds()) == 12
    for i in range(len(data)):
        img_id = data.coco_image_id(i)
        anns = gt.loadAnns(gt.getAnnIds(imgIds=[img_id], iscrowd=False))
        expected = []
        for a in anns:
            x, y, w, h = a["bbox"]
            if w <= 0 or h <= 0 or a["category_id"] not in coco_cat_ids:
                continue
            box = [max(x, 0), max(y, 0), min(x + w, 96), min(y + h, 96)]
            expected.append(box + [coco_cat_ids.index(a["category_id"]), 0])
        np.testing.assert_allclose(data.label(i), np.array(expected, np.float32).reshape(-1, 6), atol=1e-4)
        image, label = data[i]
        np.testing.assert_array_equal(image, ds[i][0])      # PNG: lossless, RGB order kept
        np.testing.assert_array_equal(label, data.label(i))
    problems = data.problems
    assert any("annotations.json (train_000001.png)" in p and "zero-area" in p for p in problems)
    assert any("train_000001.png" in p and "unknown category id 99" in p for p in problems)
    assert any("train_000002.png" in p and "clipped" in p for p in problems)
    assert len(problems) == 3
    crowd = COCODetection(path, use_crowd=True)
    rows = crowd.label(0)
    assert len(rows) == len(data.label(0)) + 1 and rows[-1].tolist() == [5, 5, 25, 15, 1, 1]


def test_coco_class_subset_and_errors_name_the_file(tmp_path, write_coco):
    path, ds = write_coco(tmp_path / "coco", num_images=6)
    sub = COCODetection(path, classes=["triangle", "circle"])
    assert sub.classes == ("triangle", "circle") and sub.label_to_cat_id == {0: 11, 1: 3}
    for i in range(len(sub)):
        full = ds[i][1]
        keep = np.isin(full[:, 4], [2, 0])
        np.testing.assert_array_equal(sub.label(i)[:, :4], full[keep, :4])
        np.testing.assert_array_equal(sub.label(i)[:, 4], np.where(full[keep, 4] == 2, 0, 1))
    assert any("class 'square' not in classes" in p for p in sub.problems)
    with pytest.raises(DatasetError, match="hexagon.*annotations.json|annotations.json.*hexagon"):
        COCODetection(path, classes=["hexagon"])
    with pytest.raises(DatasetError, match="nowhere.json"):
        COCODetection(tmp_path / "nowhere.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    with pytest.raises(DatasetError, match="broken.json"):
        COCODetection(broken)
    (tmp_path / "coco/images" / f"{ds.image_id(2)}.png").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=ds.image_id(2)):
        COCODetection(path, check_images=False)[2]
    skipped = COCODetection(path)
    assert ds.image_id(2) not in [skipped.image_id(i) for i in range(len(skipped))]
    assert sum(f"{ds.image_id(2)}.png: unreadable image: not an image" in p for p in skipped.problems) == 1


# ------------------------------------------------------------------------------------------- YOLO

@pytest.mark.parametrize("names_as_dict", [False, True])
def test_yolo_labels_equal_the_synthetic_boxes(tmp_path, names_as_dict, sets, write_yolo):
    folder, sets = write_yolo(tmp_path / "yolo", num_images=10, size=96, names_as_dict=names_as_dict)
    for split in ("train", "val"):
        data = YOLOTxtDetection(folder, split=split)
        ref = sets[split]
        assert data.classes == ref.classes and len(data) == len(ref) and data.problems == []
        for i in range(len(data)):
            assert data.image_id(i) == ref.image_id(i)
            image, label = data[i]
            np.testing.assert_array_equal(image, ref[i][0])
            np.testing.assert_allclose(label, ref[i][1], atol=1e-3)   # 6 decimals of normalised coordinates
    same = DATASETS.build({"type": "yolo", "root": str(folder / "data.yaml"), "split": "val"})
    assert len(same) == len(sets["val"])


def test_yolo_bad_lines_are_reported_with_file_and_line(tmp_path, sets, write_yolo):
    folder, sets = write_yolo(tmp_path / "yolo", num_images=6, size=100)
    labels = folder / "labels/train"
    ids = [sets["train"].image_id(i) for i in range(6)]
    (labels / f"{ids[0]}.txt").write_text(
        "0 0.5 0.5 0.2 0.2\n"            # fine: (40, 40, 60, 60)
        "1 0.5 0.5 0.0 0.3\n"            # zero width
        "7 0.5 0.5 0.1 0.1\n"            # class id out of range
        "2 0.5 oops 0.1 0.1\n"           # not numbers
        "2 0.5 0.5 0.1\n"                # four numbers
        "2 0.95 0.5 0.2 0.2\n"           # partly outside: clipped to x 85..100
        "1 0.1 0.1 0.3 0.1 0.3 0.4\n")   # polygon (triangle) -> box (10, 10, 30, 40)
    (labels / f"{ids[1]}.txt").unlink()                                   # no label file: no objects
    (folder / "images/train" / f"{ids[2]}.png").write_bytes(b"not an image")
    data = YOLOTxtDetection(folder)
    assert len(data) == 5 and ids[2] not in [data.image_id(i) for i in range(len(data))]
    np.testing.assert_allclose(data.label(0), [[40, 40, 60, 60, 0, 0], [85, 40, 100, 60, 2, 0],
                                               [10, 10, 30, 40, 1, 0]], atol=1e-4)
    assert data.label(1).shape == (0, 6)
    where = f"labels/train/{ids[0]}.txt"
    expected = [(f"{where}:4:", "not numbers"), (f"{where}:5:", "4 numbers"), (where, "zero-area"),
                (where, "unknown class id 7"), (where, "clipped"), (f"images/train/{ids[2]}.png", "unreadable")]
    for prefix, words in expected:
        assert any(p.startswith(prefix) and words in p for p in data.problems), (prefix, words, data.problems)
    assert len(data.problems) == len(expected)


def test_yolo_errors_name_the_file(tmp_path, write_yolo):
    with pytest.raises(DatasetError, match="no data.yaml"):
        YOLOTxtDetection(tmp_path)
    folder, _ = write_yolo(tmp_path / "yolo", num_images=3)
    with pytest.raises(DatasetError, match="data.yaml.*'test'"):
        YOLOTxtDetection(folder, split="test")
    (folder / "data.yaml").write_text("train: images/train\nnames: [a, b]\nnc: 3\n")
    with pytest.raises(DatasetError, match="nc is 3"):
        YOLOTxtDetection(folder)
    (folder / "data.yaml").write_text("train: images/nowhere\nnames: [a]\n")
    with pytest.raises(DatasetError, match="nowhere"):
        YOLOTxtDetection(folder)


def test_yolo_classes_by_name(tmp_path, sets, write_yolo):
    folder, sets = write_yolo(tmp_path / "yolo", num_images=6)
    data = YOLOTxtDetection(folder, classes=["square", "circle"])
    for i in range(len(data)):
        ref = sets["train"][i][1]
        keep = np.isin(ref[:, 4], [1, 0])
        np.testing.assert_allclose(data.label(i)[:, :4], ref[keep, :4], atol=1e-3)
        np.testing.assert_array_equal(data.label(i)[:, 4], np.where(ref[keep, 4] == 1, 0, 1))
    assert any("class 'triangle' not in classes" in p for p in data.problems)


# ------------------------------------------------------------------------------------------ cache

def test_cache_reuses_parsed_annotations_until_a_file_changes(tmp_path, monkeypatch, write_yolo):
    folder, _ = write_yolo(tmp_path / "yolo", num_images=5)
    first = YOLOTxtDetection(folder)
    assert not first.from_cache and list((tmp_path / "cache").glob("yolo-*.json"))

    def no_parse(*args, **kwargs):
        raise AssertionError("parsed although cached")

    monkeypatch.setattr(yolo_mod, "_parse", no_parse)
    second = YOLOTxtDetection(folder)
    assert second.from_cache and second.problems == first.problems
    for i in range(len(first)):
        np.testing.assert_array_equal(second.label(i), first.label(i))
    monkeypatch.undo()
    os.environ[cache_mod.ENV_VAR] = str(tmp_path / "cache")
    label = sorted((folder / "labels/train").glob("*.txt"))[0]
    label.write_text("0 0.5 0.5 0.25 0.25\n")                      # an edit: parsed again
    third = YOLOTxtDetection(folder)
    assert not third.from_cache and third.label(0).tolist() == [[36, 36, 60, 60, 0, 0]]
    assert YOLOTxtDetection(folder, cache=False).from_cache is False


def test_cache_for_coco_and_voc_and_an_unwritable_folder(tmp_path, monkeypatch, write_coco, write_voc):
    path, _ = write_coco(tmp_path / "coco", num_images=4)
    assert not COCODetection(path).from_cache
    monkeypatch.setattr(coco_mod, "_parse", lambda *_: (_ for _ in ()).throw(AssertionError("parsed")))
    assert COCODetection(path).from_cache
    monkeypatch.undo()
    os.environ[cache_mod.ENV_VAR] = str(tmp_path / "cache")
    root = write_voc(tmp_path / "voc", {"a": [("cat", 1, 1, 10, 20, 0)], "b": [("dog", 3, 3, 3, 9, 0)]})
    first = VOCDetection(root, "train")
    second = VOCDetection(root, "train")
    assert not first.from_cache and second.from_cache
    assert second.problems == first.problems and len(second.problems) == 1
    np.testing.assert_array_equal(second.label(0), first.label(0))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    data = VOCDetection(root, "train", cache=str(blocker / "sub"))     # cannot be created: still works
    assert len(data) == 2 and not data.from_cache


# ------------------------------------------------------------------------- training on each format

TINY = ["model.input_size=64", "train.batch_size=4", "train.epochs=1", "data.num_workers=0",
        "train.val_every=1"]


@pytest.fixture
def train_cli(repo, invoke, sets):
    """train_cli(tmp_path, overrides, recipe=...) -> (result, metrics lines) of one checked epoch through the CLI."""
    def train_cli(tmp_path, overrides, recipe="recipes/demo_tiny.yaml"):
        run_dir = tmp_path / "run"
        result = invoke("train", repo / recipe, "--workdir", run_dir, "--no-progress", *sets(TINY + overrides))
        assert result.exit_code == 0, result.output
        lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert any(x["kind"] == "train" and np.isfinite(x["loss"]) for x in lines)
        assert any(x["kind"] == "val" for x in lines)
        assert (run_dir / "checkpoints").is_dir()
        return result, lines
    return train_cli


def test_train_one_epoch_on_coco_through_the_cli(tmp_path, write_coco, train_cli):
    train_json, _ = write_coco(tmp_path / "train", num_images=8, size=64)
    val_json, _ = write_coco(tmp_path / "val", num_images=4, size=64, split="val")
    train_cli(tmp_path, [f"data.train={{type: coco, ann_file: {train_json}}}",
                         f"data.val={{type: coco, ann_file: {val_json}}}"])


def test_train_one_epoch_on_yolo_txt_through_the_cli(tmp_path, write_yolo, train_cli):
    folder, _ = write_yolo(tmp_path / "yolo", num_images=8, size=64)
    train_cli(tmp_path, [f"data.train={{type: yolo, root: {folder}, split: train}}",
                         f"data.val={{type: yolo, root: {folder}, split: val}}",
                         "data.transforms=[{type: mosaic}, {type: mixup, p: 0.5}, random_flip, color_jitter]"])


@pytest.mark.slow
def test_train_one_epoch_on_bccd_through_the_cli(bccd_root, tmp_path, train_cli):
    """A 12-image VOC subset of BCCD (linked) through the BCCD recipe, at 128 pixels."""
    root = tmp_path / "bccd"
    ids = [f"BloodImage_{i:05d}" for i in range(12)]
    (root / "ImageSets/Main").mkdir(parents=True)
    for sub, ext in (("Annotations", "xml"), ("JPEGImages", "jpg")):
        (root / sub).mkdir()
        for i in ids:
            if (bccd_root / sub / f"{i}.{ext}").exists():
                os.symlink(bccd_root / sub / f"{i}.{ext}", root / sub / f"{i}.{ext}")
    present = [i for i in ids if (root / "Annotations" / f"{i}.xml").exists()]
    (root / "ImageSets/Main/trainval.txt").write_text("\n".join(present[:8]) + "\n")
    (root / "ImageSets/Main/test.txt").write_text("\n".join(present[8:]) + "\n")
    _, lines = train_cli(tmp_path, [f"data.train.root={root}", f"data.val.root={root}",
                                    "model.input_size=128", "data.multi_scale.min_size=null",
                                    "data.multi_scale.max_size=null"], recipe="recipes/bccd_tiny.yaml")
    val = [x for x in lines if x["kind"] == "val"][-1]
    assert set(val["per_class"]) == {"Platelets", "RBC", "WBC"}
