"""Non-maximum suppression variants over (box, class) candidates, as HybridBlocks.

Every variant is registered in `NMS`, built with `score_thresh, iou_thresh, topk, max_det`, and called
`nms(boxes (B, N, 4), scores (B, N, C)) -> ids (B, K, 1), scores (B, K, 1), boxes (B, K, 4)`, K = max_det,
by descending score, empty slots -1 (DEVELOPERS.md). N may change between calls of a hybridized block.

| name                       | candidates                          | suppression                           |
| -------------------------- | ----------------------------------- | ------------------------------------- |
| class_aware = multi_label  | every (box, class) > score_thresh   | IoU > iou_thresh, same class          |
| class_agnostic             | each box with its best class        | IoU > iou_thresh, any class           |
| soft_nms                   | every (box, class) > score_thresh   | same-class scores decayed by IoU      |
| diou_nms                   | every (box, class) > score_thresh   | DIoU > iou_thresh, same class         |
"""
from __future__ import annotations

from mxnet import gluon

from ..boxes import iou_family
from ..registry import NMS
from .numpy_nms import set_nms_arguments

_INVALID = -1.0  # score given to candidates at or below score_thresh and to padding
_DONE = -2.0     # below every candidate score: marks candidates already taken by the iterative variants


class _NMSBase(gluon.HybridBlock):
    """Shared arguments, candidate selection and output layout."""

    def __init__(self, score_thresh: float = 0.01, iou_thresh: float = 0.45, topk: int = 400,
                 max_det: int = 100, **kwargs):
        super().__init__(**kwargs)
        set_nms_arguments(self, score_thresh, iou_thresh, topk, max_det)

    def _topk(self, F, flat):
        """`flat (B, M)` scores -> the `topk` best: values and indices `(B, topk)`, valid mask; entries at
        or below score_thresh (and padding) get value -1 and index 0 (a real, unused position)."""
        flat = F.where(flat > self.score_thresh, flat, F.ones_like(flat) * _INVALID)
        # pad with topk invalid entries so that topk never exceeds M (M is unknown when hybridized)
        pad = F.tile(F.ones_like(F.slice_axis(flat, axis=1, begin=0, end=1)) * _INVALID, reps=(1, self.topk))
        values, index = F.topk(F.concat(flat, pad, dim=1), axis=1, k=self.topk, ret_typ="both",
                               dtype="float32")  # (B, topk) each
        valid = values > self.score_thresh
        index = F.where(valid, index, F.zeros_like(index))
        return F.where(valid, values, F.ones_like(values) * _INVALID), index, valid

    def _candidates(self, F, boxes, scores):
        """Multi-label: the `topk` best (box, class) pairs: scores `(B, topk, 1)`, class ids `(B, topk, 1)`
        and boxes `(B, topk, 4)`; pairs at or below score_thresh (and padding) get id and score -1."""
        num_classes = F.slice_axis(F.shape_array(scores), axis=0, begin=2, end=3).astype("float32")
        flat = F.reshape(scores, shape=(0, -1))  # (B, N*C), index = box * C + class
        values, index, valid = self._topk(F, flat)
        box_index = F.floor(F.broadcast_div(index + 0.5, num_classes))
        class_id = index - F.broadcast_mul(box_index, num_classes)
        cand_boxes = F.gather_nd(boxes, F.stack(_batch_index(F, index), box_index, axis=0))  # (B, topk, 4)
        class_id = F.where(valid, class_id, F.ones_like(class_id) * _INVALID)
        return F.expand_dims(values, -1), F.expand_dims(class_id, -1), cand_boxes

    def _best_class_candidates(self, F, boxes, scores):
        """Single-label: each box once, with its best class; the `topk` best boxes, laid out as in
        `_candidates`."""
        best = F.max(scores, axis=-1)                                   # (B, N)
        best_class = F.argmax(scores, axis=-1)                          # (B, N), first of ties
        values, index, valid = self._topk(F, best)
        gather = F.stack(_batch_index(F, index), index, axis=0)
        cand_boxes = F.gather_nd(boxes, gather)                         # (B, topk, 4)
        class_id = F.where(valid, F.gather_nd(best_class, gather), F.ones_like(values) * _INVALID)
        return F.expand_dims(values, -1), F.expand_dims(class_id, -1), cand_boxes

    def _box_nms(self, F, values, class_id, cand_boxes, force_suppress: bool):
        """Greedy IoU NMS of the candidates with `box_nms`, then the `max_det` best rows."""
        data = F.concat(class_id, values, cand_boxes, dim=-1)  # (B, topk, 6)
        out = F.contrib.box_nms(data, overlap_thresh=self.iou_thresh, valid_thresh=self.score_thresh,
                                topk=-1, coord_start=2, score_index=1, id_index=0, background_id=-1,
                                force_suppress=force_suppress, in_format="corner", out_format="corner")
        return _split(F, self._fit_rows(F, out, self.topk, self.max_det))

    @staticmethod
    def _fit_rows(F, out, rows: int, keep: int):
        """`(B, rows, D)` -> `(B, keep, D)`: the first `keep` rows, padded with -1 when rows < keep."""
        if rows >= keep:
            return F.slice_axis(out, axis=1, begin=0, end=keep)
        pad = F.tile(F.ones_like(F.slice_axis(out, axis=1, begin=0, end=1)) * _INVALID,
                     reps=(1, keep - rows, 1))
        return F.concat(out, pad, dim=1)


def _batch_index(F, index):
    """`(B, K)` -> `(B, K)` holding the row (image) number, for gather_nd."""
    return F.broadcast_like(F.reshape(F.contrib.arange_like(index, axis=0), (-1, 1)), index)


def _split(F, out):
    """`(B, K, 6)` rows `id, score, x1, y1, x2, y2` -> ids, scores, boxes."""
    return (F.slice_axis(out, axis=-1, begin=0, end=1), F.slice_axis(out, axis=-1, begin=1, end=2),
            F.slice_axis(out, axis=-1, begin=2, end=6))


@NMS.register("class_aware")
@NMS.register("multi_label")
class ClassAwareNMS(_NMSBase):
    """Multi-label, class-aware NMS (registered as both "class_aware" and "multi_label": one class).

    Every (box, class) pair with score > score_thresh is a candidate, so one box can be kept for several
    classes (multi-label, as YOLOv3's sigmoid classes ask for). The `topk` best candidates per image go
    through greedy NMS per class (suppress IoU > iou_thresh, plain IoU without +1); the `max_det` best
    survivors are returned. "multi_label" is not a separate implementation but this very class: the
    name exists for recipes that think in single-label vs multi-label terms.

    Inputs: boxes `(B, N, 4)` x1y1x2y2, scores `(B, N, C)` (objectness x class probability, >= 0).
    Outputs: ids `(B, K, 1)`, scores `(B, K, 1)`, boxes `(B, K, 4)`, K = max_det, by descending score,
    empty slots -1.
    """

    def hybrid_forward(self, F, boxes, scores):
        values, cand_ids, cand_boxes = self._candidates(F, boxes, scores)
        return self._box_nms(F, values, cand_ids, cand_boxes, force_suppress=False)


@NMS.register("class_agnostic")
class ClassAgnosticNMS(_NMSBase):
    """Class-agnostic NMS: at most one detection per location, whatever the classes.

    Each box is one candidate, scored by its best class (score > score_thresh; the first class among
    ties); the `topk` best boxes go through greedy NMS across classes (`force_suppress`: a box suppresses
    any box of any class with IoU > iou_thresh); the `max_det` best survivors are returned with their
    best class. Same inputs and outputs as "class_aware".
    """

    def hybrid_forward(self, F, boxes, scores):
        values, cand_ids, cand_boxes = self._best_class_candidates(F, boxes, scores)
        return self._box_nms(F, values, cand_ids, cand_boxes, force_suppress=True)


class _IterativeNMS(_NMSBase):
    """Greedy selection written with F ops in a fixed number of steps, so that it hybridizes.

    The `topk` multi-label candidates (as "class_aware") are ranked; each of min(topk, max_det) steps takes
    the best remaining candidate and lets it act on the remaining ones of its class through
    `_suppress(F, scores, metric_row, same_class) -> scores` (metric_row: `_metric` between the taken box
    and every candidate). Candidates never come back up, so the taken ones come out by descending score;
    those at or below score_thresh become -1 slots.
    """

    metric_kind = "iou"

    def hybrid_forward(self, F, boxes, scores):
        values, cand_ids, cand_boxes = self._candidates(F, boxes, scores)
        score = F.reshape(values, (0, -1))                               # (B, K) current scores
        cls = F.reshape(cand_ids, (0, -1))                               # (B, K)
        metric = iou_family(F, F.expand_dims(cand_boxes, 2), F.expand_dims(cand_boxes, 1),
                            self.metric_kind)                            # (B, K, K), symmetric
        same = F.broadcast_equal(F.expand_dims(cls, 2), F.expand_dims(cls, 1))
        done = F.zeros_like(score)
        rows = []
        for _ in range(min(self.topk, self.max_det)):
            active = F.where(done, F.ones_like(score) * _DONE, score)
            best = F.argmax(active, axis=1)                              # (B,)
            at = F.stack(F.contrib.arange_like(best, axis=0), best, axis=0)   # (2, B) for gather_nd
            best_score = F.max(active, axis=1, keepdims=True)            # (B, 1); <= -1 when none is left
            rows.append(F.concat(F.expand_dims(F.gather_nd(cls, at), -1), best_score,
                                 F.gather_nd(cand_boxes, at), dim=-1))   # (B, 6)
            done = F.maximum(done, F.one_hot(best, depth=self.topk))
            score = self._suppress(F, score, F.gather_nd(metric, at), F.gather_nd(same, at))
        out = F.stack(*rows, axis=1)                                     # (B, L, 6)
        keep = F.slice_axis(out, axis=-1, begin=1, end=2) > self.score_thresh
        out = F.broadcast_mul(out, keep) + F.broadcast_mul(F.ones_like(out) * _INVALID, 1 - keep)
        return _split(F, self._fit_rows(F, out, min(self.topk, self.max_det), self.max_det))

    def _suppress(self, F, score, metric_row, same_class):
        raise NotImplementedError


@NMS.register("soft_nms")
class SoftNMS(_IterativeNMS):
    """Soft-NMS (Bodla et al. 2017), per class: overlapping scores are decayed instead of removed.

    Candidates: the `topk` best (box, class) pairs above score_thresh (multi-label, as "class_aware").
    Repeatedly the best remaining candidate M is kept and every remaining candidate b of its class is
    rescored: `method="linear"`: s *= 1 - IoU(M, b) where IoU(M, b) > iou_thresh (else unchanged);
    `method="gaussian"`: s *= exp(-IoU(M, b)^2 / sigma) (iou_thresh unused, as in the paper). Kept
    detections whose decayed score is at or below score_thresh are dropped; the first `max_det` are
    returned (by descending decayed score, exactly the top of the full algorithm's output).
    """

    def __init__(self, score_thresh: float = 0.01, iou_thresh: float = 0.45, topk: int = 400,
                 max_det: int = 100, method: str = "linear", sigma: float = 0.5, **kwargs):
        super().__init__(score_thresh, iou_thresh, topk, max_det, **kwargs)
        if method not in ("linear", "gaussian"):
            raise ValueError(f"soft_nms: method must be 'linear' or 'gaussian', got {method!r}")
        if not sigma > 0:
            raise ValueError(f"soft_nms: sigma must be > 0, got {sigma}")
        self.method = method
        self.sigma = float(sigma)

    def _suppress(self, F, score, iou, same_class):
        if self.method == "linear":
            decay = F.where(same_class * (iou > self.iou_thresh), 1 - iou, F.ones_like(iou))
        else:
            decay = F.where(same_class, F.exp(-F.square(iou) / self.sigma), F.ones_like(iou))
        return score * decay


@NMS.register("diou_nms")
class DIoUNMS(_IterativeNMS):
    """DIoU-NMS (Zheng et al. 2020), per class: greedy NMS that suppresses by DIoU instead of IoU.

    Candidates: the `topk` best (box, class) pairs above score_thresh (multi-label, as "class_aware").
    Repeatedly the best remaining candidate M is kept and every remaining candidate b of its class with
    `DIoU(M, b) = IoU - d^2 / c^2 > iou_thresh` is removed (d: distance of the centres, c: diagonal of the
    smallest enclosing box), so that nearby boxes with distant centres (two objects side by side)
    survive more often than under IoU. The `max_det` best survivors are returned.
    """

    metric_kind = "diou"

    def _suppress(self, F, score, diou, same_class):
        return F.where(same_class * (diou > self.iou_thresh), F.ones_like(score) * _INVALID, score)


__all__ = ["ClassAwareNMS", "ClassAgnosticNMS", "SoftNMS", "DIoUNMS"]
