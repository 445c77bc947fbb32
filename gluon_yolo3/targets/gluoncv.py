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

from ..registry import ASSIGNERS
from .assigner import BestAnchorAssigner


@ASSIGNERS.register("gluoncv")
class GluonCVAssigner(BestAnchorAssigner):
    """GluonCV's rule: best anchor over all scales; on a shared slot the last box wins, one-hot class.

    Same output layout as every assigner, `(T, 10 + C)` (DEVELOPERS.md). The cell is
    `int(cx / W * grid_w)`, GluonCV's arithmetic (clipped into the grid, where GluonCV would index past
    the row); size targets use sides of at least one pixel.
    """

    min_side = 1.0

    def grid_position(self, centre, stride, grid_wh, input_hw):
        return centre / np.asarray([input_hw[1], input_hw[0]], dtype=np.float32) * grid_wh

    def keep_pairs(self, rows):
        """Only the last pair on each target row (its box, and so its class alone)."""
        _, last_from_end = np.unique(rows[::-1], return_index=True)
        return np.sort(len(rows) - 1 - last_from_end)
