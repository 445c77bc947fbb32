"""VOC AP against GluonCV and by hand; plotting smoke tests."""
import json
import math

import numpy as np
import pytest
from gluoncv.utils.metrics.voc_detection import VOC07MApMetric, VOCMApMetric

from gluon_yolo3.drawing import draw_detections
from gluon_yolo3.evaluation.plots import plot_training
from gluon_yolo3.evaluation.voc import match_detections, VOCMeanAP
from gluon_yolo3.registry import METRICS

CLASSES = ("cat", "dog", "bird", "car", "boat")  # "boat" never appears: NaN


def random_image(rng, num_classes=4, size=300.0):
    """One image: gts (M, 4), ids, difficult; preds (K, 4), ids, scores padded with -1 rows."""
    m = rng.choice([0, 0, 1, 3, 6])  # some images without ground truth
    xy = rng.uniform(0, size * 0.7, (m, 2))
    gt_boxes = np.concatenate([xy, xy + rng.uniform(10, size * 0.3, (m, 2))], axis=1)
    gt_ids = rng.integers(0, num_classes, m)
    difficult = (rng.uniform(size=m) < 0.2).astype(int)

    # detections: jittered gts (right or wrong class, duplicates) and random boxes
    src = rng.integers(0, m, rng.integers(0, 2 * m + 1)) if m else np.zeros(0, int)
    jitter = rng.normal(0, 6, (len(src), 4))
    near = gt_boxes[src] + jitter
    near_ids = np.where(rng.uniform(size=len(src)) < 0.8, gt_ids[src], rng.integers(0, num_classes, len(src)))
    r = rng.integers(0, 4) if rng.uniform() < 0.85 else 0  # some images without detections
    xy = rng.uniform(0, size * 0.7, (r, 2))
    far = np.concatenate([xy, xy + rng.uniform(10, size * 0.3, (r, 2))], axis=1)
    pred_boxes = np.concatenate([near, far])
    pred_ids = np.concatenate([near_ids, rng.integers(0, num_classes, r)])
    pred_scores = rng.uniform(0.01, 1, len(pred_ids))
    pad = rng.integers(0, 3)
    pred_boxes = np.concatenate([pred_boxes, -np.ones((pad, 4))])
    pred_ids = np.concatenate([pred_ids, -np.ones(pad)])
    pred_scores = np.concatenate([pred_scores, -np.ones(pad)])
    return (pred_boxes, pred_ids.astype(np.float32), pred_scores), (gt_boxes, gt_ids, difficult)


@pytest.mark.parametrize("use_07", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_equals_gluoncv(seed, use_07):
    rng = np.random.default_rng(seed)
    ours = VOCMeanAP(CLASSES, iou_thresh=0.5, use_07_metric=use_07)
    theirs = (VOC07MApMetric if use_07 else VOCMApMetric)(iou_thresh=0.5, class_names=list(CLASSES))
    for _ in range(40):
        (pb, pi, ps), (gb, gi, gd) = random_image(rng)
        ours.update(pb, pi, ps, gb, gi, gd)
        theirs.update(pb[None], pi[None], ps[None], gb[None], gi[None], gd[None])
    res = ours.compute()
    names, values = theirs.get()
    assert res["metric"] == ("voc07" if use_07 else "voc")
    assert names[-1] == "mAP"
    expected = dict(zip(names[:-1], values[:-1]))
    assert math.isnan(res["per_class"]["boat"]) and math.isnan(expected["boat"])
    for name in CLASSES:
        np.testing.assert_allclose(res["per_class"][name], expected[name], rtol=0, atol=1e-9, err_msg=name)
    np.testing.assert_allclose(res["map"], values[-1], rtol=0, atol=1e-9)
    assert 0 < res["map"] < 1


def test_equals_gluoncv_without_difficult_argument():
    rng = np.random.default_rng(11)
    ours = VOCMeanAP(CLASSES)
    theirs = VOC07MApMetric(class_names=list(CLASSES))
    for _ in range(20):
        (pb, pi, ps), (gb, gi, _) = random_image(rng)
        ours.update(pb, pi, ps, gb, gi)
        theirs.update(pb[None], pi[None], ps[None], gb[None], gi[None])
    np.testing.assert_allclose(ours.compute()["map"], theirs.get()[1][-1], rtol=0, atol=1e-9)


def hand_case(metric):
    """Class 0: gts A, B and a difficult gt D; detections by score:
    0.95 on D (ignored), 0.9 on A (TP), 0.8 nowhere (FP), 0.75 on A again (FP, A taken), 0.7 on B (TP).
    Counted: TP, FP, FP, TP -> precision 1, 1/2, 1/3, 1/2 at recall 1/2, 1/2, 1/2, 1.
    11-point: t = 0..0.5 (6 points) best precision at recall >= t is 1; t = 0.6..1 (5 points) it is 1/2:
    AP = (6 * 1 + 5 * 1/2) / 11 = 8.5 / 11 = 17/22.
    Area: recall 0 -> 1/2 at precision 1, 1/2 -> 1 at precision 1/2: AP = 0.5 + 0.25 = 3/4.
    Class 1: one gt, no detection: AP 0. Class 2: only a false positive, no gt: NaN, not in the mean.
    """
    a, b, d = [10, 10, 49, 49], [100, 100, 139, 159], [200, 10, 239, 49]
    gt_boxes = np.array([a, b, d, [0, 200, 30, 230]], float)
    gt_ids, difficult = np.array([0, 0, 0, 1]), np.array([0, 0, 1, 0])
    pred_boxes = np.array([d, a, [300, 300, 340, 340], [11, 11, 50, 50], b, [0, 0, 5, 5], [0, 0, 1, 1]], float)
    pred_ids = np.array([0, 0, 0, 0, 0, 2, -1])
    pred_scores = np.array([0.95, 0.9, 0.8, 0.75, 0.7, 0.5, -1])
    metric.update(pred_boxes, pred_ids, pred_scores, gt_boxes, gt_ids, difficult)
    return metric.compute()


def test_hand_computed_11_point():
    res = hand_case(VOCMeanAP(("a", "b", "c"), use_07_metric=True))
    assert res["per_class"]["a"] == pytest.approx(17 / 22, abs=1e-12)
    assert res["per_class"]["b"] == 0.0 and math.isnan(res["per_class"]["c"])
    assert res["map"] == pytest.approx((17 / 22 + 0) / 2, abs=1e-12)
    assert res["num_gt"] == {"a": 2, "b": 1, "c": 0}
    assert res["num_det"] == {"a": 5, "b": 0, "c": 1}


def test_hand_computed_area():
    res = hand_case(METRICS.build({"type": "voc", "iou_thresh": 0.5}, class_names=("a", "b", "c")))
    assert res["metric"] == "voc"
    assert res["per_class"]["a"] == pytest.approx(0.75, abs=1e-12)
    assert res["map"] == pytest.approx(0.375, abs=1e-12)


def test_inclusive_pixel_iou_and_threshold():
    """gt [0,0,9,9] is 10x10 pixels, the detection [0,0,9,4] 10x5: IoU 50/100 = 0.5 >= 0.5 is a TP
    (without the +1 it would be 36/81 < 0.5)."""
    metric = METRICS.build("voc07", class_names=("a",))
    metric.update(np.array([[0, 0, 9, 4]]), [0], [0.9], np.array([[0, 0, 9, 9]]), [0])
    assert metric.compute()["map"] == pytest.approx(1.0)
    metric.reset()
    metric.update(np.array([[0, 0, 9, 3.9]]), [0], [0.9], np.array([[0, 0, 9, 9]]), [0])
    assert metric.compute()["map"] == 0.0


def test_match_detections_names_the_ground_truth_taken():
    """Greedy by score, whatever the input order: the 0.9 box takes gt 1 before the 0.8 box can, so the 0.8 box
    (IoU 0.9 with gt 1, 0 with gt 0) is a false positive; the 0.7 box on the difficult gt 2 is ignored (-1)
    and still names it; a box on nothing is a false positive without a ground truth."""
    gt = np.array([[0, 0, 9, 9], [20, 0, 29, 9], [40, 0, 49, 9]])
    preds = np.array([[21, 0, 29, 9], [40, 0, 49, 9], [20, 0, 29, 9], [60, 60, 69, 69]])
    scores = np.array([0.8, 0.7, 0.9, 0.6])
    match, took = match_detections(preds, scores, gt, np.array([False, False, True]), 0.5)
    assert match.tolist() == [0, -1, 1, 0]
    assert took.tolist() == [-1, 2, 1, -1]
    match, took = match_detections(preds, scores, np.zeros((0, 4)), np.zeros(0, bool), 0.5)
    assert match.tolist() == [0, 0, 0, 0] and took.tolist() == [-1] * 4


def test_empty_metric_is_nan():
    res = VOCMeanAP(("a", "b")).compute()
    assert math.isnan(res["map"]) and all(math.isnan(v) for v in res["per_class"].values())


def test_plot_training(tmp_path):
    lines = []
    for step in range(1, 41):
        loss = {"loss/xy": 1.0 / step, "loss/wh": 0.5, "loss/obj": 30.0 / step, "loss/cls": 0.6}
        lines.append({"kind": "train", "epoch": 1 + step // 20, "step": step * 10, "lr": 1e-3 * min(1, step / 5),
                      "loss": sum(loss.values()), **loss})
        if step % 20 == 0:
            lines.append({"kind": "val", "epoch": step // 20, "step": step * 10, "map": 0.1 * step / 20})
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in lines) + '\n\n{"kind": "train", "ste')
    png = tmp_path / "training.png"
    plot_training(path, png)  # PathLike accepted
    assert png.stat().st_size > 10000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    plot_training(str(empty), str(tmp_path / "empty.png"))
    assert (tmp_path / "empty.png").stat().st_size > 0


def test_draw_detections(tmp_path):
    import cv2

    image = np.full((120, 160, 3), 40, np.uint8)
    boxes = np.array([[20, 30, 100, 90], [-1, -1, -1, -1]], np.float32)
    ids, scores = np.array([[1], [-1]], np.float32), np.array([[0.87], [-1]], np.float32)
    path = tmp_path / "det.png"
    out = draw_detections(image, boxes, ids, scores, ["cat", "dog"], path=str(path),
                          gt_boxes=np.array([[10, 10, 150, 110]]))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (image == 40).all()  # input untouched
    assert (out[60, 20] != 40).any() and (out[60, 100] != 40).any()  # left and right box edges
    assert (out[60, 60] == 40).all()  # box interior away from the label untouched
    assert (out[60, 10] != 40).any()  # ground truth edge
    written = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(written, out)
