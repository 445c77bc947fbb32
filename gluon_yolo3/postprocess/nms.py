"""Class-aware non-maximum suppression over (box, class) candidates, as a HybridBlock."""
from __future__ import annotations

from mxnet import gluon

from ..registry import NMS

_INVALID = -1.0  # score given to candidates at or below score_thresh and to padding


@NMS.register("class_aware")
class ClassAwareNMS(gluon.HybridBlock):
    """Multi-label, class-aware NMS.

    Every (box, class) pair with score > score_thresh is a candidate, so one box can be kept for several
    classes. The `topk` best candidates per image go through greedy NMS per class (suppress IoU >
    iou_thresh, plain IoU without +1); the `max_det` best survivors are returned.

    Inputs: boxes `(B, N, 4)` x1y1x2y2, scores `(B, N, C)` (objectness x class probability, >= 0).
    Outputs: ids `(B, K, 1)`, scores `(B, K, 1)`, boxes `(B, K, 4)`, K = max_det, by descending score,
    empty slots -1.
    """

    def __init__(self, score_thresh: float = 0.01, iou_thresh: float = 0.45, topk: int = 400,
                 max_det: int = 100, **kwargs):
        super().__init__(**kwargs)
        if score_thresh < 0:
            raise ValueError(f"score_thresh must be >= 0 (scores are probabilities), got {score_thresh}")
        if topk < 1 or max_det < 1:
            raise ValueError(f"topk and max_det must be >= 1, got topk={topk}, max_det={max_det}")
        self.score_thresh = float(score_thresh)
        self.iou_thresh = float(iou_thresh)
        self.topk = int(topk)
        self.max_det = int(max_det)

    def hybrid_forward(self, F, boxes, scores):
        values, cand_ids, cand_boxes = self._candidates(F, boxes, scores)
        data = F.concat(cand_ids, values, cand_boxes, dim=-1)  # (B, topk, 6)
        out = F.contrib.box_nms(data, overlap_thresh=self.iou_thresh, valid_thresh=self.score_thresh,
                                topk=-1, coord_start=2, score_index=1, id_index=0, background_id=-1,
                                force_suppress=False, in_format="corner", out_format="corner")
        out = self._fit_rows(F, out, self.topk, self.max_det)
        return (F.slice_axis(out, axis=-1, begin=0, end=1), F.slice_axis(out, axis=-1, begin=1, end=2),
                F.slice_axis(out, axis=-1, begin=2, end=6))

    def _candidates(self, F, boxes, scores):
        """The `topk` best (box, class) pairs: scores `(B, topk, 1)`, class ids `(B, topk, 1)` and boxes
        `(B, topk, 4)`; pairs at or below score_thresh (and padding) get id and score -1."""
        num_classes = F.slice_axis(F.shape_array(scores), axis=0, begin=2, end=3).astype("float32")
        flat = F.reshape(scores, shape=(0, -1))  # (B, N*C), index = box * C + class
        flat = F.where(flat > self.score_thresh, flat, F.ones_like(flat) * _INVALID)
        # pad with topk invalid entries so that topk never exceeds N*C (N is unknown when hybridized)
        pad = F.tile(F.ones_like(F.slice_axis(flat, axis=1, begin=0, end=1)) * _INVALID, reps=(1, self.topk))
        values, index = F.topk(F.concat(flat, pad, dim=1), axis=1, k=self.topk, ret_typ="both",
                               dtype="float32")  # (B, topk) each
        valid = values > self.score_thresh
        index = F.where(valid, index, F.zeros_like(index))  # padding points at a real (unused) box
        box_index = F.floor(F.broadcast_div(index + 0.5, num_classes))
        class_id = index - F.broadcast_mul(box_index, num_classes)
        batch_index = F.broadcast_like(F.reshape(F.contrib.arange_like(index, axis=0), (-1, 1)), index)
        cand_boxes = F.gather_nd(boxes, F.stack(batch_index, box_index, axis=0))  # (B, topk, 4)
        invalid = F.ones_like(values) * _INVALID
        values = F.where(valid, values, invalid)
        class_id = F.where(valid, class_id, invalid)
        return F.expand_dims(values, -1), F.expand_dims(class_id, -1), cand_boxes

    @staticmethod
    def _fit_rows(F, out, rows: int, keep: int):
        """`(B, rows, 6)` -> `(B, keep, 6)`: the first `keep` rows, padded with -1 when rows < keep."""
        if rows >= keep:
            return F.slice_axis(out, axis=1, begin=0, end=keep)
        pad = F.tile(F.ones_like(F.slice_axis(out, axis=1, begin=0, end=1)) * _INVALID,
                     reps=(1, keep - rows, 1))
        return F.concat(out, pad, dim=1)
