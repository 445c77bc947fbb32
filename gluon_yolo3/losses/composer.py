"""The weighted sum of loss terms, with the shared work (flattening, decoding, ignore mask) done once."""
from __future__ import annotations

from typing import List, Mapping, Sequence

from mxnet import gluon

from ..postprocess.decode import YOLODecoder, flatten_raw
from ..registry import LOSSES


class YOLOLoss(gluon.HybridBlock):
    """`loss(target, gt_boxes, *raw) -> (B, K)`: the K weighted loss terms per image (sums, not means).

    target `(B, T, 10 + C)`; gt_boxes `(B, M, 4)` x1y1x2y2 input pixels padded with -1;
    raw: per scale `(B, H, W, A, 5 + C)`. `names` holds the K term names, in column order.
    """

    def __init__(self, terms: Sequence[Mapping], anchors, strides, ignore_iou: float = 0.7, **kwargs):
        super().__init__(**kwargs)
        self.ignore_iou = float(ignore_iou)
        self.names: List[str] = []
        self.weights: List[float] = []
        with self.name_scope():
            self.decoder = YOLODecoder(anchors, strides)
            self.terms = gluon.nn.HybridSequential()
            for cfg in terms:
                cfg = dict(cfg)
                self.weights.append(float(cfg.pop("weight", 1.0)))
                name = cfg.pop("name", None)
                term = LOSSES.build(cfg)
                self.terms.add(term)
                self.names.append(name or getattr(term, "short_name", cfg["type"]))
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"loss term names must be unique, got {self.names}; give one a 'name:'")

    def hybrid_forward(self, F, target, gt_boxes, *raw):
        pred = flatten_raw(F, raw)                                    # (B, T, 5 + C)
        boxes = self.decoder(*raw)                                    # (B, T, 4)
        # the ignore mask is a constant of the loss: no gradient flows into it (MXNet 1.9 also crashes
        # on the imperative backward through this comparison otherwise)
        best_iou = F.max(pairwise_iou(F, F.stop_gradient(boxes), gt_boxes), axis=-1, keepdims=True)
        obj = F.slice_axis(target, axis=-1, begin=0, end=1)
        noobj = F.stop_gradient((1 - obj) * (best_iou <= self.ignore_iou))           # (B, T, 1)
        losses = [w * term(pred, target, boxes, noobj) for w, term in zip(self.weights, self.terms)]
        return F.stack(*losses, axis=1)


def pairwise_iou(F, a, b):
    """IoU `(B, N, M)` of boxes `a (B, N, 4)` and `b (B, M, 4)`, x1y1x2y2; padded (-1) boxes give 0."""
    a = F.expand_dims(a, axis=2)                                      # (B, N, 1, 4)
    b = F.expand_dims(b, axis=1)                                      # (B, 1, M, 4)
    a1, a2 = F.slice_axis(a, axis=-1, begin=0, end=2), F.slice_axis(a, axis=-1, begin=2, end=4)
    b1, b2 = F.slice_axis(b, axis=-1, begin=0, end=2), F.slice_axis(b, axis=-1, begin=2, end=4)
    inter = _area(F, F.relu(F.broadcast_minimum(a2, b2) - F.broadcast_maximum(a1, b1)))
    area_a = _area(F, F.relu(a2 - a1))
    area_b = _area(F, F.relu(b2 - b1))
    union = F.broadcast_sub(F.broadcast_add(area_a, area_b), inter)
    return inter / F.maximum(union, 1e-12)


def _area(F, wh):
    """`(..., 2)` width, height -> `(...)` w * h (a product whose gradient stays finite at zero sides)."""
    w = F.slice_axis(wh, axis=-1, begin=0, end=1)
    h = F.slice_axis(wh, axis=-1, begin=1, end=2)
    return F.squeeze(w * h, axis=-1)
