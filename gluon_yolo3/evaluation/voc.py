"""Pascal VOC detection average precision (per class and mean), numpy.

IoU convention: like the VOC devkit and GluonCV's `VOCMApMetric`, coordinates are treated as inclusive
integer pixels, so a box spans `x2 - x1 + 1` by `y2 - y1 + 1`: we add 1 to `x2, y2` of every predicted and
ground-truth box and then take the plain IoU (`boxes.box_iou`). A detection matches when IoU >= iou_thresh.

Matching, per image and class: detections are visited by descending score; each takes the gt with the
highest IoU (first on ties). IoU below the threshold -> false positive; that gt difficult -> ignored
(neither TP nor FP, however often); that gt already taken -> false positive; else true positive, and the
gt is taken. Difficult gts are not counted as positives.
Equal scores keep their input order (stable sort); GluonCV's order for ties is unspecified.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..boxes import box_iou
from ..registry import METRICS

TP, FP = 1, 0


def match_detections(pred_boxes: np.ndarray, pred_scores: np.ndarray, gt_boxes: np.ndarray,
                     gt_difficult: np.ndarray, iou_thresh: float) -> Tuple[np.ndarray, np.ndarray]:
    """Greedy VOC matching of one image and class.

    pred_boxes `(K, 4)`, pred_scores `(K,)`, gt_boxes `(M, 4)`, gt_difficult `(M,)` bool.
    Returns, in the input order, `match` `(K,)` int8: 1 true positive, 0 false positive, -1 ignored
    (difficult); and `gt` `(K,)` int64: the index of the ground truth a true positive or ignored detection
    took, -1 for a false positive.
    """
    k = len(pred_boxes)
    out = np.full(k, FP, dtype=np.int8)
    gt = np.full(k, -1, dtype=np.int64)
    if len(gt_boxes) == 0:
        return out, gt
    iou = box_iou(_inclusive(pred_boxes), _inclusive(gt_boxes))  # (K, M)
    best = iou.argmax(axis=1)
    hit = iou[np.arange(k), best] >= iou_thresh
    taken = np.zeros(len(gt_boxes), dtype=bool)
    for i in np.argsort(-pred_scores, kind="stable"):
        if not hit[i]:
            continue
        g = best[i]
        if gt_difficult[g]:
            out[i], gt[i] = -1, g
        elif not taken[g]:
            out[i], gt[i] = TP, g
            taken[g] = True
    return out, gt


def _inclusive(boxes: np.ndarray) -> np.ndarray:
    """x1y1x2y2 with inclusive pixel ends -> exclusive ends (`x2 + 1`, `y2 + 1`), float64."""
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    boxes[:, 2:] += 1
    return boxes


def precision_recall(scores: np.ndarray, matches: np.ndarray, num_pos: int):
    """Cumulative precision and recall `(D,)` over detections sorted by descending score.

    scores `(D,)`, matches `(D,)` with 1 TP / 0 FP (ignored detections already removed), num_pos > 0.
    """
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(matches[order] == TP)
    fp = np.cumsum(matches[order] == FP)
    return tp / (tp + fp), tp / num_pos


def ap_11_point(prec: np.ndarray, rec: np.ndarray) -> float:
    """VOC2007 AP: mean over recall thresholds 0, 0.1, ..., 1 of the best precision at recall >= t.

    The thresholds are the floats of `np.arange(0, 1.1, 0.1)` as in the devkit (e.g. 0.30000000000000004).
    """
    ap = 0.0
    for t in np.linspace(0.0, 1.0, 11):
        reached = prec[rec >= t]
        ap += (reached.max() if reached.size else 0.0) / 11.0
    return float(ap)


def ap_area(prec: np.ndarray, rec: np.ndarray) -> float:
    """VOC2010+ AP: area under the precision-recall curve made monotone (interpolated) from the right."""
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope
    step = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[step + 1] - mrec[step]) * mpre[step + 1]))


class VOCMeanAP:
    """Pascal VOC mean average precision, accumulated one image at a time.

    `update(...)` per image, then `compute()`; see the module docstring for IoU and matching rules.
    A class without non-difficult ground truth gets AP NaN and is left out of the mean.
    """

    def __init__(self, class_names: Sequence[str], iou_thresh: float = 0.5, use_07_metric: bool = True):
        self.class_names = tuple(class_names)
        self.iou_thresh = float(iou_thresh)
        self.use_07_metric = bool(use_07_metric)
        self.reset()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def reset(self):
        """Forget every image seen so far."""
        c = self.num_classes
        self._num_pos = np.zeros(c, dtype=np.int64)
        self._num_det = np.zeros(c, dtype=np.int64)
        self._scores: List[List[np.ndarray]] = [[] for _ in range(c)]
        self._matches: List[List[np.ndarray]] = [[] for _ in range(c)]

    def update(self, pred_boxes, pred_ids, pred_scores, gt_boxes, gt_ids, gt_difficult=None):
        """Add one image. preds `(K, 4)`, `(K,)`, `(K,)` (ids < 0 are padding); gts `(M, 4)`, `(M,)`,
        `(M,)` (ids < 0 are padding; difficult 0/1, default all 0). Boxes x1y1x2y2 pixels."""
        pred_boxes, pred_ids, pred_scores, gt_boxes, gt_ids, gt_difficult = image_inputs(
            self.class_names, pred_boxes, pred_ids, pred_scores, gt_boxes, gt_ids, gt_difficult)

        self._num_pos += np.bincount(gt_ids[~gt_difficult], minlength=self.num_classes)
        self._num_det += np.bincount(pred_ids, minlength=self.num_classes)
        for c in np.unique(pred_ids):
            mine, gts = pred_ids == c, gt_ids == c
            match, _ = match_detections(pred_boxes[mine], pred_scores[mine], gt_boxes[gts],
                                        gt_difficult[gts], self.iou_thresh)
            counted = match >= 0
            self._scores[c].append(pred_scores[mine][counted])
            self._matches[c].append(match[counted])

    def class_ap(self, c: int) -> float:
        """AP of class index `c` (NaN without non-difficult ground truth)."""
        if self._num_pos[c] == 0:
            return float("nan")
        scores = np.concatenate(self._scores[c]) if self._scores[c] else np.zeros(0)
        matches = np.concatenate(self._matches[c]) if self._matches[c] else np.zeros(0, np.int8)
        prec, rec = precision_recall(scores, matches, int(self._num_pos[c]))
        return ap_11_point(prec, rec) if self.use_07_metric else ap_area(prec, rec)

    def compute(self) -> Dict:
        """`{"metric", "map", "per_class": {name: ap}, "num_gt": {name: n}, "num_det": {name: n}}`.

        num_gt counts non-difficult ground truth, num_det every (non-padding) detection of the class.
        """
        aps = np.array([self.class_ap(c) for c in range(self.num_classes)], dtype=np.float64)
        known = ~np.isnan(aps)
        return {
            "metric": "voc07" if self.use_07_metric else "voc",
            "map": float(aps[known].mean()) if known.any() else float("nan"),
            "per_class": dict(zip(self.class_names, aps.tolist())),
            "num_gt": dict(zip(self.class_names, self._num_pos.tolist())),
            "num_det": dict(zip(self.class_names, self._num_det.tolist())),
        }


def image_inputs(class_names: Sequence[str], pred_boxes, pred_ids, pred_scores, gt_boxes, gt_ids,
                 gt_difficult=None):
    """One image's metric inputs without padding and checked: boxes float64 `(K, 4)`/`(M, 4)`, ids int64,
    scores, difficult bool (default all False). A class id outside `class_names` raises ValueError."""
    pred_boxes, pred_ids, pred_scores = _valid(pred_boxes, pred_ids, pred_scores)
    gt_difficult = np.zeros(len(np.ravel(gt_ids))) if gt_difficult is None else gt_difficult
    gt_boxes, gt_ids, gt_difficult = _valid(gt_boxes, gt_ids, gt_difficult)
    for ids, what in ((pred_ids, "pred_ids"), (gt_ids, "gt_ids")):
        if ids.size and ids.max() >= len(class_names):
            raise ValueError(f"{what} holds class {ids.max()} but there are only "
                             f"{len(class_names)} classes {list(class_names)}")
    return pred_boxes, pred_ids, pred_scores, gt_boxes, gt_ids, gt_difficult.astype(bool)


def _valid(boxes, ids, extra):
    """Drop padding (id < 0): `(N, 4)`, `(N,)`, `(N,)` -> boxes float64, ids int64, extra."""
    ids = np.asarray(ids).reshape(-1)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    extra = np.asarray(extra).reshape(-1)
    if not len(boxes) == len(ids) == len(extra):
        raise ValueError(f"inconsistent lengths: {len(boxes)} boxes, {len(ids)} ids, {len(extra)}")
    keep = ids >= 0
    return boxes[keep], ids[keep].astype(np.int64), extra[keep]


@METRICS.register("voc07")
def voc07(class_names: Sequence[str], iou_thresh: float = 0.5) -> VOCMeanAP:
    """Pascal VOC2007 11-point mean AP."""
    return VOCMeanAP(class_names, iou_thresh=iou_thresh, use_07_metric=True)


@METRICS.register("voc")
def voc(class_names: Sequence[str], iou_thresh: float = 0.5) -> VOCMeanAP:
    """Pascal VOC2010+ mean AP (area under the interpolated precision-recall curve)."""
    return VOCMeanAP(class_names, iou_thresh=iou_thresh, use_07_metric=False)
