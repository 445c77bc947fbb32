"""NMS in numpy, for runtimes without MXNet (the ONNX export stops before NMS).

The same variants and arguments as the `NMS` registry (gluon_yolo3/postprocess/nms.py), computed the same
way, so that an ONNX model plus this post-processor gives the detections the MXNet model gives:

    nms = build_numpy_nms({"type": "class_aware", "score_thresh": 0.01, "iou_thresh": 0.45,
                           "topk": 400, "max_det": 100})
    ids, scores, boxes = nms(boxes, scores)   # (B, N, 4), (B, N, C) -> (B, K, 1), (B, K, 1), (B, K, 4)

| name                       | candidates                          | suppression                           |
| -------------------------- | ----------------------------------- | ------------------------------------- |
| class_aware = multi_label  | every (box, class) > score_thresh   | IoU > iou_thresh, same class          |
| class_agnostic             | each box with its best class        | IoU > iou_thresh, any class           |
| soft_nms                   | every (box, class) > score_thresh   | same-class scores decayed by IoU      |
| diou_nms                   | every (box, class) > score_thresh   | DIoU > iou_thresh, same class         |

Outputs: K = max_det rows by descending score, empty slots -1 (DEVELOPERS.md).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Tuple

import numpy as np

from ..boxes import iou_pairs
from ..registry import closest


def set_nms_arguments(nms, score_thresh: float, iou_thresh: float, topk: int, max_det: int):
    """Check the arguments every NMS takes (symbolic or numpy) and set them on `nms`."""
    if score_thresh < 0:
        raise ValueError(f"score_thresh must be >= 0 (scores are probabilities), got {score_thresh}")
    if topk < 1 or max_det < 1:
        raise ValueError(f"topk and max_det must be >= 1, got topk={topk}, max_det={max_det}")
    nms.score_thresh = float(score_thresh)
    nms.iou_thresh = float(iou_thresh)
    nms.topk = int(topk)
    nms.max_det = int(max_det)


class NumpyNMS:
    """Base: arguments, candidate selection, output layout. `nms(boxes (B, N, 4), scores (B, N, C))`."""

    def __init__(self, score_thresh: float = 0.01, iou_thresh: float = 0.45, topk: int = 400,
                 max_det: int = 100):
        set_nms_arguments(self, score_thresh, iou_thresh, topk, max_det)

    def __call__(self, boxes: np.ndarray, scores: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        boxes, scores = np.asarray(boxes, np.float32), np.asarray(scores, np.float32)
        if boxes.ndim != 3 or scores.ndim != 3 or boxes.shape[:2] != scores.shape[:2] or boxes.shape[2] != 4:
            raise ValueError(f"NMS takes boxes (B, N, 4) and scores (B, N, C), got {boxes.shape} and "
                             f"{scores.shape}")
        out = np.full((boxes.shape[0], self.max_det, 6), -1.0, dtype=np.float32)
        for i in range(boxes.shape[0]):
            rows = self.image(boxes[i], scores[i])[:self.max_det]
            out[i, :len(rows)] = rows
        return out[..., 0:1], out[..., 1:2], out[..., 2:6]

    def image(self, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """One image: `(N, 4), (N, C)` -> kept rows `(k, 6)`: class id, score, x1, y1, x2, y2."""
        raise NotImplementedError

    def _ranked(self, flat: np.ndarray) -> np.ndarray:
        """Indices of the `topk` best entries above score_thresh, best first (stable among ties)."""
        index = np.flatnonzero(flat > self.score_thresh)
        order = np.argsort(-flat[index], kind="stable")[:self.topk]
        return index[order]

    def candidates(self, boxes, scores):
        """Multi-label: the `topk` best (box, class) pairs above score_thresh -> values, ids, boxes."""
        num_classes = scores.shape[1]
        index = self._ranked(scores.reshape(-1))
        return scores.reshape(-1)[index], (index % num_classes).astype(np.float32), boxes[index // num_classes]

    def best_class_candidates(self, boxes, scores):
        """Single-label: each box once, with its best class (first among ties)."""
        best = scores.max(axis=1)
        index = self._ranked(best)
        return best[index], scores[index].argmax(axis=1).astype(np.float32), boxes[index]

    def greedy(self, values, ids, cand, force: bool) -> np.ndarray:
        """Greedy NMS of candidates sorted by descending value: suppress IoU > iou_thresh (same class
        unless `force`)."""
        groups = [np.arange(len(values))] if force else [np.flatnonzero(ids == c) for c in np.unique(ids)]
        keep = []
        for group in groups:                                    # classes never suppress each other
            hits = iou_pairs(cand[group], cand[group]) > self.iou_thresh    # k would suppress j
            alive = np.ones(len(group), dtype=bool)
            for k in range(len(group)):
                if alive[k]:
                    alive[k + 1:] &= ~hits[k, k + 1:]
            keep.append(group[alive])
        keep = np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)   # back to descending value
        return _rows(ids[keep], values[keep], cand[keep])


def _rows(ids, values, boxes) -> np.ndarray:
    return np.concatenate([np.asarray(ids, np.float32).reshape(-1, 1),
                           np.asarray(values, np.float32).reshape(-1, 1),
                           np.asarray(boxes, np.float32).reshape(-1, 4)], axis=1)


class ClassAwareNMS(NumpyNMS):
    """Multi-label, class-aware NMS ("class_aware" and "multi_label")."""

    def image(self, boxes, scores):
        return self.greedy(*self.candidates(boxes, scores), force=False)


class ClassAgnosticNMS(NumpyNMS):
    """Each box with its best class; suppression across classes."""

    def image(self, boxes, scores):
        return self.greedy(*self.best_class_candidates(boxes, scores), force=True)


class _Iterative(NumpyNMS):
    """Take the best remaining candidate min(topk, max_det) times; it acts on the rest of its class."""

    metric_kind = "iou"

    def image(self, boxes, scores):
        values, ids, cand = self.candidates(boxes, scores)
        if not len(values):
            return np.zeros((0, 6), np.float32)
        score = values.astype(np.float64)
        metric = iou_pairs(cand, cand, self.metric_kind)
        same = ids[:, None] == ids[None, :]
        done = np.zeros(len(values), dtype=bool)
        rows = []
        for _ in range(min(len(values), self.max_det)):
            active = np.where(done, -2.0, score)
            best = int(np.argmax(active))
            if active[best] <= self.score_thresh:
                break
            rows.append((ids[best], active[best], cand[best]))
            done[best] = True
            score = self.suppress(score, metric[best], same[best])
        if not rows:
            return np.zeros((0, 6), np.float32)
        return _rows([r[0] for r in rows], [r[1] for r in rows], np.stack([r[2] for r in rows]))

    def suppress(self, score, metric_row, same_class):
        raise NotImplementedError


class SoftNMS(_Iterative):
    """Soft-NMS per class: `linear` s *= 1 - IoU where IoU > iou_thresh; `gaussian` s *= exp(-IoU^2 / sigma)."""

    def __init__(self, score_thresh: float = 0.01, iou_thresh: float = 0.45, topk: int = 400,
                 max_det: int = 100, method: str = "linear", sigma: float = 0.5):
        super().__init__(score_thresh, iou_thresh, topk, max_det)
        if method not in ("linear", "gaussian"):
            raise ValueError(f"soft_nms: method must be 'linear' or 'gaussian', got {method!r}")
        if not sigma > 0:
            raise ValueError(f"soft_nms: sigma must be > 0, got {sigma}")
        self.method, self.sigma = method, float(sigma)

    def suppress(self, score, iou, same_class):
        if self.method == "linear":
            decay = np.where(same_class & (iou > self.iou_thresh), 1 - iou, 1.0)
        else:
            decay = np.where(same_class, np.exp(-iou ** 2 / self.sigma), 1.0)
        return score * decay


class DIoUNMS(_Iterative):
    """Greedy per-class NMS suppressing DIoU > iou_thresh."""

    metric_kind = "diou"

    def suppress(self, score, diou, same_class):
        return np.where(same_class & (diou > self.iou_thresh), -1.0, score)


NUMPY_NMS: Dict[str, Callable[..., NumpyNMS]] = {
    "class_aware": ClassAwareNMS, "multi_label": ClassAwareNMS, "class_agnostic": ClassAgnosticNMS,
    "soft_nms": SoftNMS, "diou_nms": DIoUNMS,
}


def build_numpy_nms(cfg: Mapping[str, Any] | str) -> NumpyNMS:
    """The numpy NMS for a recipe's `model.nms` config (`{"type": ..., **arguments}`)."""
    cfg = {"type": cfg} if isinstance(cfg, str) else dict(cfg)
    kind = cfg.pop("type", None)
    if kind not in NUMPY_NMS:
        hint = closest(str(kind), NUMPY_NMS)
        raise ValueError(f"model.nms.type: no numpy post-processor for NMS {kind!r}"
                         + (f" (did you mean '{hint}'?)" if hint else "")
                         + f"; available: {', '.join(sorted(NUMPY_NMS))}")
    try:
        return NUMPY_NMS[kind](**cfg)
    except TypeError as err:
        raise ValueError(f"model.nms ({kind}): {err}") from None
