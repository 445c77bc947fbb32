"""`data check` (counts, bad annotations with their files, unreadable images, the histogram PNG) and
k-means anchors (`anchors`), checked against hand counts of the files and an independent IoU."""
import json
import xml.etree.ElementTree as ET
from collections import Counter

import cv2
import numpy as np
import pytest
import yaml

from gluon_yolo3.data import cache as cache_mod
from gluon_yolo3.data.check import check_dataset, kmeans_anchors, mean_best_iou, recipe_anchors
from gluon_yolo3.data.voc import VOCDetection



@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(cache_mod.ENV_VAR, str(tmp_path / "cache"))


@pytest.mark.slow
def test_data_check_on_bccd_counts_and_names_the_zero_area_boxes(bccd_root, tmp_path, invoke, repo, sets):
    out = tmp_path / "check"
    result = invoke("data", "check", repo / "recipes/bccd_tiny.yaml", "--out", out, "--no-progress",
                    *sets([f"data.train.root={bccd_root}", f"data.val.root={bccd_root}"]))
    assert result.exit_code == 0, result.output
    # hand count of the XML files of the trainval split: objects per class, minus the two point boxes
    ids = (bccd_root / "ImageSets/Main/trainval.txt").read_text().split()
    counts, points = Counter(), []
    for i in ids:
        for obj in ET.parse(bccd_root / "Annotations" / f"{i}.xml").getroot().iter("object"):
            b = obj.find("bndbox")
            x1, y1, x2, y2 = (float(b.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
            if x1 == x2 or y1 == y2:
                points.append(i)
                continue
            counts[obj.find("name").text] += 1
    assert sorted(points) == ["BloodImage_00338", "BloodImage_00343"]
    report = json.loads((out / "data_check.json").read_text())["train"]
    assert report["images"] == len(ids) and report["boxes_per_class"] == dict(counts)
    assert report["empty_images"] == 0 and report["unreadable"] == []
    for name in points:
        assert sum(p.startswith(f"{name}.xml: ") and "zero-area" in p for p in report["problems"]) == 1
        assert f"{name}.xml: zero-area box" in result.output
    png = cv2.imread(str(out / "box_stats.png"))
    assert png is not None and png.shape[0] > 300 and png.shape[1] > 600
    assert f"{sum(counts.values())} boxes" in result.output
    # bad boxes never reach training: the dataset drops them (13 of 14 objects on image 338)
    ds = VOCDetection(bccd_root)
    i338 = [ds.image_id(i) for i in range(len(ds))].index("BloodImage_00338")
    label = ds.label(i338)
    assert len(label) == 13 and ((label[:, 2:4] - label[:, :2]) >= 1).all()


@pytest.fixture
def broken_yolo(write_yolo):
    """broken_yolo(tmp_path) -> (folder, ids): a YOLO folder with bad labels, an empty image and a truncated one."""
    def broken_yolo(tmp_path):
        folder, sets_ = write_yolo(tmp_path / "yolo", num_images=6, size=80)
        ids = [sets_["train"].image_id(i) for i in range(6)]
        (folder / "labels/train" / f"{ids[0]}.txt").write_text(
            "0 0.5 0.5 0.2 0.2\n"      # fine
            "1 0.5 0.5 0.0 0.2\n"      # zero-area
            "2 0.5 0.5 -0.2 0.2\n"     # inverted (negative width)
            "5 0.5 0.5 0.1 0.1\n"      # unknown class
            "0 1.5 1.5 0.2 0.2\n")     # outside the image
        (folder / "labels/train" / f"{ids[1]}.txt").write_text("")          # empty image
        image = folder / "images/train" / f"{ids[2]}.png"
        image.write_bytes(image.read_bytes()[:200])                        # header fine, pixels truncated
        return folder, ids
    return broken_yolo


@pytest.mark.slow
def test_data_check_lists_every_bad_annotation_with_its_file(tmp_path, invoke, repo, broken_yolo):
    folder, ids = broken_yolo(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"_base_: {repo / 'recipes/demo_tiny.yaml'}\nname: broken\ntrain: {{batch_size: 2}}\n"
                      f"data:\n  train: {{type: yolo, root: {folder}, split: train}}\n"
                      f"  val: {{type: yolo, root: {folder}, split: val}}\n")
    out = tmp_path / "check"
    result = invoke("data", "check", recipe, "--out", out, "--split", "train", "--no-progress")
    assert result.exit_code == 0, result.output
    where = f"labels/train/{ids[0]}.txt"
    for words in ("zero-area", "inverted", "unknown class id 5", "outside"):
        assert any(line.strip().startswith(f"problem: {where}") and words in line
                   for line in result.output.splitlines()), (words, result.output)
    assert f"problem: images/train/{ids[2]}.png: truncated image" in result.output   # dropped at construction
    report = json.loads((out / "data_check.json").read_text())["train"]
    assert report["unreadable"] == [] and len(report["problems"]) == 5
    assert report["empty_images"] == 1 and report["empty_ids"] == [ids[1]]
    assert list(json.loads((out / "data_check.json").read_text())) == ["train", "train_build"]
    assert (out / "box_stats.png").is_file()
    strict = invoke("data", "check", recipe, "--out", out, "--split", "train", "--strict", "--no-progress")
    assert strict.exit_code == 1
    missing = invoke("data", "check", tmp_path / "nowhere.yaml")
    assert missing.exit_code == 2 and "nowhere.yaml" in missing.output
    bad_split = invoke("data", "check", recipe, "--split", "test")
    assert bad_split.exit_code == 2 and "--split" in bad_split.output


def test_data_check_finds_missing_coco_images(tmp_path, write_coco):
    path, ds = write_coco(tmp_path / "coco", num_images=5, size=64)
    (tmp_path / "coco/images" / f"{ds.image_id(3)}.png").unlink()
    from gluon_yolo3.data.coco import COCODetection
    report = check_dataset(COCODetection(path))          # found when the dataset is built, and skipped
    assert report["images"] == 4 and report["unreadable"] == []
    assert [p for p in report["problems"] if f"{ds.image_id(3)}.png" in p] == [
        f"{tmp_path / 'coco/images' / ds.image_id(3)}.png: unreadable image: cannot open it (No such file or "
        "directory); image skipped"]
    expected = Counter(ds.classes[int(c)] for i in range(len(ds)) if i != 3 for c in ds[i][1][:, 4])
    assert report["boxes_per_class"] == {c: expected[c] for c in ds.classes}
    unchecked = check_dataset(COCODetection(path, check_images=False))      # found when decoded
    assert unchecked["unreadable"] == [ds.image_id(3)] and len(unchecked["problems"]) == 1


# ----------------------------------------------------------------------------------------- anchors

def gluoncv_mean_best_iou(wh, anchors):
    """Reference: boxes and anchors as corner boxes centred on the origin, IoU by GluonCV's bbox_iou."""
    from gluoncv.utils.bbox import bbox_iou
    boxes = np.concatenate([-wh / 2, wh / 2], axis=1)
    ab = np.concatenate([-anchors / 2, anchors / 2], axis=1)
    return float(bbox_iou(boxes, ab, offset=0).max(axis=1).mean())


def clustered_shapes(seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[12, 30], [40, 40], [120, 70]], float)
    wh = np.concatenate([c * np.exp(rng.normal(0, 0.05, (200, 2))) for c in centres])
    return wh[rng.permutation(len(wh))], centres


def test_kmeans_finds_the_clusters_sorted_by_area_and_is_seeded():
    wh, centres = clustered_shapes()
    anchors = kmeans_anchors(wh, 3, seed=0)
    np.testing.assert_allclose(anchors, centres, rtol=0.05)
    assert np.all(np.diff(anchors[:, 0] * anchors[:, 1]) > 0)
    np.testing.assert_array_equal(anchors, kmeans_anchors(wh, 3, seed=0))
    assert abs(mean_best_iou(wh, anchors) - gluoncv_mean_best_iou(wh, anchors)) < 1e-9
    assert mean_best_iou(wh, anchors) > 0.9
    worse = np.array([[10, 10], [50, 50], [100, 100]], float)
    assert abs(mean_best_iou(wh, worse) - gluoncv_mean_best_iou(wh, worse)) < 1e-9
    assert mean_best_iou(wh, worse) < mean_best_iou(wh, anchors)
    with pytest.raises(ValueError, match="at least k=9"):
        kmeans_anchors(wh[:5], 9)


def test_anchors_cli_prints_sorted_anchors_and_a_snippet_that_loads(tmp_path, invoke, repo, write_yolo):
    folder, _ = write_yolo(tmp_path / "yolo", num_images=20, size=96)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"_base_: {repo / 'recipes/demo_tiny.yaml'}\nname: shapes\n"
                      f"data:\n  train: {{type: yolo, root: {folder}, split: train}}\n"
                      f"  val: {{type: yolo, root: {folder}, split: val}}\n")
    result = invoke("anchors", recipe, "--k", "6", "--set", "model.input_size=192")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("6 anchors from") and "input size 192" in lines[0]
    printed = np.array([[float(v) for v in line.split()] for line in lines[1:7]])
    assert np.all(np.diff(printed[:, 0] * printed[:, 1]) >= 0)
    snippet = result.output.split("paste into the recipe:\n", 1)[1]
    groups = yaml.safe_load(snippet)["model"]["anchors"]
    assert [len(g) for g in groups] == [3, 3]                     # as the tiny recipe groups them
    np.testing.assert_allclose(np.array(groups).reshape(-1, 2), printed, atol=0.51)
    # the reported IoUs equal the reference computed on the boxes scaled to 192 (letterbox of 96: x2)
    from gluon_yolo3 import api
    from gluon_yolo3.data.build import build_datasets
    cfg = api.load(recipe, ["model.input_size=192"])
    ds = build_datasets(cfg, ("train",))["train"]
    wh = np.concatenate([(ds.label(i)[:, 2:4] - ds.label(i)[:, :2]) * 2 for i in range(len(ds))])
    new = gluoncv_mean_best_iou(wh, np.array(groups, float).reshape(-1, 2))
    old = gluoncv_mean_best_iou(wh, np.array(cfg["model"]["anchors"], float).reshape(-1, 2))
    assert f"mean best IoU: {new:.4f} (these anchors, rounded), {old:.4f}" in result.output
    out = recipe_anchors(cfg, ds, k=6)
    assert out["mean_iou"] >= out["current_mean_iou"] - 0.02
    bad = invoke("anchors", recipe, "--k", "500")
    assert bad.exit_code == 2 and "k=500" in bad.output


def test_bccd_recipes_build_multi_scale_batches(bccd_root, repo):
    """Both BCCD recipes load; darknet53's mosaic + mixup + multi-scale pipeline yields one size per batch."""
    from gluon_yolo3 import api
    from gluon_yolo3.data.pipeline import build_assigner, build_train_batches
    from gluon_yolo3.data.build import build_datasets
    for name in ("bccd_tiny", "bccd_darknet53"):
        cfg = api.load(repo / f"recipes/{name}.yaml", [f"data.train.root={bccd_root}",
                                                       f"data.val.root={bccd_root}"])
        groups = [len(g) for g in cfg["model"]["anchors"]]
        assert groups == ([3, 3] if name == "bccd_tiny" else [3, 3, 3])
    ds = build_datasets(cfg, ("train",))["train"]
    assigner = build_assigner(cfg, cfg["model"]["anchors"], (8, 16, 32), len(ds.classes))
    samples, sampler, batches = build_train_batches(cfg, ds, assigner, batch_size=2, seed=0)
    assert samples.sizes == tuple(range(320, 609, 32))
    sampler.set_epoch(0)
    keys = next(iter(batches))
    outs = [samples[k] for k in keys]
    size = outs[0][0].shape[1]
    assert all(o[0].shape == (3, size, size) for o in outs) and size in samples.sizes
    assert all(o[1].shape == (assigner.num_predictions((size, size)), 13) for o in outs)
