"""Trust under bad input: the annotation cache is JSON and never unpickles, truncated images are found
without decoding and skipped (named in `problems` and by `data check`), readers given `classes=` report
what they skip and tell which classes their annotations use, and `data check` says which classes only one
split has."""
import json
import os
import pickle
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from gluon_yolo3.data import cache as cache_mod
from gluon_yolo3.data.base import DatasetError, DetectionDataset
from gluon_yolo3.data.coco import COCODetection
from gluon_yolo3.data.synthetic import SyntheticShapes
from gluon_yolo3.data.voc import VOCDetection
from gluon_yolo3.data.yolo_txt import YOLOTxtDetection

BCCD_IDS = ["BloodImage_00000", "BloodImage_00001", "BloodImage_00002", "BloodImage_00003"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(cache_mod.ENV_VAR, str(tmp_path / "cache"))


def assert_same_dataset(a, b):
    """Same images, ids, sizes, labels (values and dtype), classes and problems."""
    assert len(a) == len(b) and a.classes == b.classes and a.problems == b.problems
    assert a.found_classes == b.found_classes
    for i in range(len(a)):
        assert a.image_id(i) == b.image_id(i) and tuple(a.image_size(i)) == tuple(b.image_size(i))
        assert a.label(i).dtype == b.label(i).dtype == np.float32
        np.testing.assert_array_equal(a.label(i), b.label(i))


@pytest.fixture
def small_voc(write_voc):
    """small_voc(tmp_path) -> a VOC root: cats, dogs, a bird, a zero-area box, a box partly outside, an empty image."""
    def small_voc(tmp_path):
        return write_voc(tmp_path / "voc", {
            "a": [("cat", 1, 1, 10, 20, 0), ("dog", 5, 6, 64, 48, 1)],
            "b": [("cat", 3, 3, 3, 9, 0), ("bird", 2, 2, 8, 8, 0), ("dog", -4, 2, 10, 8, 0)],
            "c": []})
    return small_voc


# -------------------------------------------------------------------------- 1. the cache is not a pickle

class PlantedPickle:
    """Unpickling this creates `marker`: the proof that the cache ran code from a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_pickle_planted_in_the_cache_never_runs(tmp_path, monkeypatch, small_voc):
    root = small_voc(tmp_path)
    folder, marker = tmp_path / "cache", tmp_path / "pwned"
    calls, real_fingerprint = [], cache_mod.fingerprint

    def spy(kind, files, extra=None):
        files = list(files)
        calls.append((kind, files, extra))
        return real_fingerprint(kind, files, extra)

    monkeypatch.setattr(cache_mod, "fingerprint", spy)
    fresh = VOCDetection(root, "train", cache=False)
    VOCDetection(root, "train")                                  # fills the cache
    assert calls and list(folder.iterdir())
    payload = pickle.dumps(("key", PlantedPickle(marker)))
    targets = set(folder.iterdir())                              # every entry written ...
    version = cache_mod.CACHE_VERSION
    for kind, files, extra in calls:                             # ... and where version 1 would look
        for v in (1, version):
            monkeypatch.setattr(cache_mod, "CACHE_VERSION", v)
            key = real_fingerprint(kind, files, extra)
            targets |= {folder / f"{kind}-{key}.pkl", folder / f"{kind}-{key}.json"}
    monkeypatch.setattr(cache_mod, "CACHE_VERSION", version)
    for path in targets:
        path.write_bytes(payload)
    again = VOCDetection(root, "train")
    assert not marker.exists(), "a file in the cache folder ran code"
    assert not again.from_cache                                  # the planted files are ignored: re-parsed
    assert_same_dataset(again, fresh)


def cache_files_are_json(folder: Path, kinds):
    files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    for kind in kinds:
        assert any(p.name.startswith(f"{kind}-") and p.suffix == ".json" for p in files), (kind, files)
    for path in files:
        def reject(constant):
            raise AssertionError(f"{path.name}: {constant} is not JSON")
        json.loads(path.read_text(), parse_constant=reject)     # strict JSON: no NaN / Infinity
        assert path.suffix == ".json"


def test_cached_builds_equal_fresh_ones_and_the_cache_is_json(tmp_path, write_coco, write_yolo, small_voc):
    folder = tmp_path / "cache"
    voc = small_voc(tmp_path)
    (voc / "Annotations/c.xml").write_text(                      # a NaN coordinate survives the round trip
        "<annotation><size><width>64</width><height>48</height></size><object><name>cat</name>"
        "<bndbox><xmin>nan</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>")
    yolo, sets_ = write_yolo(tmp_path / "yolo", num_images=5, size=64)
    first_label = folder.parent / "yolo/labels/train" / f"{sets_['train'].image_id(0)}.txt"
    first_label.write_text("0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.1 0.1\n1 0.1 0.1 0.3 0.1 0.3 0.4\n")
    coco, _ = write_coco(tmp_path / "coco", num_images=4, size=64,
                         extra_annotations=[{"image_id": 100, "category_id": 7, "bbox": [5, 5, 20, 10],
                                             "iscrowd": 1}])
    builds = [lambda **kw: VOCDetection(voc, "train", **kw),
              lambda **kw: VOCDetection(voc, "train", classes=("dog", "cat"), keep_difficult=False, **kw),
              lambda **kw: YOLOTxtDetection(yolo, "train", **kw),
              lambda **kw: YOLOTxtDetection(yolo, "val", classes=["triangle", "circle"], **kw),
              lambda **kw: COCODetection(coco, use_crowd=True, **kw)]
    built = [(build(cache=False), build(), build()) for build in builds]
    cache_files_are_json(folder, ("voc", "yolo", "coco", "images"))
    for fresh, first, second in built:
        assert second.from_cache
        assert_same_dataset(first, fresh)
        assert_same_dataset(second, fresh)
    assert any("non-finite" in p for p in built[0][0].problems)


def test_the_cache_keeps_array_dtypes_and_shapes(tmp_path):
    source = tmp_path / "source.txt"
    source.write_text("x")
    value = {"f": np.array([[1.5, np.nan], [np.inf, -2]], np.float32), "i": np.arange(3, dtype=np.int64),
             "b": np.array([True, False]), "empty": np.zeros((0, 5), np.float32), "t": (1, "a", None)}
    stored, hit = cache_mod.cached_parse("t", [source], lambda: value, cache=tmp_path / "c")
    loaded, hit = cache_mod.cached_parse("t", [source], lambda: 1 / 0, cache=tmp_path / "c")
    assert hit
    for k in ("f", "i", "b", "empty"):
        assert loaded[k].dtype == value[k].dtype and loaded[k].shape == value[k].shape
        np.testing.assert_array_equal(loaded[k], value[k])
    assert list(loaded["t"]) == [1, "a", None]
    cache_files_are_json(tmp_path / "c", ("t",))
    entry = next((tmp_path / "c").glob("t-*.json"))
    entry.write_text(json.dumps({"version": cache_mod.CACHE_VERSION, "key": entry.stem.split("-", 1)[1],
                                 "value": {"__ndarray__": "|O", "shape": [1], "data": ""}}))
    assert cache_mod.cached_parse("t", [source], lambda: "parsed", cache=tmp_path / "c") == ("parsed", False)
    entry.write_bytes(b"\x80\x04garbage")                                    # corrupt: a re-parse
    assert cache_mod.cached_parse("t", [source], lambda: "again", cache=tmp_path / "c") == ("again", False)


# ------------------------------------------------------------------------------- 2. truncated images

def bccd_copy(bccd_root, tmp_path, ids=BCCD_IDS):
    """A VOC tree with copies (writable) of a few BCCD photos, split 'train'."""
    root = tmp_path / "bccd"
    (root / "ImageSets/Main").mkdir(parents=True)
    for sub, ext in (("Annotations", "xml"), ("JPEGImages", "jpg")):
        (root / sub).mkdir()
        for i in ids:
            (root / sub / f"{i}.{ext}").write_bytes((bccd_root / sub / f"{i}.{ext}").read_bytes())
    (root / "ImageSets/Main/train.txt").write_text("\n".join(ids) + "\n")
    return root


def cut(path: Path, fraction=0.6):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])


def exif_with_thumbnail(thumbnail: bytes) -> bytes:
    """An APP1 Exif segment whose IFD1 points at `thumbnail` (a whole JPEG, with its own FFD9)."""
    entries = (struct.pack("<HHII", 0x0201, 4, 1, 44) + struct.pack("<HHII", 0x0202, 4, 1, len(thumbnail)))
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<HI", 0, 14) + struct.pack("<H", 2) + entries \
        + struct.pack("<I", 0)
    assert len(tiff) == 44
    payload = b"Exif\x00\x00" + tiff + thumbnail
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def with_thumbnail(jpeg: bytes) -> bytes:
    thumb = cv2.imencode(".jpg", np.full((16, 16, 3), 90, np.uint8))[1].tobytes()
    assert thumb.endswith(b"\xff\xd9")
    return jpeg[:2] + exif_with_thumbnail(thumb) + jpeg[2:]


def test_a_cut_bccd_jpeg_is_skipped_and_named(bccd_root, tmp_path, monkeypatch):
    root = bccd_copy(bccd_root, tmp_path)
    bad = root / "JPEGImages" / f"{BCCD_IDS[1]}.jpg"
    cut(bad)
    assert cv2.imread(str(bad)) is not None            # OpenCV decodes it (grey bottom): the silent case
    ds = VOCDetection(root, "train")
    assert [ds.image_id(i) for i in range(len(ds))] == [BCCD_IDS[0]] + BCCD_IDS[2:]
    hits = [p for p in ds.problems if f"{BCCD_IDS[1]}.jpg" in p]
    assert len(hits) == 1 and "truncated image" in hits[0] and hits[0].endswith("image skipped"), ds.problems
    assert len(ds.problems) == 1
    # the check is cached with the annotations: an unchanged image is not read again
    from gluon_yolo3.data import base as base_mod
    monkeypatch.setattr(base_mod, "inspect_image", lambda p: (_ for _ in ()).throw(AssertionError(p)))
    assert VOCDetection(root, "train").problems == ds.problems
    monkeypatch.undo()
    os.environ[cache_mod.ENV_VAR] = str(tmp_path / "cache")
    everything = VOCDetection(root, "train", check_images=False)
    assert len(everything) == 4 and everything.problems == []


@pytest.mark.slow
def test_data_check_prints_the_truncated_jpeg(bccd_root, tmp_path, invoke, repo):
    root = bccd_copy(bccd_root, tmp_path)
    (root / "ImageSets/Main/val.txt").write_text("\n".join(BCCD_IDS[2:]) + "\n")
    cut(root / "JPEGImages" / f"{BCCD_IDS[3]}.jpg")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"_base_: {repo / 'recipes/bccd_tiny.yaml'}\nname: cut\ntrain: {{batch_size: 2}}\n"
                      f"data:\n  train: {{type: voc, root: {root}, splits: [train]}}\n"
                      f"  val: {{type: voc, root: {root}, splits: [val]}}\n")
    out = tmp_path / "check"
    result = invoke("data", "check", recipe, "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    lines = [ln.strip() for ln in result.output.splitlines()
             if f"{BCCD_IDS[3]}.jpg" in ln and "truncated image" in ln]
    assert len(lines) == 2 and all(ln.startswith("problem: ") for ln in lines), result.output  # both splits
    report = json.loads((out / "data_check.json").read_text())
    assert report["train"]["images"] == 3 and report["val"]["images"] == 1
    assert invoke("data", "check", recipe, "--out", out, "--no-progress", "--strict").exit_code == 1


def test_exif_thumbnails_and_trailing_bytes_are_not_truncation(bccd_root, tmp_path):
    from gluon_yolo3.data.images import TAIL_BYTES, image_file_problem
    root = bccd_copy(bccd_root, tmp_path)
    images = [root / "JPEGImages" / f"{i}.jpg" for i in BCCD_IDS]
    whole = images[0].read_bytes()
    images[0].write_bytes(with_thumbnail(whole))                          # thumbnail FFD9, main image whole
    images[1].write_bytes(with_thumbnail(whole)[:len(whole) * 6 // 10])   # thumbnail FFD9, main image cut
    images[2].write_bytes(whole + b"\x00\x11\x22 trailing")               # bytes after the end marker
    images[3].write_bytes(whole + bytes(TAIL_BYTES + 100))                # more of them than the tail read
    from PIL import Image
    with Image.open(images[0]) as img:                                    # PIL reads the Exif block
        exif = img.info["exif"]
        assert exif.startswith(b"Exif\x00\x00") and exif.endswith(b"\xff\xd9") and len(img.getexif()) == 0
    assert cv2.imread(str(images[0])).shape == (480, 640, 3)
    assert [image_file_problem(p) is None for p in images] == [True, False, True, True]
    ds = VOCDetection(root, "train")
    assert [ds.image_id(i) for i in range(len(ds))] == [BCCD_IDS[0]] + BCCD_IDS[2:]
    assert len(ds.problems) == 1 and f"{BCCD_IDS[1]}.jpg" in ds.problems[0]


def test_jpeg_cuts_anywhere_and_large_files(tmp_path):
    from gluon_yolo3.data.images import TAIL_BYTES, image_file_problem
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (600, 800, 3), np.uint8)
    data = cv2.imencode(".jpg", noise, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    assert len(data) > 3 * TAIL_BYTES
    path = tmp_path / "big.jpg"
    for n in (len(data), len(data) - 2, len(data) // 2, 4 * TAIL_BYTES // 3, 300, 10, 3):
        path.write_bytes(data[:n])
        assert (image_file_problem(path) is None) == (n == len(data)), n
    assert image_file_problem(tmp_path / "missing.jpg") is None           # image_header reports those
    (tmp_path / "a.bmp").write_bytes(cv2.imencode(".bmp", np.zeros((4, 4, 3), np.uint8))[1].tobytes())
    assert image_file_problem(tmp_path / "a.bmp") is None


def test_truncated_pngs_are_skipped_in_yolo_and_coco(tmp_path, write_coco, write_yolo):
    from gluon_yolo3.data.images import image_file_problem
    folder, sets_ = write_yolo(tmp_path / "yolo", num_images=4, size=64)
    ids = [sets_["train"].image_id(i) for i in range(4)]
    cut(folder / "images/train" / f"{ids[1]}.png")
    trailing = folder / "images/train" / f"{ids[2]}.png"
    trailing.write_bytes(trailing.read_bytes() + b"junk after IEND")
    assert image_file_problem(trailing) is None
    data = YOLOTxtDetection(folder)
    assert [data.image_id(i) for i in range(len(data))] == [ids[0], ids[2], ids[3]]
    assert data.problems == [f"images/train/{ids[1]}.png: truncated image (no PNG IEND chunk at the end); "
                             "image skipped"]
    path, ds = write_coco(tmp_path / "coco", num_images=3, size=64)
    cut(tmp_path / "coco/images" / f"{ds.image_id(0)}.png", 0.9)
    coco = COCODetection(path)
    assert [coco.image_id(i) for i in range(len(coco))] == [ds.image_id(1), ds.image_id(2)]
    assert len(coco.problems) == 1 and f"{ds.image_id(0)}.png: truncated image" in coco.problems[0]
    np.testing.assert_array_equal(coco.label(0), ds[1][1])


# ------------------------------------------------------------------- 3. classes found, classes given

def test_voc_given_classes_reports_the_rest_and_finds_all(tmp_path, small_voc):
    root = small_voc(tmp_path)
    ds = VOCDetection(root, "train", classes=("dog",))
    assert ds.found_classes == ("bird", "cat", "dog")
    assert any(p.startswith("a.xml: ") and "'cat'" in p and "skipped" in p for p in ds.problems)
    assert any(p.startswith("b.xml: ") and "'bird'" in p and "skipped" in p for p in ds.problems)
    assert ds.label(0).tolist() == [[4, 5, 64, 48, 0, 1]]
    assert VOCDetection(root, "train").classes == VOCDetection(root, "train").found_classes


def test_yolo_found_classes_are_the_names_of_the_ids_used(tmp_path, write_yolo):
    folder, sets_ = write_yolo(tmp_path / "yolo", num_images=4, size=64)
    for k, label in enumerate(sorted((folder / "labels/train").glob("*.txt"))):
        label.write_text(f"{2 * (k % 2)} 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n")   # triangle / circle, id 7
    data = YOLOTxtDetection(folder, classes=["circle", "square"])
    assert data.found_classes == ("circle", "triangle") and data.classes == ("circle", "square")
    assert sum("class 'triangle' not in classes" in p and p.startswith("labels/train/")
               for p in data.problems) == 2
    assert sum("unknown class id 7" in p for p in data.problems) == 4
    assert YOLOTxtDetection(folder, "val").found_classes == tuple(sorted(set(
        sets_["val"].classes[int(c)] for i in range(len(sets_["val"])) for c in sets_["val"][i][1][:, 4])))


def test_coco_class_list_with_a_class_the_file_lacks(tmp_path, write_coco):
    path, ds = write_coco(tmp_path / "coco", num_images=4, size=64)
    content = json.loads(path.read_text())
    content["categories"].append({"id": 20, "name": "hexagon", "supercategory": "shape"})   # never used
    path.write_text(json.dumps(content))
    sub = COCODetection(path, classes=["circle", "pentagon"])                    # must not raise
    assert sub.classes == ("circle", "pentagon") and sub.label_to_cat_id == {0: 3}
    missing = [p for p in sub.problems if "'pentagon'" in p]
    assert missing == [f"{path}: class 'pentagon' is not a category of this file: no boxes of it here"]
    assert all(p.startswith("annotations.json (") and "not in classes" in p and "skipped" in p
               for p in sub.problems if p not in missing)
    for i in range(len(sub)):
        full = ds[i][1]
        np.testing.assert_array_equal(sub.label(i), full[full[:, 4] == 0])
    assert sub.found_classes == ("circle", "square", "triangle")
    everything = COCODetection(path)
    assert everything.classes == ("circle", "square", "triangle", "hexagon")
    assert everything.found_classes == ("circle", "square", "triangle")
    with pytest.raises(DatasetError, match="annotations.json"):
        COCODetection(path, classes=["pentagon"])                                # nothing in common


def test_synthetic_and_other_datasets_find_their_classes():
    assert SyntheticShapes(num_images=2, classes=("square", "circle")).found_classes == ("circle", "square")

    class Listed(DetectionDataset):
        classes = ("b", "a")

    assert Listed().found_classes == ("a", "b")


# ------------------------------------------------------------------ 4. data check compares the splits

@pytest.fixture
def two_split_voc(write_voc):
    """two_split_voc(tmp_path) -> a VOC root whose train and val splits hold different classes."""
    def two_split_voc(tmp_path):
        root = write_voc(tmp_path / "voc", {"t1": [("cat", 1, 1, 10, 20, 0)], "t2": [("dog", 2, 2, 30, 30, 0)],
                                            "t3": [("cow", 2, 2, 30, 30, 0)]}, split="train")
        write_voc(root, {"v1": [("cat", 1, 1, 10, 20, 0), ("bird", 5, 5, 20, 20, 0)],
                         "v2": [("cow", 2, 2, 30, 30, 0)]}, split="val")
        return root
    return two_split_voc


@pytest.fixture
def voc_recipe(repo):
    """voc_recipe(tmp_path, root, train, val) -> a BCCD-based recipe reading the VOC root's splits."""
    def voc_recipe(tmp_path, root, train="train", val="val"):
        recipe = tmp_path / f"{train}-{val}.yaml"
        recipe.write_text(f"_base_: {repo / 'recipes/bccd_tiny.yaml'}\nname: splits\ntrain: {{batch_size: 1}}\n"
                          f"data:\n  train: {{type: voc, root: {root}, splits: [{train}]}}\n"
                          f"  val: {{type: voc, root: {root}, splits: [{val}]}}\n")
        return recipe
    return voc_recipe


@pytest.mark.slow
def test_data_check_names_the_classes_only_one_split_has(tmp_path, invoke, two_split_voc, voc_recipe):
    root = two_split_voc(tmp_path)
    out = tmp_path / "check"
    result = invoke("data", "check", voc_recipe(tmp_path, root), "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "classes only in data.train: dog; only in data.val: bird" in result.output
    report = json.loads((out / "data_check.json").read_text())
    assert report["class_mismatch"] == {"only_in_train": ["dog"], "only_in_val": ["bird"]}
    assert report["val"]["found_classes"] == ["bird", "cat", "cow"]
    same = invoke("data", "check", voc_recipe(tmp_path, root, val="train"), "--out", out, "--no-progress")
    assert same.exit_code == 0 and "classes only in" not in same.output
    assert json.loads((out / "data_check.json").read_text())["class_mismatch"] == {
        "only_in_train": [], "only_in_val": []}
    one = invoke("data", "check", voc_recipe(tmp_path, root), "--out", out, "--split", "val", "--no-progress")
    assert one.exit_code == 0 and "classes only in" not in one.output
    assert list(json.loads((out / "data_check.json").read_text())) == ["val", "train_build"]
