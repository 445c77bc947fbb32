"""Evaluation reports from per-image detections (as `runner.detect_dataset` returns them).

Every function takes `results`: one dict per image with `boxes (K, 4)` x1y1x2y2, `scores (K,)`, `ids (K,)`
(original image pixels, padding removed) and `gt (M, 6)` x1y1x2y2, class, difficult (or `(M, 5)`).

- `precision_recall_curves` / `pr_curves_png`: VOC matching (`voc.match_detections`, inclusive-pixel IoU,
  difficult ignored) per class; the AP in the legend is VOC's area AP (equal to the `voc` metric's).
- `confusion_matrix` / `confusion_matrix_png`: class confusions of detections scoring >= score_thresh.
- `ap_by_size`: AP at one IoU for COCO's small / medium / large ground truth (pycocotools, `coco.py`).
- `error_list`: the false positives (why each is one) and the missed ground truth, with their images.
- `write_report`: all of the above, the detections in COCO results format and the metric, into a folder.

Plots use `matplotlib.figure.Figure` with an Agg canvas, never pyplot (see `plots.py`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pycocotools.cocoeval import Params

from ..boxes import box_iou
from ..drawing import class_color
from .coco import SIZES, COCOMetric
from .voc import _inclusive, ap_area, match_detections, precision_recall, TP


def _unpack(r: Mapping[str, np.ndarray]):
    """(pred boxes (K, 4), ids (K,), scores (K,), gt boxes (M, 4), gt ids (M,), difficult (M,) bool),
    padding (id < 0) removed."""
    ids = np.asarray(r["ids"]).reshape(-1).astype(np.int64)
    boxes = np.asarray(r["boxes"], dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(r["scores"], dtype=np.float64).reshape(-1)
    keep = ids >= 0
    gt = np.asarray(r["gt"], dtype=np.float64)
    gt = gt.reshape(-1, gt.shape[-1] if gt.ndim == 2 else 6)
    gt = gt[gt[:, 4] >= 0]
    difficult = gt[:, 5] > 0 if gt.shape[1] > 5 else np.zeros(len(gt), dtype=bool)
    return boxes[keep], ids[keep], scores[keep], gt[:, :4], gt[:, 4].astype(np.int64), difficult


# ---- precision-recall -----------------------------------------------------------------------------
def precision_recall_curves(results: Sequence[Mapping[str, np.ndarray]], class_names: Sequence[str],
                            iou_thresh: float = 0.5) -> Dict[str, Dict[str, Any]]:
    """Per class name: `{"precision", "recall"}` (over detections by descending score, difficult-matched
    ones removed), `"ap"` (VOC area AP; NaN without ground truth), `"num_gt"` (non-difficult), `"num_det"`."""
    c = len(class_names)
    num_gt = np.zeros(c, dtype=np.int64)
    scores: List[List[np.ndarray]] = [[] for _ in range(c)]
    matches: List[List[np.ndarray]] = [[] for _ in range(c)]
    for r in results:
        boxes, ids, sc, gt_boxes, gt_ids, difficult = _unpack(r)
        num_gt += np.bincount(gt_ids[~difficult], minlength=c)[:c]
        for k in np.unique(ids):
            mine, gts = ids == k, gt_ids == k
            match, _ = match_detections(boxes[mine], sc[mine], gt_boxes[gts], difficult[gts], iou_thresh)
            scores[k].append(sc[mine][match >= 0])
            matches[k].append(match[match >= 0])
    out = {}
    for k, name in enumerate(class_names):
        s = np.concatenate(scores[k]) if scores[k] else np.zeros(0)
        m = np.concatenate(matches[k]) if matches[k] else np.zeros(0, np.int8)
        if num_gt[k] == 0:
            prec, rec, ap = np.zeros(0), np.zeros(0), float("nan")
        else:
            prec, rec = precision_recall(s, m, int(num_gt[k]))
            ap = ap_area(prec, rec)
        out[name] = {"precision": prec, "recall": rec, "ap": ap, "num_gt": int(num_gt[k]),
                     "num_det": int(len(s)), "num_tp": int(np.sum(m == TP))}
    return out


def _envelope(prec: np.ndarray, rec: np.ndarray):
    """The interpolated (monotone from the right) curve whose area is VOC's AP, from recall 0 to 1."""
    mrec = np.concatenate(([0.0], rec, [rec[-1] if len(rec) else 0.0]))  # drop to 0 at the last recall
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    return mrec, mpre


def pr_curves_png(results: Sequence[Mapping[str, np.ndarray]], class_names: Sequence[str], path,
                  iou_thresh: float = 0.5) -> Path:
    """One precision-recall curve per class (interpolated, as VOC AP integrates it), its AP and counts in
    the legend; classes without ground truth are listed but not drawn. Returns the path."""
    curves = precision_recall_curves(results, class_names, iou_thresh)
    n = len(class_names)
    fig = Figure(figsize=(9.5 + 2.2 * max(0, math.ceil(n / 25) - 1), 6.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    aps = []
    for k, (name, cur) in enumerate(curves.items()):
        color = tuple(v / 255 for v in class_color(k))
        if cur["num_gt"] == 0:
            ax.plot([], [], color=color, linestyle=":", label=f"{name}: no ground truth")
            continue
        aps.append(cur["ap"])
        label = f"{name}: AP {cur['ap']:.3f} (gt {cur['num_gt']}, det {cur['num_det']})"
        if cur["num_det"] == 0:
            ax.plot([], [], color=color, label=label + ", none detected")
            continue
        mrec, mpre = _envelope(cur["precision"], cur["recall"])
        ax.plot(mrec, mpre, color=color, linewidth=1.6, drawstyle="steps-pre", label=label)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(True, alpha=0.3)
    mean = f"mAP {np.mean(aps):.3f}" if aps else "no ground truth"
    ax.set_title(f"Precision-recall per class (IoU >= {iou_thresh:g}, VOC area AP; {mean})")
    if not any(cur["num_gt"] for cur in curves.values()):
        ax.text(0.5, 0.5, "no ground truth", ha="center", va="center", transform=ax.transAxes, color="gray")
    if n:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small",
                  ncol=max(1, math.ceil(n / 25)), title="class", frameon=False)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return Path(path)


# ---- confusion matrix -----------------------------------------------------------------------------
def confusion_matrix(results: Sequence[Mapping[str, np.ndarray]], num_classes: int, iou_thresh: float = 0.5,
                     score_thresh: float = 0.3) -> np.ndarray:
    """`(C + 1, C + 1)` int64 counts: rows the true class, the last row "background" (a detection that
    matched no ground truth), columns the predicted class, the last column "background" (a ground truth
    that no detection matched). The background/background cell stays 0.

    Per image, detections scoring >= score_thresh are visited by descending score (stable); each takes the
    still-unmatched ground truth of highest IoU >= iou_thresh whatever its class (inclusive-pixel IoU, as
    the VOC metric), and the pair counts at (true class, predicted class). Difficult ground truth takes part
    in matching, but neither its pairs nor its misses are counted (as VOC ignores it).
    """
    c = int(num_classes)
    out = np.zeros((c + 1, c + 1), dtype=np.int64)
    for r in results:
        boxes, ids, scores, gt_boxes, gt_ids, difficult = _unpack(r)
        for what, v in (("detection", ids), ("ground truth", gt_ids)):
            if v.size and v.max() >= c:
                raise ValueError(f"{what} class {v.max()} is out of range for {c} classes")
        keep = scores >= score_thresh
        boxes, ids, scores = boxes[keep], ids[keep], scores[keep]
        free = np.ones(len(gt_boxes), dtype=bool)
        iou = box_iou(_inclusive(boxes), _inclusive(gt_boxes))                     # (K, M), empty-safe
        for i in np.argsort(-scores, kind="stable"):
            candidates = free & (iou[i] >= iou_thresh)
            if not candidates.any():
                out[c, ids[i]] += 1
                continue
            g = int(np.argmax(np.where(candidates, iou[i], -1.0)))
            free[g] = False
            if not difficult[g]:
                out[gt_ids[g], ids[i]] += 1
        for g in np.flatnonzero(free & ~difficult):
            out[gt_ids[g], c] += 1
    return out


def confusion_matrix_png(matrix: np.ndarray, class_names: Sequence[str], path,
                         title: Optional[str] = None) -> Path:
    """Draw `confusion_matrix(...)`: each cell annotated with its count, coloured by its share of the row
    (the true class). Returns the path."""
    matrix = np.asarray(matrix)
    labels = [str(n) for n in class_names] + ["background"]
    n = len(labels)
    if matrix.shape != (n, n):
        raise ValueError(f"matrix shape {matrix.shape} does not fit {len(class_names)} classes + background")
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=np.float64), where=rows > 0)
    side = max(6.0, 0.55 * n + 3.0)
    fig = Figure(figsize=(side + 1.2, side), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class's row")
    fontsize = 10 if n <= 12 else (8 if n <= 25 else 6)
    for i in range(n):
        for j in range(n):
            if i == n - 1 and j == n - 1:
                ax.text(j, i, "-", ha="center", va="center", color="gray", fontsize=fontsize)
                continue
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=fontsize,
                    color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(labels, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticklabels(labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "Confusion matrix (background: unmatched detections / missed ground truth)")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return Path(path)


# ---- AP by object size ----------------------------------------------------------------------------
def coco_metric(results: Sequence[Mapping[str, np.ndarray]], class_names: Sequence[str],
                iou_thresh: float = 0.5) -> COCOMetric:
    """A `COCOMetric` fed with `results` (image ids = positions in `results`)."""
    metric = COCOMetric(class_names, iou_thresh=iou_thresh)
    for r in results:
        boxes, ids, scores, gt_boxes, gt_ids, difficult = _unpack(r)
        metric.update(boxes, ids, scores, gt_boxes, gt_ids, difficult, file_name=r.get("image"))
    return metric


def _ap_by_size(metric: COCOMetric) -> Dict[str, Any]:
    params = Params(iouType="bbox")
    t = metric.iou_thresh
    areas = ("all",) + SIZES
    return {
        "iou_thresh": t,
        "area_ranges_px2": {lbl: [float(lo), float(hi)]
                            for lbl, (lo, hi) in zip(params.areaRngLbl, params.areaRng)},
        "note": "AP at iou_thresh by ground-truth box area (pycocotools COCOeval, max 100 detections per "
                "image); small < 32^2 <= medium < 96^2 <= large pixels; null: no ground truth of that size",
        "ap": {a: metric.ap(t, area=a) for a in areas},
        "num_gt": metric.gt_count_by_size(),
        "per_class": {name: {a: metric.ap(t, area=a, class_index=k) for a in areas}
                      for k, name in enumerate(metric.class_names)},
    }


def ap_by_size(results: Sequence[Mapping[str, np.ndarray]], class_names: Sequence[str],
               iou_thresh: float = 0.5) -> Dict[str, Any]:
    """AP at `iou_thresh` (default AP50) over all, small, medium and large ground truth (COCO's 32^2 and
    96^2 pixel area thresholds, pycocotools' areaRng), overall and per class, with ground-truth counts.
    NaN where there is no ground truth of that size."""
    return _ap_by_size(coco_metric(results, class_names, iou_thresh))


def ap_by_size_png(by_size: Mapping[str, Any], path) -> Path:
    """Grouped bars of `ap_by_size(...)`: AP per size (small, medium, large, all), for every class and
    overall, with the ground-truth count of each size in the axis labels; "n/a" where none. Returns path."""
    sizes = ("small", "medium", "large", "all")
    groups = list(by_size["per_class"]) + ["all classes"]
    values = [[by_size["per_class"][g].get(a) for a in sizes] for g in groups[:-1]]
    values.append([by_size["ap"].get(a) for a in sizes])
    counts = by_size.get("num_gt", {})
    fig = Figure(figsize=(max(6.0, 1.6 * len(groups) + 2), 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(sizes)
    for k, size in enumerate(sizes):
        xs = np.arange(len(groups)) + (k - (len(sizes) - 1) / 2) * width
        heights = [0.0 if v is None or not math.isfinite(v) else float(v) for v in (row[k] for row in values)]
        label = f"{size} ({counts.get(size, '?')} gt)" if isinstance(counts, Mapping) else size
        bars = ax.bar(xs, heights, width, label=label)
        for x, row in zip(xs, values):
            v = row[k]
            ax.text(x, (0 if v is None or not math.isfinite(v) else v) + 0.01,
                    "n/a" if v is None or not math.isfinite(v) else f"{v:.2f}",
                    ha="center", va="bottom", fontsize=7, rotation=90)
        del bars
    ax.set_xticks(np.arange(len(groups)))
    ax.set_xticklabels(groups)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel(f"AP at IoU {by_size['iou_thresh']:g}")
    ax.set_title("AP by object size (COCO areas: small < 32², medium < 96² ≤ large, pixels)")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return Path(path)


# ---- errors: the false positives and the missed ground truth, by image ------------------------------
def _why(iou_same: np.ndarray, iou_other: np.ndarray, iou_thresh: float) -> str:
    """Why a false positive is one, from its IoU with the image's ground truth of its class `(M1,)` and of
    the other classes `(M2,)`: `duplicate`, `wrong_class`, `localisation` (IoU in [0.1, iou_thresh), TIDE's
    background threshold) or `background`."""
    if iou_same.size and iou_same.max() >= iou_thresh:
        return "duplicate"
    if iou_other.size and iou_other.max() >= iou_thresh:
        return "wrong_class"
    return "localisation" if iou_same.size and iou_same.max() >= 0.1 else "background"


def error_list(results: Sequence[Mapping[str, np.ndarray]], class_names: Sequence[str], iou_thresh: float = 0.5,
               score_thresh: float = 0.3) -> Dict[str, Any]:
    """Where a detector goes wrong: `false_positives`, every detection scoring >= score_thresh that VOC's
    matching (`voc.match_detections`) calls false, by descending score, with its `kind` (see `_why`) and best
    IoU with ground truth of its class; `missed`, every non-difficult ground truth that no such detection
    matched, with the best IoU any detection of its class reaches (whatever its score) and that detection's
    score (null when none overlaps it). Boxes x1y1x2y2 original pixels; `image`: the result's `image` (its
    file name), else its index.

    Greedy matching by descending score means the detections above score_thresh match as they do in AP.
    """
    names = list(class_names)
    false_positives: List[Dict[str, Any]] = []
    missed: List[Dict[str, Any]] = []
    for n, r in enumerate(results):
        boxes, ids, scores, gt_boxes, gt_ids, difficult = _unpack(r)
        image = r.get("image", n)
        iou = box_iou(_inclusive(boxes), _inclusive(gt_boxes))                     # (K, M), empty-safe
        found = np.zeros(len(gt_boxes), dtype=bool)
        for k in np.unique(np.concatenate([ids, gt_ids])):
            mine = np.flatnonzero((ids == k) & (scores >= score_thresh))
            gts = np.flatnonzero(gt_ids == k)
            match, took = match_detections(boxes[mine], scores[mine], gt_boxes[gts], difficult[gts], iou_thresh)
            for i, m, g in zip(mine, match, took):
                if m == TP:
                    found[gts[g]] = True
                elif m != -1:
                    false_positives.append({"image": image, "class": names[k], "score": float(scores[i]),
                                            "box": boxes[i].tolist(),
                                            "kind": _why(iou[i, gts], iou[i, gt_ids != k], iou_thresh),
                                            "best_iou": float(iou[i, gts].max()) if len(gts) else 0.0})
        for g in np.flatnonzero(~found & ~difficult):
            same = np.flatnonzero(ids == gt_ids[g])
            best = same[iou[same, g].argmax()] if len(same) and iou[same, g].max() > 0 else None
            missed.append({"image": image, "class": names[gt_ids[g]], "box": gt_boxes[g].tolist(),
                           "best_iou": 0.0 if best is None else float(iou[best, g]),
                           "best_score": None if best is None else float(scores[best])})
    false_positives.sort(key=lambda e: -e["score"])
    kinds = ("background", "localisation", "wrong_class", "duplicate")
    return {"iou_thresh": float(iou_thresh), "score_thresh": float(score_thresh),
            "counts": {"false_positives": {kind: sum(e["kind"] == kind for e in false_positives) for kind in kinds},
                       "missed": len(missed)},
            "false_positives": false_positives, "missed": missed}


# ---- the whole report -----------------------------------------------------------------------------
def jsonable(value):
    """`value` with numpy scalars and arrays as Python values and NaN as None (JSON null)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def default_report_folder(weights, split: str = "val") -> Path:
    """Where `gluon-yolo3 eval` writes its report: `eval/` inside a run folder, `eval_<stem>/` next to a
    `.params` file; a split other than "val" adds `_<split>` (e.g. `eval_train/`)."""
    suffix = "" if split == "val" else f"_{split}"
    weights = Path(weights)
    if weights.is_dir():
        return weights / f"eval{suffix}"
    return weights.parent / f"eval_{weights.stem}{suffix}"


def write_report(results: Sequence[Mapping[str, np.ndarray]], class_names: Sequence[str], folder,
                 metric_result: Optional[Mapping[str, Any]] = None, iou_thresh: float = 0.5,
                 score_thresh: float = 0.3) -> Dict[str, Path]:
    """Write into `folder` (created): `pr_curves.png`, `confusion_matrix.png` (detections scoring >=
    score_thresh), `ap_by_size.json` and `.png`, `errors.json` (`error_list`, the same score_thresh),
    `detections_coco.json` (COCO results format), `ground_truth_coco.json`
    (the matching COCO ground truth: image id = position in `results`, `file_name` = the result's `image`,
    category id = class index + 1) and
    `metrics.json` (`metric_result`, NaN as null). Returns {name: path}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    class_names = list(class_names)
    paths = {"pr_curves": folder / "pr_curves.png", "confusion_matrix": folder / "confusion_matrix.png",
             "ap_by_size": folder / "ap_by_size.json", "ap_by_size_png": folder / "ap_by_size.png",
             "detections": folder / "detections_coco.json",
             "ground_truth": folder / "ground_truth_coco.json", "errors": folder / "errors.json",
             "metrics": folder / "metrics.json"}
    pr_curves_png(results, class_names, paths["pr_curves"], iou_thresh=iou_thresh)
    matrix = confusion_matrix(results, len(class_names), iou_thresh=iou_thresh, score_thresh=score_thresh)
    confusion_matrix_png(matrix, class_names, paths["confusion_matrix"],
                         title=f"Confusion matrix (IoU >= {iou_thresh:g}, score >= {score_thresh:g}; "
                               f"{len(results)} images)")
    coco = coco_metric(results, class_names, iou_thresh)
    by_size = _ap_by_size(coco)
    paths["ap_by_size"].write_text(json.dumps(jsonable(by_size), indent=1))
    ap_by_size_png(by_size, paths["ap_by_size_png"])
    paths["errors"].write_text(json.dumps(jsonable(error_list(results, class_names, iou_thresh, score_thresh)),
                                          indent=1))
    coco.write_results_json(paths["detections"])
    coco.write_ground_truth_json(paths["ground_truth"])
    metrics = dict(metric_result or {})
    metrics["confusion_matrix"] = {"labels": class_names + ["background"], "rows": "true",
                                   "columns": "predicted", "iou_thresh": iou_thresh,
                                   "score_thresh": score_thresh, "counts": matrix.tolist()}
    paths["metrics"].write_text(json.dumps(jsonable(metrics), indent=1))
    return paths
