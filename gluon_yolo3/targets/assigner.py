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
    """Shared encoding; subclasses choose which (box, anchor) pairs are positives in `match`.

    `neighbours`: each positive also trains, with the same anchor, the two cells beside its own that lie nearest
    the box centre (left or right, above or below; YOLOv5's rule), whose centre target then lies in (-0.5, 1.5):
    three positives per pair instead of one. It needs a decoder that reaches there, `model.scale_x_y` >= 2.
    """

    def __init__(self, anchors: Sequence, strides: Sequence[int], num_classes: int, neighbours: bool = False):
        self.anchors = [np.asarray(a, dtype=np.float32).reshape(-1, 2) for a in anchors]
        self.strides = tuple(int(s) for s in strides)
        if len(self.anchors) != len(self.strides):
            raise ValueError(f"{len(self.anchors)} anchor groups for {len(self.strides)} strides")
        self.num_classes = int(num_classes)
        self.neighbours = bool(neighbours)
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

    # Hooks a variant may override (GluonCV's generator differs in exactly these three details).
    min_side = 0.0   # size targets use max(side, min_side)

    def grid_position(self, centre: np.ndarray, stride: np.ndarray, grid_wh: np.ndarray,
                      input_hw: Tuple[int, int]) -> np.ndarray:
        """Box centres `(P, 2)` x, y input pixels -> positions in grid units `(P, 2)`."""
        return centre / stride[:, None]

    def keep_pairs(self, rows: np.ndarray) -> np.ndarray:
        """Which positive pairs to write, given their target rows `(P,)`: all of them (on a shared slot
        the last box's box fields win and the classes are OR-ed)."""
        return np.arange(len(rows))

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
        grid_hwa = np.asarray(shapes)[scale]                                   # (P, 3): H, W, A
        offsets = np.cumsum([0] + [h * w * a for h, w, a in shapes])[scale]
        g = self.grid_position(cxcywh[box_idx, 0:2], stride, grid_hwa[:, 1::-1], input_hw)
        col = np.clip(np.floor(g[:, 0]), 0, grid_hwa[:, 1] - 1).astype(np.int64)   # x -> column j
        row = np.clip(np.floor(g[:, 1]), 0, grid_hwa[:, 0] - 1).astype(np.int64)   # y -> row i
        if self.neighbours:
            pick, col, row = neighbour_cells(g - np.stack([col, row], axis=1), col, row, grid_hwa)
            box_idx, anchor_idx, g, grid_hwa, offsets = (a[pick] for a in (box_idx, anchor_idx, g, grid_hwa, offsets))
        rows = offsets + (row * grid_hwa[:, 1] + col) * grid_hwa[:, 2] + self.anchor_local[anchor_idx]
        take = self.keep_pairs(rows)
        rows, box_idx, anchor_idx, g, col, row = (a[take] for a in (rows, box_idx, anchor_idx, g, col, row))
        wh = cxcywh[box_idx, 2:4]
        area = float(input_hw[0] * input_hw[1])
        targets[rows, 0] = 1.0
        targets[rows, 1] = g[:, 0] - col
        targets[rows, 2] = g[:, 1] - row
        targets[rows, 3:5] = np.log(np.maximum(wh, self.min_side) / self.flat_anchors[anchor_idx])
        targets[rows, 5] = 2.0 - wh[:, 0] * wh[:, 1] / area
        targets[rows, 6:10] = boxes[box_idx]
        targets[rows, NUM_BOX_FIELDS + classes[box_idx]] = 1.0
        return targets


    def decode(self, targets: np.ndarray, input_hw: Tuple[int, int]) -> List[dict]:
        """The assigned objects of a target array `(T, 10 + C)`, read back from its encoding alone: per
        positive row, the box rebuilt from the cell offsets and log sizes (x1y1x2y2 input pixels; not the
        stored copy in [6:10]), the classes, and where it sits: scale, row i, column j, anchor of the scale.

        Inverse of `__call__` up to `min_side` (a wrong [y][x] or xywh order would put the boxes elsewhere)."""
        out = []
        offset = 0
        for s, (h, w, a) in enumerate(self.grid_shapes((int(input_hw[0]), int(input_hw[1])))):
            block = targets[offset:offset + h * w * a].reshape(h, w, a, -1)
            offset += h * w * a
            for i, j, k in zip(*np.nonzero(block[..., 0] > 0)):
                t = block[i, j, k]
                cx, cy = (j + t[1]) * self.strides[s], (i + t[2]) * self.strides[s]
                bw, bh = np.exp(t[3:5]) * self.anchors[s][k]
                out.append({"box": np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], np.float32),
                            "classes": np.flatnonzero(t[NUM_BOX_FIELDS:]).tolist(), "scale": s, "row": int(i),
                            "col": int(j), "anchor": int(k)})
        return out


def neighbour_cells(in_cell: np.ndarray, col: np.ndarray, row: np.ndarray, grid_hwa: np.ndarray):
    """`(pick, col, row)`: pairs `pick` (indices into the P positive pairs) placed in cells (col, row): first the
    horizontal neighbour nearer the centre (`in_cell` x < 0.5: the left one, > 0.5: the right one) where the grid
    has it, then the vertical one likewise, then every pair in its own cell, so that on a shared slot a box's own
    cell wins over another box's neighbour. in_cell `(P, 2)`, col, row `(P,)`, grid_hwa `(P, 3)` H, W, A."""
    p = np.arange(len(col))
    fx, fy = in_cell[:, 0], in_cell[:, 1]
    sides = ((p[(fx < 0.5) & (col > 0)], -1, 0), (p[(fx > 0.5) & (col < grid_hwa[:, 1] - 1)], 1, 0),
             (p[(fy < 0.5) & (row > 0)], 0, -1), (p[(fy > 0.5) & (row < grid_hwa[:, 0] - 1)], 0, 1))
    pick = np.concatenate([i for i, _, _ in sides] + [p])
    dcol = np.concatenate([np.full(len(i), d) for i, d, _ in sides] + [np.zeros(len(p), np.int64)])
    drow = np.concatenate([np.full(len(i), d) for i, _, d in sides] + [np.zeros(len(p), np.int64)])
    return pick, col[pick] + dcol, row[pick] + drow


@ASSIGNERS.register("best_anchor")
class BestAnchorAssigner(AnchorAssigner):
    """YOLOv3's rule: each box goes to the anchor, over all scales, with the best shape IoU. An anchor shape that
    several scales share (yolov4-tiny's 81x82, whose index both [yolo] masks name) trains on each of them, as in
    Darknet, where every [yolo] layer whose mask holds the best anchor's index takes the box."""

    def match(self, wh):
        best = shape_iou(wh, self.flat_anchors).argmax(axis=1)                      # (N,)
        same = np.all(self.flat_anchors[None, :, :] == self.flat_anchors[best][:, None, :], axis=-1)   # (N, K)
        return np.nonzero(same)                                                     # by box, then by anchor
