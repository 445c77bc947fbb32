"""Multi-anchor assignment: a box trains every anchor whose shape fits it well enough (Darknet's
`iou_thresh` rule of the [yolo] layer, 0.213 in YOLOv4's cfg), not only its best one.

    assigner: {type: multi_anchor, iou_thresh: 0.213}
"""
from __future__ import annotations

import numpy as np

from ..boxes import shape_iou
from ..registry import ASSIGNERS
from .assigner import AnchorAssigner


@ASSIGNERS.register("multi_anchor")
class MultiAnchorAssigner(AnchorAssigner):
    """Positives: every anchor, over all scales, whose shape IoU with the box exceeds iou_thresh, and
    always the best anchor (so a box that fits no anchor well still gets one).

    Shape IoU is the IoU of the (w, h) pair with the centres aligned, as in `best_anchor`; each positive
    anchor is placed in the cell of its own scale that holds the box centre. With `iou_thresh >= 1` this
    is `best_anchor`.
    """

    def __init__(self, anchors, strides, num_classes: int, iou_thresh: float = 0.213, neighbours: bool = False):
        super().__init__(anchors, strides, num_classes, neighbours)
        if not 0 <= iou_thresh <= 1:
            raise ValueError(f"multi_anchor: iou_thresh must lie in [0, 1], got {iou_thresh}")
        self.iou_thresh = float(iou_thresh)

    def match(self, wh):
        ious = shape_iou(wh, self.flat_anchors)                  # (N, K)
        positive = ious > self.iou_thresh
        positive[np.arange(len(wh)), ious.argmax(axis=1)] = True
        box_idx, anchor_idx = np.nonzero(positive)               # by box, then by anchor
        return box_idx, anchor_idx
