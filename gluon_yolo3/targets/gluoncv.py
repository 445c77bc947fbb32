"""GluonCV's YOLOv3 target rule (`YOLOV3PrefetchTargetGenerator`), as a selectable assigner.

    assigner: {type: gluoncv}

It picks the same anchor and cell as `best_anchor`; it differs in two details that change the loss:
- several boxes on one (cell, anchor): the last box takes the slot whole, its class one-hot
  (`best_anchor` keeps the last box's box fields but OR-s the classes of all of them);
- the size target is `log(max(w, 1) / anchor_w)`, `log(max(h, 1) / anchor_h)`: sides under one pixel
  count as one pixel (the box weight `2 - w*h / (W*H)` still uses the true sides).
"""
from __future__ import annotations

import numpy as np

from ..boxes import shape_iou, xyxy_to_cxcywh
from ..registry import ASSIGNERS
from .assigner import NUM_BOX_FIELDS, AnchorAssigner


@ASSIGNERS.register("gluoncv")
class GluonCVAssigner(AnchorAssigner):
    """GluonCV's rule: best anchor over all scales; on a shared slot the last box wins, one-hot class.

    Same output layout as every assigner, `(T, 10 + C)` (DEVELOPERS.md). The cell is
    `int(cx / W * grid_w)`, GluonCV's arithmetic (clipped into the grid, where GluonCV would index past
    the row); size targets use sides of at least one pixel.
    """

    def match(self, wh):
        ious = shape_iou(wh, self.flat_anchors)                  # (N, K)
        return np.arange(len(wh)), ious.argmax(axis=1)

    def __call__(self, boxes, classes, input_hw):
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
        scale = self.anchor_scale[anchor_idx]
        grid_h = np.asarray([s[0] for s in shapes])[scale]
        grid_w = np.asarray([s[1] for s in shapes])[scale]
        num_a = np.asarray([s[2] for s in shapes])[scale]
        offsets = np.cumsum([0] + [h * w * a for h, w, a in shapes])[scale]
        gx = cxcywh[box_idx, 0] / input_hw[1] * grid_w
        gy = cxcywh[box_idx, 1] / input_hw[0] * grid_h
        col = np.clip(np.floor(gx), 0, grid_w - 1).astype(np.int64)
        row = np.clip(np.floor(gy), 0, grid_h - 1).astype(np.int64)
        rows = offsets + (row * grid_w + col) * num_a + self.anchor_local[anchor_idx]
        # the last box on each slot takes it whole
        _, last_from_end = np.unique(rows[::-1], return_index=True)
        take = np.sort(len(rows) - 1 - last_from_end)
        rows, box_idx, anchor_idx = rows[take], box_idx[take], anchor_idx[take]
        gx, gy, col, row = gx[take], gy[take], col[take], row[take]
        wh = cxcywh[box_idx, 2:4]
        targets[rows, 0] = 1.0
        targets[rows, 1] = gx - col
        targets[rows, 2] = gy - row
        targets[rows, 3:5] = np.log(np.maximum(wh, 1.0) / self.flat_anchors[anchor_idx])
        targets[rows, 5] = 2.0 - wh[:, 0] * wh[:, 1] / float(input_hw[0] * input_hw[1])
        targets[rows, 6:10] = boxes[box_idx]
        targets[rows, NUM_BOX_FIELDS + classes[box_idx]] = 1.0
        return targets
