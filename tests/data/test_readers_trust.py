"""Datasets read the way the tools that write them mean it, and nothing dropped in silence: YOLO labels beside the
images, VOC images in any extension and case, split-file lines that are not ids, `nc` in words, Roboflow's `../`
paths; undecodable and huge images found when the dataset is built, named and skipped; an XML `<size>` that
disagrees with its image; class names differing only in case; no labelled box at all; every box counted in
evaluation; `data check` building what `train` builds. Every test here failed before its fix."""
import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from gluon_yolo3 import api
from gluon_yolo3.data import cache as cache_mod
from gluon_yolo3.data.base import DatasetError
from gluon_yolo3.data.build import build_datasets
from gluon_yolo3.data.coco import COCODetection
from gluon_yolo3.data.voc import VOCDetection
from gluon_yolo3.data.yolo_txt import YOLOTxtDetection
from gluon_yolo3.engine.trainer import Trainer

TINY = ["model.input_size=64", "data.num_workers=0", "train.batch_size=2", "train.val_every=0", "train.epochs=1",
        "data.transforms=[]"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(cache_mod.ENV_VAR, str(tmp_path / "cache"))


def ids(dataset):
    return [dataset.image_id(i) for i in range(len(dataset))]


def photo(path: Path, w=64, h=48, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(path.suffix if path.suffix.lower() != ".jpeg" else ".jpg",
                            np.random.default_rng(seed).integers(0, 255, (h, w, 3), np.uint8))
    path.write_bytes(data.tobytes())
    return path


def voc_xml(root: Path, image_id: str, objects, size=(64, 48), filename=None):
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    body = "".join(f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
                   f"<ymax>{d}</ymax></bndbox></object>" for n, a, b, c, d in objects)
    name = f"<filename>{filename}</filename>" if filename else ""
    (root / "Annotations" / f"{image_id}.xml").write_text(
        f"<annotation>{name}<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
        f"{body}</annotation>")


def png_header(width: int, height: int) -> bytes:
    """A PNG file whose header says width x height (a few bytes: no pixel data is ever decoded)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) \
        + chunk(b"IEND", b"")


def jpeg_with_size(width: int, height: int) -> bytes:
    """A small JPEG whose SOF0 says width x height."""
    data = bytearray(cv2.imencode(".jpg", np.full((8, 8, 3), 90, np.uint8))[1].tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


# ---- YOLO layouts ---------------------------------------------------------------------------------------

def test_yolo_labels_beside_images_below_a_folder_named_images(tmp_path):
    """Before: every label was looked up in /data/labels/mydataset/: 3 images, 0 boxes, 0 problems."""
    folder = tmp_path / "data" / "images" / "mydataset"
    for k in range(3):
        photo(folder / f"p{k}.jpg")
        (folder / f"p{k}.txt").write_text("0 0.5 0.5 0.25 0.5\n")
    (folder / "data.yaml").write_text("path: .\ntrain: .\nval: .\nnames: [cat]\n")
    data = YOLOTxtDetection(folder)
    assert len(data) == 3 and data.problems == []
    np.testing.assert_allclose(data.label(0), [[24, 12, 40, 36, 0, 0]])


def test_ultralytics_labels_are_preferred_and_a_split_without_any_is_reported(tmp_path, write_yolo):
    folder, sets = write_yolo(tmp_path / "yolo", num_images=3, size=64)
    first = sets["train"].image_id(0)
    (folder / "images/train" / f"{first}.txt").write_text("0 0.5 0.5 0.9 0.9\n")    # a stray file beside
    data = YOLOTxtDetection(folder)
    np.testing.assert_allclose(data.label(0), sets["train"][0][1], atol=1e-3)
    for label in (folder / "labels/val").glob("*.txt"):
        label.unlink()
    val = YOLOTxtDetection(folder, "val")
    assert [p for p in val.problems if "has a label file" in p] == [
        f"{folder / 'data.yaml'}: split 'val': none of its 2 images has a label file (looked at labels/val/"
        f"{val.image_id(0)}.txt and images/val/{val.image_id(0)}.txt, ...): they train as images without objects"]


@pytest.mark.parametrize("nc, message", [("three", "nc must be the number of classes, a whole number >= 1, got "
                                                   "'three'"),
                                         ("2.5", "got 2.5"), ("[3]", "got [3]"), ("true", "got true")])
def test_nc_that_is_no_count_is_refused_naming_the_file(tmp_path, write_yolo, nc, message):
    """Before: ValueError "invalid literal for int() with base 10: 'three'", no file named."""
    folder, _ = write_yolo(tmp_path / "yolo", num_images=2, size=64)
    text = (folder / "data.yaml").read_text()
    (folder / "data.yaml").write_text(text + f"nc: {nc}\n")
    with pytest.raises(DatasetError) as info:
        YOLOTxtDetection(folder)
    assert str(folder / "data.yaml") in str(info.value) and message in str(info.value)


def test_nc_spelled_as_text_or_alone_is_read(tmp_path, write_yolo):
    folder, _ = write_yolo(tmp_path / "yolo", num_images=2, size=64)
    content = yaml.safe_load((folder / "data.yaml").read_text())
    (folder / "data.yaml").write_text(yaml.safe_dump({**content, "nc": "3"}))
    assert YOLOTxtDetection(folder).classes == ("circle", "square", "triangle")
    del content["names"]
    (folder / "data.yaml").write_text(yaml.safe_dump({**content, "nc": 3}))
    assert YOLOTxtDetection(folder).classes == ("class_0", "class_1", "class_2")


def test_a_roboflow_export_with_parent_paths(tmp_path):
    """Roboflow writes `train: ../train/images` beside train/ and valid/; Ultralytics reads it without the `../`."""
    root = tmp_path / "export"
    for split in ("train", "valid"):
        for k in range(2):
            photo(root / split / "images" / f"{split}{k}.jpg")
            (root / split / "labels").mkdir(parents=True, exist_ok=True)
            (root / split / "labels" / f"{split}{k}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnc: 1\nnames: ['cell']\n")
    sets = build_datasets(api.load(Path(api.__file__).parents[1] / "recipes/demo_tiny.yaml", [f"data.root={root}"]))
    assert ids(sets["train"]) == ["train0", "train1"] and ids(sets["val"]) == ["valid0", "valid1"]
    assert sum(len(sets["train"].label(i)) for i in range(2)) == 2


# ---- VOC layouts ----------------------------------------------------------------------------------------

def test_voc_photos_in_any_extension_and_case_are_all_used(tmp_path, demo_recipe):
    """Before: a folder without split files left out every photo not named <id>.jpg (10 annotated, 4 used)."""
    root = tmp_path / "voc"
    for k, ext in enumerate([".jpg"] * 4 + [".JPG"] * 3 + [".png", ".PNG", ".jpeg"]):
        photo(root / "JPEGImages" / f"img{k:02d}{ext}", seed=k)
        voc_xml(root, f"img{k:02d}", [("cat", 5, 5, 30, 30)])
    photo(root / "JPEGImages" / "lonely.jpg")                      # a photo without annotation: said, not used
    sets = build_datasets(api.load(demo_recipe, [f"data.root={root}"]))
    assert sorted(ids(sets["train"]) + ids(sets["val"])) == [f"img{k:02d}" for k in range(10)]
    assert sets["train"].problems == [] and sets["val"].problems == []
    assert any("1 image(s) in JPEGImages have no annotation" in w and "lonely.jpg" in w for w in sets["val"].warnings)
    with_split = VOCDetection(root, ids=["img07", "img08"])
    assert with_split[0][0].shape == (48, 64, 3) and with_split.image_path(1).name == "img08.PNG"


def test_voc_images_found_by_filename_and_ambiguous_or_missing_ones_named(tmp_path):
    root = tmp_path / "voc"
    photo(root / "JPEGImages" / "IMG_0009.JPG")
    voc_xml(root, "renamed", [("cat", 5, 5, 30, 30)], filename="IMG_0009.JPG")        # LabelImg's <filename>
    photo(root / "JPEGImages" / "twice.png")
    photo(root / "JPEGImages" / "twice.bmp")
    voc_xml(root, "twice", [("cat", 5, 5, 30, 30)])
    voc_xml(root, "nothing", [("cat", 5, 5, 30, 30)])
    data = VOCDetection(root, ids=["renamed", "twice", "nothing"])
    assert ids(data) == ["renamed"] and data.image_path(0).name == "IMG_0009.JPG"
    assert data.problems == ["twice.xml: several images for it (twice.bmp, twice.png) and its <filename> names none "
                             "of them; image skipped", "nothing.xml: no image nothing.* in JPEGImages; image skipped"]


def test_a_split_file_line_that_is_not_an_id_names_the_split_file(tmp_path):
    """Before: `b.jpg.xml: annotation file missing` and `not.xml: ...`: the wrong file named, b.jpg lost."""
    root = tmp_path / "voc"
    for name in ("a", "b", "c"):
        photo(root / "JPEGImages" / f"{name}.jpg")
        voc_xml(root, name, [("cat", 5, 5, 30, 30)])
    (root / "ImageSets/Main").mkdir(parents=True)
    (root / "ImageSets/Main/train.txt").write_text("a\nb.jpg\nJPEGImages/c.jpg  1\n\nnot an id\n")
    data = VOCDetection(root, "train")
    assert ids(data) == ["a", "b", "c"]
    assert data.problems == [f"ImageSets/Main/train.txt:5: 'not an id' is not an image id of {root} "
                             "(no Annotations/not.xml); skipped"]


# ---- images that cannot be used: found when the dataset is built ---------------------------------------

def test_undecodable_images_are_found_when_built_named_and_skipped(tmp_path):
    """Before: kept; a zero-byte file or a GIF named .jpg stopped training at its first read."""
    root = tmp_path / "voc"
    from PIL import Image
    for name in ("good", "empty", "gif", "html", "other"):
        voc_xml(root, name, [("cat", 5, 5, 30, 30)])
        photo(root / "JPEGImages" / f"{name}.jpg")
    (root / "JPEGImages/empty.jpg").write_bytes(b"")
    Image.new("RGB", (64, 48)).save(root / "JPEGImages/gif.jpg", format="GIF")
    (root / "JPEGImages/html.jpg").write_text("<!DOCTYPE html><html><body>Not found</body></html>")
    data = VOCDetection(root, ids=["good", "empty", "gif", "html", "other"])
    assert ids(data) == ["good", "other"]
    jpeg = root / "JPEGImages"
    assert data.problems == [f"{jpeg / 'empty.jpg'}: unreadable image: empty file (0 bytes); image skipped",
                             f"{jpeg / 'gif.jpg'}: unreadable image: a GIF image, which OpenCV cannot decode "
                             "(convert it to JPEG or PNG); image skipped",
                             f"{jpeg / 'html.jpg'}: unreadable image: not an image (it starts with "
                             "b'<!DOCTYPE html><'); image skipped"]
    from gluon_yolo3.data.images import ImageFileError, read_image
    with pytest.raises(ImageFileError, match="jpeg_folder.jpg': not a file"):          # predict's reader too
        read_image(Path(jpeg / "jpeg_folder.jpg").mkdir() or jpeg / "jpeg_folder.jpg")


@pytest.mark.parametrize("size", [(20000, 20000), (13000, 12000)])
def test_huge_images_get_one_rule_in_every_format(tmp_path, write_yolo, size):
    """Before: 20000x20000 raised PIL's DecompressionBombError from the YOLO reader (a traceback); as a JPEG in a
    VOC folder it was decoded (3.7 GB); 13000x12000 passed both."""
    from gluon_yolo3.data.images import ImageFileError, read_image
    w, h = size
    rule = f"{w}x{h} pixels, more than the 150 megapixels an image may have"
    folder, sets = write_yolo(tmp_path / "yolo", num_images=3, size=64)
    big = folder / "images/train" / f"{sets['train'].image_id(1)}.png"
    big.write_bytes(png_header(w, h))
    data = YOLOTxtDetection(folder)
    assert len(data) == 2 and [p for p in data.problems if rule in p] == [
        f"images/train/{big.name}: unreadable image: {rule} (gluon_yolo3.data.images.MAX_IMAGE_PIXELS); scale it "
        "down; image skipped"]
    root = tmp_path / "voc"
    for name in ("a", "b"):
        photo(root / "JPEGImages" / f"{name}.jpg")
        voc_xml(root, name, [("cat", 5, 5, 30, 30)], size=(w, h) if name == "b" else (64, 48))
    (root / "JPEGImages/b.jpg").write_bytes(jpeg_with_size(w, h))
    voc = VOCDetection(root, ids=["a", "b"])
    assert ids(voc) == ["a"] and len(voc.problems) == 1 and rule in voc.problems[0]
    with pytest.raises(ImageFileError, match=f"b.jpg.*{rule}"):
        read_image(root / "JPEGImages/b.jpg")


# ---- annotations that disagree with their image --------------------------------------------------------

def test_an_xml_size_that_disagrees_with_the_image_is_said_in_train_and_the_image_wins(tmp_path, demo_recipe):
    """Before: `data check` flagged it, training used the boxes of the XML's pixel frame on the image in silence."""
    from gluon_yolo3.engine.builders import build_run_data
    root = tmp_path / "voc"
    for name, size in (("half", (128, 96)), ("swapped", (48, 64)), ("right", (64, 48))):
        photo(root / "JPEGImages" / f"{name}.jpg")                          # every photo is 64 x 48
        voc_xml(root, name, [("cat", 11, 21, 60, 80)] if name == "half" else [("cat", 5, 5, 30, 30)], size=size)
    (root / "ImageSets/Main").mkdir(parents=True)
    (root / "ImageSets/Main/trainval.txt").write_text("half\nswapped\nright\n")
    (root / "ImageSets/Main/test.txt").write_text("right\n")
    logged = []
    sets = build_run_data(api.load(demo_recipe, [f"data.root={root}"]), tmp_path / "run", False, logged.append)
    train = sets["train"]
    assert ids(train) == ["half", "right"] and train.image_size(0) == (48, 64)
    np.testing.assert_allclose(train.label(0)[:, :4], [[5, 10, 30, 40]])     # (10, 20, 60, 80) x 0.5
    assert "data.train: half.xml: annotated as 128x96 but the image is 64x48: boxes scaled to the image" \
        in logged
    assert any(line.startswith("data.train: swapped.xml: annotated as 48x64 but the image is 64x48 "
                               "(rotated") and line.endswith("image skipped") for line in logged)


def test_a_coco_size_that_disagrees_with_the_image_is_fitted_too(tmp_path, write_coco):
    path, ds = write_coco(tmp_path / "coco", num_images=2, size=64)
    content = json.loads(path.read_text())
    content["images"][0].update(width=128, height=128)
    path.write_text(json.dumps(content))
    data = COCODetection(path)
    np.testing.assert_allclose(data.label(0)[:, :4], ds[0][1][:, :4] / 2, atol=1e-4)
    assert any("annotated as 128x128 but the image is 64x64: boxes scaled" in p for p in data.problems)


def test_class_names_differing_only_in_case_or_spaces_are_warned_in_train(tmp_path, demo_recipe, write_yolo):
    """Before: `Raccoon` and `raccoon` trained as two classes with no word in train."""
    from gluon_yolo3.engine.builders import build_run_data
    root = tmp_path / "voc"
    for name, cls in (("a", "raccoon"), ("b", "Raccoon"), ("c", "raccoon"), ("v", "RACCOON")):
        photo(root / "JPEGImages" / f"{name}.jpg")
        voc_xml(root, name, [(cls, 5, 5, 30, 30)])
    (root / "ImageSets/Main").mkdir(parents=True)
    (root / "ImageSets/Main/trainval.txt").write_text("a\nb\nc\n")
    (root / "ImageSets/Main/test.txt").write_text("v\n")
    logged = []
    build_run_data(api.load(demo_recipe, [f"data.root={root}"]), tmp_path / "run", False, logged.append)
    assert ("data.train: warning: class names 'Raccoon' (b.xml) and 'raccoon' (a.xml, c.xml) differ only in case or "
            "spaces: they are 2 separate classes; fix the annotations, or list the classes you mean in data.classes"
            ) in logged
    assert any(line.startswith("data.val: v.xml: unknown class 'RACCOON' skipped (1 box(es)) (differs from")
               for line in logged)
    folder, _ = write_yolo(tmp_path / "yolo", num_images=2, size=64)
    content = yaml.safe_load((folder / "data.yaml").read_text())
    (folder / "data.yaml").write_text(yaml.safe_dump({**content, "names": ["circle", "circle ", "triangle"]}))
    assert YOLOTxtDetection(folder).warnings[0].startswith("class names 'circle' (data.yaml) and 'circle ' (data.yaml)")


def test_training_on_data_without_boxes_says_the_dataset_holds_none(tmp_path, demo_recipe):
    """Before: it failed inside the head (num_classes=0), or with data.classes trained to the end on background."""
    root = tmp_path / "voc"
    for k in range(4):
        photo(root / "JPEGImages" / f"i{k}.jpg")
        voc_xml(root, f"i{k}", [])
    for extra in ([], ["data.classes=[cat]"]):
        with pytest.raises(ValueError, match=r"data.train holds no labelled boxes \(3 images\): a detector cannot"):
            Trainer(api.load(demo_recipe, TINY + [f"data.root={root}"] + extra), tmp_path / "run", progress=False,
                    log=lambda *_: None).fit()


# ---- every box counts in evaluation; training caps the ignore mask and says so -------------------------

def test_evaluation_counts_every_box_and_training_says_it_caps(tmp_path, demo_recipe):
    """Before: an image with 120 boxes counted only the first 100 (data.max_boxes) as ground truth."""
    from gluon_yolo3.data.feed import InputSpec
    from gluon_yolo3.engine.builders import build_run_data
    from gluon_yolo3.evaluation.runner import detect_dataset, score_detections
    root = tmp_path / "voc"
    crowd = [("cat", 1 + (k % 12) * 5, 1 + (k // 12) * 4, 5 + (k % 12) * 5, 4 + (k // 12) * 4) for k in range(120)]
    photo(root / "JPEGImages" / "crowd.jpg")
    voc_xml(root, "crowd", crowd)
    photo(root / "JPEGImages" / "one.jpg")
    voc_xml(root, "one", [("cat", 5, 5, 30, 30)])
    (root / "ImageSets/Main").mkdir(parents=True)
    for split in ("trainval", "test"):
        (root / "ImageSets/Main" / f"{split}.txt").write_text("one\ncrowd\n")
    recipe = api.load(demo_recipe, TINY + [f"data.root={root}", "eval.batch_size=2"])
    logged = []
    sets = build_run_data(recipe, tmp_path / "run", False, logged.append)
    assert any(line.startswith("data.max_boxes 100: 1 training image(s) hold more boxes (up to 120, crowd.jpg)")
               for line in logged)

    def no_detections(x):
        import mxnet as mx
        empty = mx.nd.full((x.shape[0], 1, 1), -1)
        return empty, empty, mx.nd.full((x.shape[0], 1, 4), -1)

    results = detect_dataset(no_detections, sets["val"], recipe, InputSpec.from_recipe(recipe, ["cat"]),
                             [__import__("mxnet").cpu()], progress=False)
    assert [len(r["gt"]) for r in results] == [1, 120]
    assert score_detections(results, ["cat"])["num_gt"] == {"cat": 121}


# ---- data check builds what train builds ---------------------------------------------------------------

@pytest.mark.parametrize("bad, named", [("data.transforms=[{type: random_flop}]", "unknown type 'random_flop'"),
                                        ("loss.terms=[{type: xy_bce}, {type: obj_bce}]", "unknown type 'obj_bce'"),
                                        ("train.optimizer={type: sgdd}", "unknown type 'sgdd'"),
                                        ("train.hooks=[{type: early_stoping}]", "unknown type 'early_stoping'")])
def test_data_check_refuses_what_train_refuses(tmp_path, demo_recipe, invoke, sets, bad, named):
    """Before: `data check` passed (exit 0) with an unknown transform or loss type that `train` then refused."""
    result = invoke("data", "check", demo_recipe, "--out", tmp_path / "check", "--no-progress",
                    *sets(["data.train.num_images=4", "data.val.num_images=2", "train.batch_size=2", bad]))
    assert result.exit_code == 2 and named in result.output, result.output
    assert "data.train (SyntheticShapes): 4 images" in result.output       # the data's report comes first


def test_data_check_says_what_train_says_about_the_data(tmp_path, demo_recipe, invoke, sets):
    root = tmp_path / "voc"
    for k in range(4):
        photo(root / "JPEGImages" / f"i{k}.jpg")
        voc_xml(root, f"i{k}", [("cat", 5, 5, 30, 30), ("cat", 30, 5, 60, 30), ("dog", 5, 25, 30, 45)])
    result = invoke("data", "check", demo_recipe, "--out", tmp_path / "check", "--no-progress",
                    *sets(TINY + [f"data.root={root}", "data.max_boxes=2"]))
    assert result.exit_code == 0, result.output
    assert "data.train (VOCDetection): 3 images, 9 boxes" in result.output and "split: seeded 80/20 split" in result.output
    assert "train builds: the network, loss, transforms, batches, optimizer and hooks" in result.output
    assert "data.max_boxes 2: 3 training image(s) hold more boxes (up to 3, " in result.output
    assert "model.anchors: " in result.output and not (tmp_path / "check/checkpoints").exists()


def test_eval_deployed_on_a_split_without_boxes_says_no_delta():
    """Before: `delta +nan`."""
    from gluon_yolo3.evaluation.tables import format_comparison
    line = format_comparison({"map": float("nan"), "metric": "voc07"}, {"map": float("nan"), "model": "int8"})
    assert line == "mAP (voc07): fp32 n/a   int8 n/a   delta n/a (no ground-truth boxes to score)"


# ---- values spelled several ways: all accepted, or refused clearly --------------------------------------

def test_flags_spelled_as_words_are_read_and_others_named(tmp_path, write_coco):
    """Before: `<difficult>false</difficult>` was read as difficult, a COCO `"iscrowd": "0"` as a crowd."""
    root = tmp_path / "voc"
    photo(root / "JPEGImages" / "a.jpg")
    voc_xml(root, "a", [])
    objects = "".join(f"<object><name>cat</name><difficult>{d}</difficult><bndbox><xmin>5</xmin><ymin>5</ymin>"
                      f"<xmax>30</xmax><ymax>30</ymax></bndbox></object>"
                      for d in ("false", "True", "1.0", "no", "maybe"))
    xml = root / "Annotations/a.xml"
    xml.write_text(xml.read_text().replace("</annotation>", objects + "</annotation>"))
    data = VOCDetection(root, ids=["a"])
    assert data.label(0)[:, 5].tolist() == [0, 1, 1, 0, 0]
    assert data.problems == ["a.xml: object 4 (cat): <difficult> 'maybe' is not 0 or 1; taken as 0"]
    path, ds = write_coco(tmp_path / "coco", num_images=2, size=64)
    content = json.loads(path.read_text())
    for ann in content["annotations"]:
        ann["iscrowd"] = "0"
    path.write_text(json.dumps(content))
    coco = COCODetection(path)
    np.testing.assert_array_equal(coco.label(0), ds[0][1])


def test_class_names_listed_twice_are_refused(tmp_path, write_yolo, demo_recipe):
    """Before: `names: [cat, cat]` mapped the boxes of class id 0 to id 1 in silence."""
    folder, _ = write_yolo(tmp_path / "yolo", num_images=2, size=64)
    content = yaml.safe_load((folder / "data.yaml").read_text())
    (folder / "data.yaml").write_text(yaml.safe_dump({**content, "names": ["circle", "circle", "triangle"]}))
    with pytest.raises(DatasetError, match=r"data.yaml: 'names' lists 'circle' more than once"):
        YOLOTxtDetection(folder)
    with pytest.raises(ValueError, match=r"data.classes must be a list of distinct class names .*got \['a', 'b', 'a'\]"):
        api.load(demo_recipe, ["data.classes=[a, b, a]"])


def test_a_byte_order_mark_is_not_part_of_the_first_line(tmp_path, write_yolo):
    """Before: a split file or label file saved by a Windows editor lost its first line (`\\ufeffa` is no id)."""
    root = tmp_path / "voc"
    for name in ("a", "b"):
        photo(root / "JPEGImages" / f"{name}.jpg")
        voc_xml(root, name, [("cat", 5, 5, 30, 30)])
    (root / "ImageSets/Main").mkdir(parents=True)
    (root / "ImageSets/Main/train.txt").write_bytes("a\r\nb\r\n".encode("utf-8-sig"))
    assert ids(VOCDetection(root, "train")) == ["a", "b"]
    folder, sets = write_yolo(tmp_path / "yolo", num_images=2, size=64)
    label = folder / "labels/train" / f"{sets['train'].image_id(0)}.txt"
    label.write_bytes(label.read_text().encode("utf-8-sig"))
    data = YOLOTxtDetection(folder)
    assert data.problems == [] and len(data.label(0)) == len(sets["train"][0][1])


def test_images_in_both_splits_are_said_in_train_and_data_check(tmp_path, demo_recipe, invoke, sets):
    from gluon_yolo3.engine.builders import build_run_data
    root = tmp_path / "voc"
    for k in range(4):
        photo(root / "JPEGImages" / f"i{k}.jpg")
        voc_xml(root, f"i{k}", [("cat", 5, 5, 30, 30)])
    (root / "ImageSets/Main").mkdir(parents=True)
    (root / "ImageSets/Main/trainval.txt").write_text("i0\ni1\ni2\n")
    (root / "ImageSets/Main/test.txt").write_text("i2\ni3\n")
    logged = []
    build_run_data(api.load(demo_recipe, [f"data.root={root}"]), tmp_path / "run", False, logged.append)
    expected = ("warning: 1 of the 2 validation image(s) are in data.train too (i2.jpg): the validation figure counts "
                "photos the network trained on")
    assert expected in logged
    result = invoke("data", "check", demo_recipe, "--out", tmp_path / "check", "--no-progress",
                    *sets(TINY + [f"data.root={root}"]))
    assert result.exit_code == 0 and expected in result.output


@pytest.mark.slow
def test_one_bad_file_in_each_split_never_ends_a_run(tmp_path, demo_recipe, invoke, sets):
    """Before: a zero-byte photo stopped `train` in its first epoch; an HTML page in the validation split ended the
    run at the first validation, after a whole epoch, with no checkpoint."""
    root = tmp_path / "voc"
    for k in range(6):
        photo(root / "JPEGImages" / f"i{k}.jpg", seed=k)
        voc_xml(root, f"i{k}", [("cat", 5, 5, 30, 30)])
    (root / "ImageSets/Main").mkdir(parents=True)
    (root / "ImageSets/Main/trainval.txt").write_text("i0\ni1\ni2\ni3\n")
    (root / "ImageSets/Main/test.txt").write_text("i4\ni5\n")
    (root / "JPEGImages/i1.jpg").write_bytes(b"")
    (root / "JPEGImages/i5.jpg").write_text("<html>moved</html>")
    result = invoke("train", demo_recipe, "--workdir", tmp_path / "run", "--no-progress",
                    *sets(TINY + [f"data.root={root}", "train.val_every=1"]))
    assert result.exit_code == 0, result.output
    assert f"data.train: {root / 'JPEGImages/i1.jpg'}: unreadable image: empty file (0 bytes); image " \
           "skipped" in result.output
    assert f"data.val: {root / 'JPEGImages/i5.jpg'}: unreadable image: not an image" in result.output
    assert (tmp_path / "run/checkpoints/epoch_0001.params").is_file()
