"""COCO metric: equal to a direct pycocotools run on the JSON files it writes; hand cases."""
import contextlib
import io
import json
import math

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from gluon_yolo3.evaluation.coco import COCOMetric, xyxy_to_xywh
from gluon_yolo3.registry import METRICS

CLASSES = ("cat", "dog", "bird", "boat")  # "boat" never appears in the random cases: NaN
STAT_KEYS = ("map", "ap50", "ap75", "ap_small", "ap_medium", "ap_large",
             "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large")


def random_image(rng, num_classes=3, size=400.0):
    """One image: preds (K, 4), ids, scores (with -1 padding rows); gts (M, 4), ids, difficult.

    Box sides from 6 to 200 pixels, so that small, medium and large objects all occur; some images have no
    ground truth, some no detections; detections are jittered gts (right or wrong class) and random boxes."""
    m = rng.choice([0, 0, 1, 3, 6])
    xy = rng.uniform(0, size * 0.5, (m, 2))
    wh = np.exp(rng.uniform(np.log(6), np.log(200), (m, 2)))
    gt_boxes = np.concatenate([xy, xy + wh], axis=1)
    gt_ids = rng.integers(0, num_classes, m)
    difficult = (rng.uniform(size=m) < 0.15).astype(int)
    src = rng.integers(0, m, rng.integers(0, 2 * m + 1)) if m else np.zeros(0, int)
    near = gt_boxes[src] + rng.normal(0, 0.08, (len(src), 4)) * np.tile(wh[src], 2) if m else np.zeros((0, 4))
    near_ids = np.where(rng.uniform(size=len(src)) < 0.8, gt_ids[src], rng.integers(0, num_classes, len(src)))
    r = rng.integers(0, 4) if rng.uniform() < 0.8 else 0
    xy = rng.uniform(0, size * 0.6, (r, 2))
    far = np.concatenate([xy, xy + rng.uniform(5, size * 0.4, (r, 2))], axis=1)
    pred_boxes = np.concatenate([near, far]).astype(np.float32)
    pred_ids = np.concatenate([near_ids, rng.integers(0, num_classes, r)]).astype(np.float32)
    pred_scores = rng.uniform(0.01, 1, len(pred_ids)).astype(np.float32)
    pad = rng.integers(0, 3)
    pred_boxes = np.concatenate([pred_boxes, -np.ones((pad, 4), np.float32)])
    pred_ids = np.concatenate([pred_ids, -np.ones(pad, np.float32)])
    pred_scores = np.concatenate([pred_scores, -np.ones(pad, np.float32)])
    return (pred_boxes, pred_ids, pred_scores), (gt_boxes.astype(np.float32), gt_ids, difficult)


def direct_cocoeval(gt_json, res_json, cat_ids=None, iou_thrs=None):
    """pycocotools alone, from the files: COCO(gt).loadRes(res), evaluate, accumulate, summarize."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_json))
        dt = gt.loadRes(str(res_json))
        ev = COCOeval(gt, dt, iouType="bbox")
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        if iou_thrs is not None:
            ev.params.iouThrs = np.array(iou_thrs)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def same(ours, theirs, tol=1e-12):
    """Our NaN stands for pycocotools' -1 (nothing to average)."""
    if theirs == -1:
        return math.isnan(ours)
    return abs(ours - theirs) <= tol


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coco_equals_direct_pycocotools(tmp_path, seed):
    rng = np.random.default_rng(seed)
    metric = COCOMetric(CLASSES)
    for _ in range(25):
        (pb, pi, ps), (gb, gi, gd) = random_image(rng)
        metric.update(pb, pi, ps, gb, gi, gd)
    ours = metric.compute()
    gt_json, res_json = tmp_path / "gt.json", tmp_path / "res.json"
    metric.write_ground_truth_json(gt_json)
    metric.write_results_json(res_json)
    records = json.loads(res_json.read_text())
    assert records and set(records[0]) == {"image_id", "category_id", "bbox", "score"}

    stats = direct_cocoeval(gt_json, res_json)
    for key, theirs in zip(STAT_KEYS, stats):
        assert same(ours[key], theirs), (key, ours[key], theirs)
    # the random boxes cover every size range and some AP is neither 0 nor 1
    assert all(not math.isnan(ours[k]) for k in ("ap_small", "ap_medium", "ap_large"))
    assert 0.05 < ours["map"] < 0.95

    # per class: pycocotools restricted to that one category
    for k, name in enumerate(CLASSES):
        theirs = direct_cocoeval(gt_json, res_json, cat_ids=[k + 1])
        assert same(ours["per_class"][name], theirs[0]), name
        assert same(ours["per_class_ap50"][name], theirs[1]), name
    assert math.isnan(ours["per_class"]["boat"])

    # AP at the single IoU 0.5 by size: pycocotools with iouThrs = [0.5]
    theirs = direct_cocoeval(gt_json, res_json, iou_thrs=[0.5])
    by_size = ours["ap_iou_by_size"]
    for area, theirs_value in zip(("all", "small", "medium", "large"), (theirs[0], *theirs[3:6])):
        assert same(by_size[area], theirs_value), area
    assert same(by_size["all"], stats[1])


def test_iou_thresh_outside_cocos_ten(tmp_path):
    """AP at IoU 0.3 by size: its own COCOeval run, equal to pycocotools with iouThrs = [0.3]."""
    rng = np.random.default_rng(7)
    metric = COCOMetric(CLASSES, iou_thresh=0.3)
    for _ in range(20):
        (pb, pi, ps), (gb, gi, gd) = random_image(rng)
        metric.update(pb, pi, ps, gb, gi, gd)
    ours = metric.compute()
    metric.write_ground_truth_json(tmp_path / "gt.json")
    metric.write_results_json(tmp_path / "res.json")
    theirs = direct_cocoeval(tmp_path / "gt.json", tmp_path / "res.json", iou_thrs=[0.3])
    for area, value in zip(("all", "small", "medium", "large"), (theirs[0], *theirs[3:6])):
        assert same(ours["ap_iou_by_size"][area], value), area
    assert ours["ap_iou_by_size"]["all"] >= ours["ap50"]  # a looser IoU finds at least as much
    assert same(ours["map"], direct_cocoeval(tmp_path / "gt.json", tmp_path / "res.json")[0])


def test_counts_and_registry():
    metric = METRICS.build({"type": "coco", "iou_thresh": 0.5}, class_names=list(CLASSES))
    assert isinstance(metric, COCOMetric)
    metric.update([[0, 0, 10, 10], [5, 5, 20, 20], [-1, -1, -1, -1]], [0, 1, -1], [0.9, 0.8, -1],
                  [[0, 0, 10, 10], [1, 1, 30, 30], [2, 2, 9, 9]], [0, 2, 0], [0, 0, 1])
    out = metric.compute()
    assert out["metric"] == "coco"
    assert out["num_gt"] == {"cat": 1, "dog": 0, "bird": 1, "boat": 0}  # difficult not counted
    assert out["num_det"] == {"cat": 1, "dog": 1, "bird": 0, "boat": 0}
    assert out["num_images"] == 1
    gt = metric.ground_truth()
    assert [a["iscrowd"] for a in gt["annotations"]] == [0, 0, 1]
    assert [a["id"] for a in gt["annotations"]] == [1, 2, 3]
    assert [c["id"] for c in gt["categories"]] == [1, 2, 3, 4]
    assert metric.results()[1] == {"image_id": 0, "category_id": 2, "bbox": [5.0, 5.0, 15.0, 15.0],
                                   "score": pytest.approx(0.8)}
    assert "Average Precision" in metric.summary_text
    with pytest.raises(ValueError, match="iou_thresh"):
        COCOMetric(CLASSES, iou_thresh=1.5)
    with pytest.raises(ValueError, match="only 4 classes"):
        metric.update([[0, 0, 1, 1]], [7], [0.5], np.zeros((0, 4)), [])


def test_xyxy_to_xywh():
    np.testing.assert_array_equal(xyxy_to_xywh([[1, 2, 11, 22], [5, 5, 4, 4]]),
                                  [[1, 2, 10, 20], [5, 5, 0, 0]])


def test_perfect_none_and_difficult(capsys):
    gt_boxes = np.array([[10, 10, 60, 50], [100, 80, 300, 260], [5, 200, 20, 215]], np.float64)
    gt_ids = np.array([0, 1, 0])

    perfect = COCOMetric(CLASSES[:2])
    perfect.update(gt_boxes, gt_ids, [0.9, 0.8, 0.7], gt_boxes, gt_ids)
    perfect.update(np.zeros((0, 4)), [], [], np.zeros((0, 4)), [])  # an empty image changes nothing
    out = perfect.compute()
    for key in ("map", "ap50", "ap75", "ar100"):
        assert out[key] == pytest.approx(1.0, abs=1e-12)  # pycocotools divides by tp + fp + eps
    for key in ("ap_small", "ap_large"):
        assert out[key] == pytest.approx(1.0, abs=1e-12)
    assert out["per_class"]["cat"] == pytest.approx(1.0, abs=1e-12)

    none = COCOMetric(CLASSES[:2])
    none.update(np.zeros((0, 4)), [], [], gt_boxes, gt_ids)
    out = none.compute()
    assert out["map"] == 0.0 and out["ap50"] == 0.0 and out["ar100"] == 0.0
    assert out["per_class"] == {"cat": 0.0, "dog": 0.0}

    # a detection on a difficult (crowd) box is neither TP nor FP; the difficult box is not a positive
    difficult = COCOMetric(CLASSES[:2])
    difficult.update(gt_boxes, [0, 1, 1], [0.9, 0.8, 0.95], gt_boxes, [0, 1, 1], [0, 0, 1])
    out = difficult.compute()
    assert out["map"] == pytest.approx(1.0, abs=1e-12)
    assert out["num_gt"] == {"cat": 1, "dog": 1}
    assert capsys.readouterr().out == ""  # pycocotools' printing is captured
