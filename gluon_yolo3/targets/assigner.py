"""Anchor assigners: ground-truth boxes -> the per-image target array of DEVELOPERS.md (numpy, in workers).

Layout of the returned `(T, 10 + C)` array, over all scales (finest first), then y, then x, then anchor:
`[0]` objectness, `[1:3]` centre in cell, `[3:5]` log(w / anchor_w), log(h / anchor_h), `[5]` box weight
2 - w*h/(W*H), `[6:10]` the box x1y1x2y2 (input pixels), `[10:]` multi-hot classes.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

from ..boxes import shape_iou, xyxy_to_cxcywh
from ..registry import ASSIGNERS

NUM_BOX_FIELDS = 10  # columns before the class targets


class AnchorAssigner:
    """Shared encoding; subclasses choose which (box, anchor) pairs are positives in `match`."""

    def __init__(self, anchors: Sequence, strides: Sequence[int], num_classes: int):
        self.anchors = [np.asarray(a, dtype=np.float32).reshape(-1, 2) for a in anchors]
        self.strides = tuple(int(s) for s in strides)
        if len(self.anchors) != len(self.strides):
            raise ValueError(f"{len(self.anchors)} anchor groups for {len(self.strides)} strides")
        self.num_classes = int(num_classes)
        self.flat_anchors = np.concatenate(self.anchors, axis=0)                     # (K, 2)
        self.anchor_scale = np.concatenate([np.full(len(a), s) for s, a in enumerate(self.anchors)])
        self.anchor_local = np.concatenate([np.arange(len(a)) for a in self.anchors])

    def grid_shapes(self, input_hw: Tuple[int, int]) -> List[Tuple[int, int, int]]:
        """(H, W, A) per scale for an input of `input_hw` pixels (both multiples of the largest stride)."""
        h, w = input_hw
        return [(h // s, w // s, len(a)) for s, a in zip(self.strides, self.anchors)]

    def num_predictions(self, input_hw) -> int:
        return int(sum(h * w * a for h, w, a in self.grid_shapes(input_hw)))

    def match(self, wh: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Positive pairs for box shapes `wh (N, 2)`: (box indices, flat anchor indices), equal length."""
        raise NotImplementedError

    def __call__(self, boxes: np.ndarray, classes: np.ndarray, input_hw: Tuple[int, int]) -> np.ndarray:
        """Targets `(T, 10 + C)` for `boxes (N, 4)` x1y1x2y2 input pixels and `classes (N,)`."""
        input_hw = (int(input_hw[0]), int(input_hw[1]))
        shapes = self.grid_shapes(input_hw)
        total = sum(h * w * a for h, w, a in shapes)
        targets = np.zeros((total, NUM_BOX_FIELDS + self.num_classes), dtype=np.float32)
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        classes = np.asarray(classes).reshape(-1).astype(np.int64)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, classes = boxes[keep], classes[keep]
        if len(boxes) == 0:
            return targets
        cxcywh = xyxy_to_cxcywh(boxes)
        box_idx, anchor_idx = self.match(cxcywh[:, 2:4])
        if len(box_idx) == 0:
            return targets
        scale = self.anchor_scale[anchor_idx]
        stride = np.asarray(self.strides, dtype=np.float32)[scale]
        grid_h = np.asarray([s[0] for s in shapes])[scale]
        grid_w = np.asarray([s[1] for s in shapes])[scale]
        num_a = np.asarray([s[2] for s in shapes])[scale]
        offsets = np.cumsum([0] + [h * w * a for h, w, a in shapes])[scale]
        gx = cxcywh[box_idx, 0] / stride
        gy = cxcywh[box_idx, 1] / stride
        col = np.clip(np.floor(gx), 0, grid_w - 1).astype(np.int64)   # x -> column j
        row = np.clip(np.floor(gy), 0, grid_h - 1).astype(np.int64)   # y -> row i
        rows = offsets + (row * grid_w + col) * num_a + self.anchor_local[anchor_idx]
        wh = cxcywh[box_idx, 2:4]
        area = float(input_hw[0] * input_hw[1])
        # box fields: for several boxes on one slot the last one wins (plain fancy assignment)
        targets[rows, 0] = 1.0
        targets[rows, 1] = gx - col
        targets[rows, 2] = gy - row
        targets[rows, 3:5] = np.log(wh / self.flat_anchors[anchor_idx])
        targets[rows, 5] = 2.0 - wh[:, 0] * wh[:, 1] / area
        targets[rows, 6:10] = boxes[box_idx]
        targets[rows, NUM_BOX_FIELDS + classes[box_idx]] = 1.0          # classes OR-ed
        return targets


@ASSIGNERS.register("best_anchor")
class BestAnchorAssigner(AnchorAssigner):
    """YOLOv3's rule: each box goes to the one anchor, over all scales, with the best shape IoU."""

    def match(self, wh):
        ious = shape_iou(wh, self.flat_anchors)                  # (N, K)
        return np.arange(len(wh)), ious.argmax(axis=1)
