"""Decoding raw YOLO outputs into boxes and scores, symbolically (HybridBlock)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from mxnet import gluon


def flatten_raw(F, raw):
    """Per-scale raw outputs `(B, H, W, A, 5 + C)` -> `(B, T, 5 + C)`, flattened scale, y, x, anchor."""
    return F.concat(*[F.reshape(F.reshape(r, (0, -3, 0, 0)), (0, -3, 0)) for r in raw], dim=1)


class YOLODecoder(gluon.HybridBlock):
    """Raw per-scale outputs -> boxes and per-class scores.

    Anchors are graph constants (saved with the parameters); grid offsets come from `arange_like`, so any
    input size that is a multiple of the largest stride works.
    """

    def __init__(self, anchors: Sequence, strides: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self.strides = tuple(int(s) for s in strides)
        self.num_anchors = [len(a) for a in anchors]
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
            centre = F.broadcast_add(F.sigmoid(txy), offset) * self.strides[s]
            half = F.broadcast_mul(F.exp(twh), anchor) / 2
            box = F.concat(centre - half, centre + half, dim=-1)               # (B, H, W, A, 4)
            out.append(F.reshape(box, (0, -1, 4)))
        return F.concat(*out, dim=1)
