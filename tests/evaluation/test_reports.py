"""Evaluation reports: confusion matrix by hand, PR curves against the VOC metric, written files."""
import contextlib
import io
import json
import math

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from gluon_yolo3.evaluation.reports import (ap_by_size, confusion_matrix, confusion_matrix_png, error_list,
                                            precision_recall_curves, pr_curves_png, write_report)
from gluon_yolo3.evaluation.voc import VOCMeanAP

NAMES = ["cat", "dog", "bird"]
CAT, DOG, BIRD, BG = 0, 1, 2, 3


def image(boxes, ids, scores, gt):
    """One per-image result as `detect_dataset` returns it."""
    return {"boxes": np.asarray(boxes, np.float32).reshape(-1, 4), "ids": np.asarray(ids, np.int64),
            "scores": np.asarray(scores, np.float32), "gt": np.asarray(gt, np.float32).reshape(-1, 6)}


A, B, C, D = [10, 10, 60, 60], [100, 100, 180, 160], [200, 20, 260, 80], [300, 300, 340, 340]
FAR = [0, 200, 40, 240]


def hand_results():
    return [
        image([A, A, B, FAR, C, D], [CAT, CAT, CAT, DOG, BIRD, DOG], [0.9, 0.85, 0.8, 0.7, 0.2, 0.6],
              [A + [CAT, 0], B + [DOG, 0], C + [BIRD, 0], D + [CAT, 1]]),
        #  A: correct (cat, cat); its duplicate: a false positive (background, cat); B: wrong class
        #  (dog, cat); FAR: a false positive (background, dog); C's detection scores below 0.3, so C is
        #  missed (bird, background); the detection on difficult D counts nowhere.
        image([C], [BIRD], [0.5], np.zeros((0, 6))),       # no ground truth: (background, bird)
        image(np.zeros((0, 4)), [], [], [B + [DOG, 0]]),    # no detection: (dog, background)
    ]


def test_confusion_matrix_by_hand():
    expected = np.zeros((4, 4), np.int64)
    expected[CAT, CAT] = 1
    expected[BG, CAT] = 1
    expected[DOG, CAT] = 1
    expected[BG, DOG] = 1
    expected[BIRD, BG] = 1
    expected[BG, BIRD] = 1
    expected[DOG, BG] = 1
    got = confusion_matrix(hand_results(), 3, iou_thresh=0.5, score_thresh=0.3)
    np.testing.assert_array_equal(got, expected)
    assert got.dtype.kind == "i"

    # a lower score threshold lets C's bird detection match: (bird, bird) instead of (bird, background)
    low = confusion_matrix(hand_results(), 3, score_thresh=0.1)
    expected[BIRD, BG], expected[BIRD, BIRD] = 0, 1
    np.testing.assert_array_equal(low, expected)


def test_confusion_matrix_greedy_by_score_regardless_of_class():
    near_a = [12, 11, 61, 62]
    results = [image([A, near_a], [DOG, CAT], [0.95, 0.9], [A + [CAT, 0]])]
    # the higher-scoring dog takes the cat: (cat, dog); the cat detection finds nothing free: (bg, cat)
    expected = np.zeros((4, 4), np.int64)
    expected[CAT, DOG] = 1
    expected[BG, CAT] = 1
    np.testing.assert_array_equal(confusion_matrix(results, 3), expected)
    # IoU below the threshold: a false positive and a miss
    shifted = [image([[40, 40, 90, 90]], [CAT], [0.9], [A + [CAT, 0]])]
    expected = np.zeros((4, 4), np.int64)
    expected[BG, CAT] = 1
    expected[CAT, BG] = 1
    np.testing.assert_array_equal(confusion_matrix(shifted, 3), expected)


def random_results(seed, n_images=20, num_classes=3, size=400.0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_images):
        m = rng.choice([0, 1, 3, 5])
        xy = rng.uniform(0, size * 0.5, (m, 2))
        wh = np.exp(rng.uniform(np.log(8), np.log(180), (m, 2)))
        gt = np.concatenate([xy, xy + wh, rng.integers(0, num_classes, (m, 1)),
                             (rng.uniform(size=(m, 1)) < 0.1)], axis=1)
        src = rng.integers(0, m, rng.integers(0, 2 * m + 1)) if m else np.zeros(0, int)
        near = gt[src, :4] + rng.normal(0, 0.06, (len(src), 4)) * np.tile(wh[src], 2)
        wrong = rng.integers(0, num_classes, len(src))
        near_ids = np.where(rng.uniform(size=len(src)) < 0.8, gt[src, 4], wrong)
        r = rng.integers(0, 3)
        xy = rng.uniform(0, size * 0.6, (r, 2))
        far = np.concatenate([xy, xy + rng.uniform(10, 120, (r, 2))], axis=1)
        ids = np.concatenate([near_ids, rng.integers(0, num_classes, r)])
        out.append(image(np.concatenate([near, far]), ids, rng.uniform(0.01, 1, len(ids)), gt))
    return out


def test_pr_curves_match_voc_area_ap(tmp_path):
    results = random_results(0)
    names = NAMES + ["boat"]  # no ground truth
    curves = precision_recall_curves(results, names)
    voc = VOCMeanAP(names, use_07_metric=False)
    for r in results:
        voc.update(r["boxes"], r["ids"], r["scores"], r["gt"][:, :4], r["gt"][:, 4], r["gt"][:, 5])
    expected = voc.compute()
    for name in NAMES:
        assert curves[name]["ap"] == pytest.approx(expected["per_class"][name], abs=1e-12)
        assert curves[name]["num_gt"] == expected["num_gt"][name]
        rec, prec = curves[name]["recall"], curves[name]["precision"]
        assert np.all(np.diff(rec) >= 0) and np.all((prec >= 0) & (prec <= 1))
    assert math.isnan(curves["boat"]["ap"])


def _check_png(path, min_size=(300, 400)):
    assert path.exists() and path.stat().st_size > 10_000
    pixels = cv2.imread(str(path))
    assert pixels is not None and pixels.shape[0] >= min_size[0] and pixels.shape[1] >= min_size[1]
    assert pixels.std() > 10  # not a blank canvas


def test_pngs_written(tmp_path):
    results = random_results(1)
    _check_png(pr_curves_png(results, NAMES, tmp_path / "pr.png"))
    matrix = confusion_matrix(results, 3)
    _check_png(confusion_matrix_png(matrix, NAMES, tmp_path / "cm.png"))
    with pytest.raises(ValueError, match="does not fit"):
        confusion_matrix_png(matrix, NAMES[:2], tmp_path / "bad.png")
    # nothing at all still draws
    _check_png(pr_curves_png([], NAMES, tmp_path / "empty.png"))


def test_ap_by_size():
    results = [image([[0, 0, 20, 20], [0, 0, 60, 60]], [CAT, CAT], [0.9, 0.8],
                     [[0, 0, 20, 20, CAT, 0], [200, 200, 260, 260, CAT, 0]])]
    out = ap_by_size(results, NAMES)
    assert out["iou_thresh"] == 0.5
    assert out["num_gt"] == {"all": 2, "small": 1, "medium": 1, "large": 0}
    assert out["ap"]["small"] == pytest.approx(1.0, abs=1e-12)  # 20 x 20 found
    assert out["ap"]["medium"] == 0.0                           # 60 x 60 missed
    assert math.isnan(out["ap"]["large"])
    assert out["area_ranges_px2"]["medium"] == [32.0 ** 2, 96.0 ** 2]
    assert math.isnan(out["per_class"]["dog"]["all"])


def test_error_list_by_hand():
    errors = error_list(hand_results(), NAMES, iou_thresh=0.5, score_thresh=0.3)
    fps = [(e["image"], e["class"], e["score"], e["kind"], e["best_iou"]) for e in errors["false_positives"]]
    assert fps == [(0, "cat", pytest.approx(0.85), "duplicate", 1.0),      # A's second cat
                   (0, "cat", pytest.approx(0.8), "wrong_class", 0.0),     # a cat on the dog B
                   (0, "dog", pytest.approx(0.7), "background", 0.0),      # FAR
                   (0, "dog", pytest.approx(0.6), "wrong_class", 0.0),     # a dog on D, a (difficult) cat
                   (1, "bird", pytest.approx(0.5), "background", 0.0)]     # an image without ground truth
    missed = [(e["image"], e["class"], e["box"], e["best_iou"], e["best_score"]) for e in errors["missed"]]
    assert missed == [(0, "dog", B, 0.0, None),                            # nothing of its class touches it
                      (0, "bird", C, 1.0, pytest.approx(0.2)),             # found, but under score_thresh
                      (2, "dog", B, 0.0, None)]                            # difficult D is never missed
    assert errors["counts"] == {"false_positives": {"background": 2, "localisation": 0, "wrong_class": 2,
                                                    "duplicate": 1}, "missed": 3}

    short = {**image([[10, 10, 30, 60]], [CAT], [0.9], [A + [CAT, 0]]), "image": "a.jpg"}  # 21 of A's 51 columns
    errors = error_list([short], NAMES)
    assert errors["false_positives"][0]["kind"] == "localisation" and errors["false_positives"][0]["image"] == "a.jpg"
    assert errors["false_positives"][0]["best_iou"] == pytest.approx(21 / 51)
    assert errors["missed"][0]["best_iou"] == pytest.approx(21 / 51)
    assert errors["missed"][0]["best_score"] == pytest.approx(0.9)
    assert error_list([short], NAMES, iou_thresh=0.4)["false_positives"] == []    # 0.41 passes at 0.4


def test_write_report(tmp_path):
    results = random_results(2)
    metric_result = {"metric": "voc", "map": 0.5, "per_class": {"cat": 0.5, "dog": float("nan")}}
    paths = write_report(results, NAMES, tmp_path / "report", metric_result)
    assert set(paths) == {"pr_curves", "confusion_matrix", "ap_by_size", "ap_by_size_png", "detections",
                          "ground_truth", "errors", "metrics"}
    assert json.loads(paths["errors"].read_text()) == json.loads(json.dumps(error_list(results, NAMES)))
    for key in ("pr_curves", "confusion_matrix", "ap_by_size_png"):
        _check_png(paths[key])
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics["per_class"]["dog"] is None and metrics["map"] == 0.5
    assert len(metrics["confusion_matrix"]["counts"]) == 4
    by_size = json.loads(paths["ap_by_size"].read_text())
    assert set(by_size["ap"]) == {"all", "small", "medium", "large"}

    detections = json.loads(paths["detections"].read_text())
    assert len(detections) == sum(len(r["ids"]) for r in results)
    assert set(detections[0]) == {"image_id", "category_id", "bbox", "score"}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(paths["ground_truth"]))
        dt = gt.loadRes(str(paths["detections"]))
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.iouThrs = np.array([0.5])
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert len(dt.getAnnIds()) == len(detections)
    assert by_size["ap"]["all"] == pytest.approx(ev.stats[0], abs=1e-12)


def test_default_report_folder(tmp_path):
    from gluon_yolo3.evaluation.reports import default_report_folder
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    params = run / "checkpoints" / "best.params"
    params.write_bytes(b"")
    assert default_report_folder(run) == run / "eval"
    assert default_report_folder(run, "train") == run / "eval_train"
    assert default_report_folder(params) == run / "checkpoints" / "eval_best"


def test_format_table_shows_coco_numbers():
    from gluon_yolo3.evaluation.reports import coco_metric
    from gluon_yolo3.evaluation.tables import format_table
    result = coco_metric(random_results(3), NAMES + ["boat"]).compute()
    text = format_table(result)
    assert "AP50" in text and "AP75" in text and "AR100" in text
    assert "small" in text and "medium" in text and "large" in text
    assert text.splitlines()[-4].startswith("mAP (coco)")
    boat = next(line for line in text.splitlines() if line.startswith("boat"))
    assert boat.split()[1:4] == ["no", "ground", "truth"]     # not an AP of 0 (nor n/a): nothing to find
    voc_text = format_table({"metric": "voc07", "map": 0.25, "per_class": {"cat": 0.25, "dog": float("nan")},
                             "num_gt": {"cat": 3, "dog": 0}, "num_det": {"cat": 5, "dog": 0}})
    assert voc_text.splitlines()[0].split() == ["class", "AP", "gt", "dets"]
    assert voc_text.splitlines()[-1].split() == ["mAP", "(voc07)", "0.2500"]
