"""The weighted sum of loss terms, with the shared work (flattening, decoding, ignore mask) done once."""
from __future__ import annotations

from typing import List, Mapping, Sequence

from mxnet import gluon

from ..boxes import pairwise_iou
from ..postprocess.decode import YOLODecoder, flatten_raw
from ..schema import RecipeError
from ..registry import LOSSES

TERM_KEYS = ("weight", "name")      # a term's keys read here; the others are its constructor's


class YOLOLoss(gluon.HybridBlock):
    """`loss(target, gt_boxes, *raw) -> (B, K)`: the K weighted loss terms per image (sums, not means).

    target `(B, T, 10 + C)`; gt_boxes `(B, M, 4)` x1y1x2y2 input pixels padded with -1;
    raw: per scale `(B, H, W, A, 5 + C)`. `names` holds the K term names, in column order. A term is a
    component config (or a type name) with optional `weight` (default 1) and `name` (default the term's).
    With a grid sensitivity `scale_x_y` s other than 1 the terms get the centre target `[1:3]` as the target of
    `sigmoid(tx, ty)`, `(x + (s - 1) / 2) / s` (the decoder's `in_cell` inverted), not the in-cell x itself.
    """

    def __init__(self, terms: Sequence[Mapping], anchors, strides, ignore_iou: float = 0.7, scale_x_y=1.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.ignore_iou = float(ignore_iou)
        self.names: List[str] = []
        self.weights: List[float] = []
        with self.name_scope():
            self.decoder = YOLODecoder(anchors, strides, scale_x_y)
            self.terms = gluon.nn.HybridSequential()
            for index, cfg in enumerate(terms):
                weight, name, term = _build_term(cfg, where=f"loss.terms.{index}")
                self.weights.append(weight)
                self.terms.add(term)
                self.names.append(name)
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"loss term names must be unique, got {self.names}; give one a 'name:'")

    def hybrid_forward(self, F, target, gt_boxes, *raw):
        pred = flatten_raw(F, raw)                                    # (B, T, 5 + C)
        boxes = self.decoder(*raw)                                    # (B, T, 4), for IoU-based terms
        # The ignore mask is a constant of the loss, decoded from outputs that carry no gradient: decoding
        # `boxes` and stopping the gradient after it would still run the decoder's backward, where an
        # overflowing exp(tw) gives 0 * inf = NaN gradients under a finite loss (a diverging run then saved
        # NaN weights). MXNet 1.9 also crashes on the imperative backward through this comparison otherwise.
        fixed = self.decoder(*[F.stop_gradient(r) for r in raw])
        best_iou = F.max(pairwise_iou(F, fixed, gt_boxes), axis=-1, keepdims=True)
        obj = F.slice_axis(target, axis=-1, begin=0, end=1)
        noobj = F.stop_gradient((1 - obj) * (best_iou <= self.ignore_iou))           # (B, T, 1)
        if any(s != 1 for s in self.decoder.scale_x_y):
            target = self.sigmoid_target(F, target, raw)
        losses = [w * term(pred, target, boxes, noobj) for w, term in zip(self.weights, self.terms)]
        return F.stack(*losses, axis=1)

    def sigmoid_target(self, F, target, raw):
        """`target` with its centre columns `[1:3]` x mapped to `(x + (s - 1) / 2) / s`, s the scale's `scale_x_y`."""
        scales = [F.ones_like(F.slice_axis(r, axis=-1, begin=0, end=1)) * s
                  for r, s in zip(raw, self.decoder.scale_x_y)]
        s = flatten_raw(F, scales)                                                   # (B, T, 1)
        xy = F.broadcast_div(F.broadcast_add(F.slice_axis(target, axis=-1, begin=1, end=3), (s - 1) / 2), s)
        return F.concat(F.slice_axis(target, axis=-1, begin=0, end=1), xy,
                        F.slice_axis(target, axis=-1, begin=3, end=None), dim=-1)


def _build_term(cfg: Mapping | str, where: str):
    """(weight, name, term) of one `loss.terms` entry; `weight` and `name` are the composer's own keys."""
    cfg = {"type": cfg} if isinstance(cfg, str) else dict(cfg)
    term = LOSSES.build(cfg, where=where, own_keys=TERM_KEYS)
    weight, name = cfg.get("weight", 1.0), cfg.get("name")
    if not isinstance(weight, (int, float)) or isinstance(weight, bool):
        raise RecipeError(f"{where}.weight must be a number, got {weight!r}")
    if name is not None and not (isinstance(name, str) and name):
        raise RecipeError(f"{where}.name must be a non-empty string, got {name!r}")
    return float(weight), name or getattr(term, "short_name", cfg["type"]), term
