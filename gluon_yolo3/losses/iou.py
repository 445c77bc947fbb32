"""IoU-based box loss terms (GIoU, DIoU, CIoU); the overlap measures themselves are in `boxes.py`.

    loss:
      terms:
        - {type: xy_bce}             # keep or drop: the IoU terms act on the decoded box as a whole
        - {type: ciou, weight: 1.0}  # in place of wh_l1
        - {type: objectness_bce}
        - {type: class_bce}
"""
from __future__ import annotations

from ..boxes import iou_family
from ..registry import LOSSES
from .terms import LossTerm, field, per_image_sum


class IoUBoxLoss(LossTerm):
    """Box loss `1 - metric(pred_boxes, assigned box)` summed over assigned anchors (per image)."""

    kind = "iou"

    def __init__(self, use_box_weight: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.use_box_weight = bool(use_box_weight)

    def hybrid_forward(self, F, pred, target, pred_boxes, noobj):
        weight = field(F, target, 0, 1)                                  # (B, T, 1) assigned anchors
        if self.use_box_weight:
            weight = weight * field(F, target, 5, 6)                     # 2 - w*h / (W*H)
        metric = iou_family(F, pred_boxes, field(F, target, 6, 10), self.kind)   # (B, T)
        return per_image_sum(F, F.broadcast_mul(1 - F.expand_dims(metric, -1), weight))


@LOSSES.register("giou")
class GIoULoss(IoUBoxLoss):
    """Box: sum over assigned anchors of (1 - GIoU(decoded box, assigned box)) x box weight 2 - w*h."""

    short_name = "giou"
    kind = "giou"


@LOSSES.register("diou")
class DIoULoss(IoUBoxLoss):
    """Box: sum over assigned anchors of (1 - DIoU(decoded box, assigned box)) x box weight 2 - w*h."""

    short_name = "diou"
    kind = "diou"


@LOSSES.register("ciou")
class CIoULoss(IoUBoxLoss):
    """Box: sum over assigned anchors of (1 - CIoU(decoded box, assigned box)) x box weight 2 - w*h."""

    short_name = "ciou"
    kind = "ciou"
