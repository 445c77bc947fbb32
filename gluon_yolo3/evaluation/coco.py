"""COCO detection metrics (AP@[.5:.95], AP50, AP75, AP/AR by size), computed by pycocotools itself.

`COCOMetric` collects per-image ground truth and detections like `VOCMeanAP`, builds an in-memory COCO
ground truth and results set from them, and runs `pycocotools.cocoeval.COCOeval` (bbox) on those: the
numbers are pycocotools' own, equal to a direct pycocotools run on the JSON files `write_ground_truth_json`
and `write_results_json` produce.

Conventions
- Boxes come in x1y1x2y2 pixels and go to COCO as `[x1, y1, x2 - x1, y2 - y1]` (continuous coordinates,
  no `+1`, unlike the VOC metric); a negative width or height is clipped to 0. Ground-truth `area` is the
  box area `w * h` (we have no masks), which is what the small/medium/large ranges are measured on.
- Difficult ground truth becomes `iscrowd=1`, so that COCOeval ignores it: it is not counted as a positive,
  and detections matching it (crowd IoU: intersection over the detection's area) are neither TP nor FP.
- Ids: `image_id` is the image's position in the order of `update` calls, starting at 0 (for
  `detect_dataset` results that is the dataset index); `category_id` is class index + 1; annotation ids
  start at 1 (pycocotools treats id 0 as "unmatched").
- COCOeval's defaults: IoU thresholds 0.50:0.05:0.95, at most 100 detections per image and class
  (highest scores) for AP, area ranges small < 32^2 <= medium < 96^2 <= large (pycocotools' bounds are
  inclusive at both ends). Where pycocotools reports -1 (no ground truth in that range or class) we
  report NaN, as the VOC metric does for a class without ground truth.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval, Params

from ..registry import METRICS
from .voc import image_inputs

COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
SIZES = ("small", "medium", "large")
_STAT_KEYS = ("map", "ap50", "ap75", "ap_small", "ap_medium", "ap_large",
              "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large")


def xyxy_to_xywh(boxes) -> np.ndarray:
    """`(N, 4)` x1y1x2y2 -> COCO `[x, y, w, h]` float64, width and height clipped at 0."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = boxes.copy()
    out[:, 2:] = np.maximum(boxes[:, 2:] - boxes[:, :2], 0.0)
    return out


def coco_categories(class_names: Sequence[str]) -> List[Dict[str, Any]]:
    """COCO categories: `[{"id": index + 1, "name": name}, ...]`."""
    return [{"id": c + 1, "name": str(name), "supercategory": "object"} for c, name in enumerate(class_names)]


def _quiet(fn, *args, **kwargs):
    """Call `fn`, capturing what pycocotools prints; returns (result, captured text)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        out = fn(*args, **kwargs)
    return out, buffer.getvalue()


def _nan_if_missing(value: float) -> float:
    value = float(value)
    return float("nan") if value == -1 else value


def write_json(obj: Any, path) -> Path:
    """Write `obj` as JSON (floats at full precision, so pycocotools reads back the same numbers)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh)
    return path


class COCOMetric:
    """COCO bbox AP and AR by pycocotools' COCOeval, accumulated one image at a time.

    `update(...)` per image, then `compute()`. See the module docstring for box, id and difficult rules.
    `iou_thresh` chooses the IoU of the extra single-threshold numbers `ap_iou_by_size` and
    `per_class_ap_iou` (another COCOeval run, with only that threshold, when it is not one of COCO's
    0.50:0.05:0.95); `map` is always AP@[.5:.95].
    """

    def __init__(self, class_names: Sequence[str], iou_thresh: float = 0.5):
        self.class_names = tuple(class_names)
        if not 0.0 < float(iou_thresh) < 1.0:
            raise ValueError(f"coco metric: iou_thresh must be in (0, 1), got {iou_thresh}")
        close = np.isclose(COCO_IOU_THRESHOLDS, float(iou_thresh))
        self.iou_thresh = float(COCO_IOU_THRESHOLDS[close.argmax()]) if close.any() else float(iou_thresh)
        self.summary_text = ""
        self.reset()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def reset(self):
        """Forget every image seen so far."""
        self._images: List[Dict[str, Any]] = []
        self._gt: List[Dict[str, Any]] = []
        self._dets: List[Dict[str, Any]] = []
        self._num_gt = np.zeros(self.num_classes, dtype=np.int64)
        self._num_det = np.zeros(self.num_classes, dtype=np.int64)
        self._evals: Dict[Any, Any] = {}

    def update(self, pred_boxes, pred_ids, pred_scores, gt_boxes, gt_ids, gt_difficult=None,
               file_name: Optional[str] = None):
        """Add one image. preds `(K, 4)`, `(K,)`, `(K,)` (ids < 0 are padding); gts `(M, 4)`, `(M,)`,
        `(M,)` (ids < 0 are padding; difficult 0/1, default all 0). Boxes x1y1x2y2 pixels. `file_name`: the
        image's, kept in the ground truth's `images` (so a report's ids lead back to the photos)."""
        pred_boxes, pred_ids, pred_scores, gt_boxes, gt_ids, gt_difficult = image_inputs(
            self.class_names, pred_boxes, pred_ids, pred_scores, gt_boxes, gt_ids, gt_difficult)
        image_id = len(self._images)
        self._images.append({"id": image_id} if file_name is None else {"id": image_id, "file_name": file_name})
        for box, c, difficult in zip(xyxy_to_xywh(gt_boxes).tolist(), gt_ids.tolist(), gt_difficult.tolist()):
            self._gt.append({"id": len(self._gt) + 1, "image_id": image_id, "category_id": c + 1,
                             "bbox": box, "area": box[2] * box[3], "iscrowd": int(difficult)})
        for box, c, score in zip(xyxy_to_xywh(pred_boxes).tolist(), pred_ids.tolist(),
                                 np.asarray(pred_scores, dtype=np.float64).tolist()):
            self._dets.append({"image_id": image_id, "category_id": c + 1, "bbox": box, "score": score})
        self._num_gt += np.bincount(gt_ids[~gt_difficult], minlength=self.num_classes)
        self._num_det += np.bincount(pred_ids, minlength=self.num_classes)
        self._evals: Dict[Any, Any] = {}

    # ---- COCO data ------------------------------------------------------------------------------
    def ground_truth(self) -> Dict[str, Any]:
        """The COCO ground-truth dataset (images, annotations, categories) of the images seen so far."""
        return {"info": {"description": "gluon-yolo3 ground truth"},
                "images": copy.deepcopy(self._images),
                "annotations": copy.deepcopy(self._gt),
                "categories": coco_categories(self.class_names)}

    def results(self) -> List[Dict[str, Any]]:
        """The detections in COCO results format: `[{"image_id", "category_id", "bbox": [x, y, w, h],
        "score"}, ...]`."""
        return copy.deepcopy(self._dets)

    def write_ground_truth_json(self, path) -> Path:
        return write_json(self.ground_truth(), path)

    def write_results_json(self, path) -> Path:
        return write_json(self.results(), path)

    # ---- evaluation -----------------------------------------------------------------------------
    def evaluate(self, iou_thresholds: Optional[Sequence[float]] = None):
        """Run COCOeval (evaluate, accumulate, summarize) quietly; returns the COCOeval object (cached).

        `iou_thresholds`: None for COCO's ten, whose printed summary is kept in `self.summary_text`."""
        key = None if iou_thresholds is None else tuple(float(t) for t in iou_thresholds)
        if key in self._evals:
            return self._evals[key]
        gt = COCO()
        gt.dataset = self.ground_truth()
        _quiet(gt.createIndex)
        if self._dets:
            dt, _ = _quiet(gt.loadRes, self.results())
        else:  # loadRes cannot take an empty list; an empty results set scores 0 wherever there is gt
            dt = COCO()
            dt.dataset = {"images": copy.deepcopy(self._images), "annotations": [],
                          "categories": coco_categories(self.class_names)}
            _quiet(dt.createIndex)
        evaluator = COCOeval(gt, dt, iouType="bbox")
        if key is not None:
            evaluator.params.iouThrs = np.array(key, dtype=np.float64)
        _quiet(evaluator.evaluate)
        _quiet(evaluator.accumulate)
        _, summary = _quiet(evaluator.summarize)
        if key is None:
            self.summary_text = summary
        self._evals[key] = evaluator
        return evaluator

    def ap(self, iou_thresh: Optional[float] = None, area: str = "all", class_index: Optional[int] = None,
           max_dets: int = 100) -> float:
        """AP from COCOeval's precision table, as `summarize` computes it: at one IoU (None: the mean over
        0.50:0.95; a threshold outside COCO's ten gets its own COCOeval run), one area range ("all",
        "small", "medium", "large"), one class (None: mean over classes); NaN where pycocotools has
        nothing to average (-1)."""
        evaluator = self.evaluate()
        if iou_thresh is not None and not np.isclose(evaluator.params.iouThrs, iou_thresh).any():
            evaluator = self.evaluate([iou_thresh])
        p = evaluator.params
        precision = evaluator.eval["precision"]  # (T, R, K, A, M)
        if iou_thresh is not None:
            precision = precision[np.flatnonzero(np.isclose(p.iouThrs, iou_thresh))]
        s = precision[:, :, :, p.areaRngLbl.index(area), p.maxDets.index(max_dets)]
        if class_index is not None:
            s = s[:, :, class_index]
        s = s[s > -1]
        return float(np.mean(s)) if s.size else float("nan")

    def gt_count_by_size(self) -> Dict[str, int]:
        """Non-difficult ground truth per area range ("all", "small", "medium", "large"), with COCOeval's
        (inclusive) bounds."""
        p = Params(iouType="bbox")
        areas = np.array([g["area"] for g in self._gt if not g["iscrowd"]], dtype=np.float64)
        return {label: int(np.sum((areas >= lo) & (areas <= hi)))
                for label, (lo, hi) in zip(p.areaRngLbl, p.areaRng)}

    def compute(self) -> Dict[str, Any]:
        """`{"metric": "coco", "map": AP@[.5:.95], "ap50", "ap75", "ap_small", "ap_medium", "ap_large",
        "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large", "per_class": {name: AP@[.5:.95]},
        "per_class_ap50", "iou_thresh", "per_class_ap_iou", "ap_iou_by_size": {"all", "small", "medium",
        "large"} (AP at iou_thresh), "num_gt" (non-difficult), "num_det", "num_images"}`."""
        evaluator = self.evaluate()
        out: Dict[str, Any] = {"metric": "coco"}
        out.update({k: _nan_if_missing(v) for k, v in zip(_STAT_KEYS, evaluator.stats)})
        classes = range(self.num_classes)
        out["per_class"] = {n: self.ap(class_index=c) for n, c in zip(self.class_names, classes)}
        out["per_class_ap50"] = {n: self.ap(0.5, class_index=c) for n, c in zip(self.class_names, classes)}
        out["iou_thresh"] = self.iou_thresh
        out["per_class_ap_iou"] = {n: self.ap(self.iou_thresh, class_index=c)
                                   for n, c in zip(self.class_names, classes)}
        out["ap_iou_by_size"] = {a: self.ap(self.iou_thresh, area=a) for a in ("all",) + SIZES}
        out["num_gt"] = dict(zip(self.class_names, self._num_gt.tolist()))
        out["num_det"] = dict(zip(self.class_names, self._num_det.tolist()))
        out["num_images"] = len(self._images)
        return out


@METRICS.register("coco")
def coco(class_names: Sequence[str], iou_thresh: float = 0.5) -> COCOMetric:
    """COCO AP@[.5:.95], AP50, AP75, AP/AR by object size (pycocotools COCOeval)."""
    return COCOMetric(class_names, iou_thresh=iou_thresh)
