"""Decoding raw YOLO outputs into boxes and scores, symbolically (HybridBlock), and YOLOv3's score rule.

A detection's score for class c is objectness x class probability, both sigmoids of their logits
(multi-label: every class has its own probability). `decode(F, decoder, raw)` gives the three parts for the
detector, the int8 graph's fp32 tail and the ONNX export alike; `detection_scores` / `detection_scores_np`
multiply them (the numpy one after an ONNX model)."""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
from mxnet import gluon


def flatten_raw(F, raw, width: int | None = None):
    """Per-scale raw outputs `(B, H, W, A, 5 + C)` -> `(B, T, 5 + C)`, flattened scale, y, x, anchor.

    `width` (5 + C, when known): one plain reshape per scale, which ONNX can express (its reshape has no
    code for merging two axes)."""
    if width is not None:
        return F.concat(*[F.reshape(r, (0, -1, int(width))) for r in raw], dim=1)
    return F.concat(*[F.reshape(F.reshape(r, (0, -3, 0, 0)), (0, -3, 0)) for r in raw], dim=1)


def decode(F, decoder, raw, width: int | None = None):
    """`(boxes (B, T, 4) x1y1x2y2 input pixels, objectness (B, T, 1), class probabilities (B, T, C))` of the
    raw outputs per scale `(B, H, W, A, 5 + C)`; `decoder` a YOLODecoder, `width` as in `flatten_raw`."""
    pred = flatten_raw(F, raw, width)
    objectness = F.sigmoid(F.slice_axis(pred, axis=-1, begin=4, end=5))
    class_probs = F.sigmoid(F.slice_axis(pred, axis=-1, begin=5, end=None))
    return decoder(*raw), objectness, class_probs


def detection_scores(F, objectness, class_probs):
    """Per-class scores `(B, T, C)` = objectness `(B, T, 1)` x class probabilities `(B, T, C)`."""
    return F.broadcast_mul(objectness, class_probs)


def detection_scores_np(objectness: np.ndarray, class_probs: np.ndarray) -> np.ndarray:
    """`detection_scores` in numpy, for objectness `(B, T)` (an ONNX model's output) and `(B, T, C)`."""
    return np.asarray(objectness)[..., None] * np.asarray(class_probs)


def per_scale(scale_x_y, num_scales: int) -> Tuple[float, ...]:
    """`model.scale_x_y` as one float per scale: a number is every scale's, a list gives each (finest first)."""
    values = list(scale_x_y) if isinstance(scale_x_y, (list, tuple)) else [scale_x_y] * num_scales
    if len(values) != num_scales:
        raise ValueError(f"model.scale_x_y: {len(values)} values {values} for {num_scales} scales")
    return tuple(float(v) for v in values)


def in_cell(F, xy, scale: float):
    """The in-cell centre of `sigmoid(txy)`: `sigmoid * s - (s - 1) / 2` (Darknet's grid sensitivity,
    `scale_x_y`); s = 1 is YOLOv3's plain sigmoid, which then reaches a cell's edge only at infinite logits."""
    return xy if scale == 1 else xy * scale - (scale - 1) / 2


class YOLODecoder(gluon.HybridBlock):
    """Raw per-scale outputs -> boxes and per-class scores.

    Anchors are graph constants (saved with the parameters); grid offsets come from `arange_like`, so any
    input size that is a multiple of the largest stride works. `scale_x_y` (a number, or one per scale)
    stretches the centre's sigmoid around the cell's middle (`in_cell`).
    """

    def __init__(self, anchors: Sequence, strides: Sequence[int], scale_x_y=1.0, **kwargs):
        super().__init__(**kwargs)
        self.strides = tuple(int(s) for s in strides)
        self.num_anchors = [len(a) for a in anchors]
        self.scale_x_y = per_scale(scale_x_y, len(anchors))
        with self.name_scope():
            self.anchor_consts = []
            for s, group in enumerate(anchors):
                value = np.asarray(group, dtype=np.float32).reshape(1, 1, 1, -1, 2)
                const = self.params.get_constant(f"anchors{s}", value)
                setattr(self, f"anchors{s}", const)
                self.anchor_consts.append(const)

    def hybrid_forward(self, F, *raw, **anchors):
        """raw: per scale `(B, H, W, A, 5 + C)` -> boxes `(B, T, 4)` x1y1x2y2 input pixels."""
        out = []
        for s, r in enumerate(raw):
            anchor = anchors[f"anchors{s}"]                                   # (1, 1, 1, A, 2)
            xs = F.contrib.arange_like(r, axis=2).reshape((1, 1, -1, 1, 1))   # column j
            ys = F.contrib.arange_like(r, axis=1).reshape((1, -1, 1, 1, 1))   # row i
            offset = F.concat(F.broadcast_add(xs, F.zeros_like(ys)),
                              F.broadcast_add(ys, F.zeros_like(xs)), dim=-1)  # (1, H, W, 1, 2)
            txy = F.slice_axis(r, axis=-1, begin=0, end=2)
            twh = F.slice_axis(r, axis=-1, begin=2, end=4)
            centre = F.broadcast_add(in_cell(F, F.sigmoid(txy), self.scale_x_y[s]), offset) * self.strides[s]
            half = F.broadcast_mul(F.exp(twh), anchor) / 2
            box = F.concat(centre - half, centre + half, dim=-1)               # (B, H, W, A, 4)
            out.append(F.reshape(box, (0, -1, 4)))
        return F.concat(*out, dim=1)
