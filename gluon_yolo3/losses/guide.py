"""The loss of the seed guide ("Dive Really Deep into YOLO v3: A Beginner's Guide") as loss terms.

    Loss = lambda_coord * sum(obj * ((sigmoid(tx), sigmoid(ty)) - (x, y))^2)        xy_mse
         + lambda_coord * sum(obj * ((tw, th) - (log w/aw, log h/ah))^2)             wh_mse
         + sum(obj * BCE(o, 1)) + lambda_noobj * sum(noobj * BCE(o, 0))               objectness_bce
         + sum(obj * BCE(classes))                                                    class_bce

with lambda_coord = 5 (YOLO v1) and lambda_noobj = 0.5; the objectness and class parts are the existing
terms (`objectness_bce` with `noobj_weight: 0.5`). `recipes/demo_tiny_guide.yaml` puts them together.
The squared errors are summed over x and y (w and h) and over the assigned anchors of each image.
"""
from __future__ import annotations

from ..registry import LOSSES
from .terms import LossTerm, field, per_image_sum


class _CoordMSE(LossTerm):
    """lambda_coord x squared error of two prediction channels against two target channels."""

    def __init__(self, lambda_coord: float = 5.0, use_box_weight: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.lambda_coord = float(lambda_coord)
        self.use_box_weight = bool(use_box_weight)

    def _weight(self, F, target):
        weight = field(F, target, 0, 1)
        if self.use_box_weight:
            weight = weight * field(F, target, 5, 6)
        return weight * self.lambda_coord

    def _sum(self, F, error, target):
        return per_image_sum(F, F.broadcast_mul(F.square(error), self._weight(F, target)))


@LOSSES.register("xy_mse")
class XYMSE(_CoordMSE):
    """Centre (guide): lambda_coord x squared error of sigmoid(tx, ty) against the in-cell centre."""

    short_name = "xy"

    def hybrid_forward(self, F, pred, target, pred_boxes, noobj):
        return self._sum(F, F.sigmoid(field(F, pred, 0, 2)) - field(F, target, 1, 3), target)


@LOSSES.register("wh_mse")
class WHMSE(_CoordMSE):
    """Size (guide): lambda_coord x squared error of tw, th against log(w / anchor_w), log(h / anchor_h)."""

    short_name = "wh"

    def hybrid_forward(self, F, pred, target, pred_boxes, noobj):
        return self._sum(F, field(F, pred, 2, 4) - field(F, target, 3, 5), target)
