"""The classic YOLOv3 loss terms, as registered HybridBlocks.

Every term is called `term(pred, target, pred_boxes, noobj)` with
- pred `(B, T, 5 + C)`: raw outputs `tx, ty, tw, th, obj, class logits`, flattened over scales;
- target `(B, T, 10 + C)`: the assigner's layout (DEVELOPERS.md);
- pred_boxes `(B, T, 4)`: decoded predictions, x1y1x2y2 input pixels (absolute, for IoU-based terms);
- noobj `(B, T, 1)`: 1 where a prediction counts as background (no object assigned and its box overlaps
  no ground truth by more than the ignore threshold), else 0;
and returns the per-image sum `(B,)`. The composer weights the terms; the trainer divides by the global
batch size.
"""
from __future__ import annotations

from mxnet import gluon

from ..boxes import iou_family
from ..registry import LOSSES


def bce_with_logits(F, logits, target):
    """Elementwise binary cross-entropy of sigmoid(logits) against target, stable for any logit."""
    return F.relu(logits) - logits * target + F.Activation(-F.abs(logits), act_type="softrelu")


def field(F, x, begin, end):
    """Slice the last axis: `x[..., begin:end]` (end None = to the end)."""
    return F.slice_axis(x, axis=-1, begin=begin, end=end)


def per_image_sum(F, x):
    """`(B, ...)` -> `(B,)`."""
    return F.sum(F.reshape(x, (0, -1)), axis=1)


class LossTerm(gluon.HybridBlock):
    """Base class: subclasses implement `hybrid_forward(F, pred, target, pred_boxes, noobj)` -> (B,)."""

    short_name = "term"


@LOSSES.register("xy_bce")
class XYBCE(LossTerm):
    """Centre: sigmoid BCE of tx, ty against the in-cell centre, weighted by 2 - w*h (GluonCV, Darknet)."""

    short_name = "xy"

    def hybrid_forward(self, F, pred, target, pred_boxes, noobj):
        weight = F.broadcast_mul(field(F, target, 0, 1), field(F, target, 5, 6))
        loss = bce_with_logits(F, field(F, pred, 0, 2), field(F, target, 1, 3))
        return per_image_sum(F, F.broadcast_mul(loss, weight))


@LOSSES.register("wh_l1")
class WHL1(LossTerm):
    """Size: L1 between tw, th and log(w / anchor_w), log(h / anchor_h), weighted by 2 - w*h."""

    short_name = "wh"

    def hybrid_forward(self, F, pred, target, pred_boxes, noobj):
        weight = F.broadcast_mul(field(F, target, 0, 1), field(F, target, 5, 6))
        loss = F.abs(field(F, pred, 2, 4) - field(F, target, 3, 5))
        return per_image_sum(F, F.broadcast_mul(loss, weight))


@LOSSES.register("objectness_bce")
class ObjectnessBCE(LossTerm):
    """Objectness: BCE towards 1 on assigned anchors and towards 0 on background (ignore mask applied).

    `iou_target` r in [0, 1] moves an assigned anchor's target from 1 to `1 - r + r * IoU(its decoded box, its
    ground truth)` (no gradient through the IoU; YOLOv5's `gr`), so that the score ranks well-placed boxes
    above loose ones; 0 (the default) is YOLOv3's target 1.
    """

    short_name = "obj"

    def __init__(self, noobj_weight: float = 1.0, iou_target: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= iou_target <= 1:
            raise ValueError(f"objectness_bce: iou_target must lie in [0, 1], got {iou_target}")
        self.noobj_weight = float(noobj_weight)
        self.iou_target = float(iou_target)

    def hybrid_forward(self, F, pred, target, pred_boxes, noobj):
        obj = field(F, target, 0, 1)
        logits = field(F, pred, 4, 5)
        goal = F.ones_like(logits)
        if self.iou_target:
            iou = F.stop_gradient(F.expand_dims(iou_family(F, pred_boxes, field(F, target, 6, 10)), -1))
            goal = goal * (1 - self.iou_target) + self.iou_target * iou      # IoU lies in [0, 1]
        positive = bce_with_logits(F, logits, goal) * obj
        negative = bce_with_logits(F, logits, F.zeros_like(logits)) * noobj
        return per_image_sum(F, positive + self.noobj_weight * negative)


@LOSSES.register("class_bce")
class ClassBCE(LossTerm):
    """Classes: per-class sigmoid BCE (multi-label, not softmax) on assigned anchors, optional label smoothing.

    `label_smoothing` s moves the class targets 1 -> 1 - s and 0 -> s (GluonCV's `--label-smooth` uses
    s = min(1 / C, 1 / 40)); 0 (the default) keeps them hard.
    """

    short_name = "cls"

    def __init__(self, label_smoothing: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= label_smoothing < 0.5:
            raise ValueError(f"class_bce: label_smoothing must lie in [0, 0.5), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def hybrid_forward(self, F, pred, target, pred_boxes, noobj):
        obj = field(F, target, 0, 1)
        classes = field(F, target, 10, None)
        if self.label_smoothing:
            classes = classes * (1 - 2 * self.label_smoothing) + self.label_smoothing
        loss = bce_with_logits(F, field(F, pred, 5, None), classes)
        return per_image_sum(F, F.broadcast_mul(loss, obj))
