"""IoU-family overlap measures (IoU, GIoU, DIoU, CIoU) and the box loss terms built on them.

    iou_family(F, a, b, "ciou")      # elementwise, broadcasting, x1y1x2y2 boxes (..., 4) -> (...)

    loss:
      terms:
        - {type: xy_bce}             # keep or drop: the IoU terms act on the decoded box as a whole
        - {type: ciou, weight: 1.0}  # in place of wh_l1
        - {type: objectness_bce}
        - {type: class_bce}

Definitions, for boxes A (prediction) and B (target), C the smallest box enclosing both:
- IoU  = |A & B| / |A | B|
- GIoU = IoU - (|C| - |A | B|) / |C|                                 (Rezatofighi et al. 2019)
- DIoU = IoU - d^2 / c^2, d the distance of the centres, c the diagonal of C  (Zheng et al. 2020)
- CIoU = DIoU - alpha * v, v = 4 / pi^2 * (atan(wB / hB) - atan(wA / hA))^2,
  alpha = v / (1 - IoU + v)                                                       (Zheng et al. 2020)
In CIoU, alpha is a trade-off weight and is held constant in back-propagation (stop_gradient), as in the
reference implementations (Ultralytics, MMDetection): the gradient of CIoU is that of DIoU - alpha * v
with alpha fixed at its current value.
"""
from __future__ import annotations

import math

from ..registry import LOSSES
from .terms import LossTerm, field, per_image_sum

KINDS = ("iou", "giou", "diou", "ciou")
EPS = 1e-9  # keeps every quotient finite (zero-size padding boxes), far below any pixel-scale value


def iou_family(F, a, b, kind: str = "iou", eps: float = EPS):
    """IoU / GIoU / DIoU / CIoU of x1y1x2y2 boxes `a (..., 4)` and `b (..., 4)`, elementwise -> `(...)`.

    The leading axes broadcast (e.g. `a (B, K, 1, 4)` with `b (B, 1, K, 4)` gives all pairs `(B, K, K)`).
    Widths and heights are clipped at 0; `eps` is added to every denominator. The result lies in [-1, 1]
    (IoU in [0, 1]); 1 for identical boxes.
    """
    if kind not in KINDS:
        raise ValueError(f"iou_family: kind must be one of {KINDS}, got {kind!r}")

    def coord(x, i):
        return F.slice_axis(x, axis=-1, begin=i, end=i + 1)             # (..., 1)

    ax1, ay1, ax2, ay2 = (coord(a, i) for i in range(4))
    bx1, by1, bx2, by2 = (coord(b, i) for i in range(4))
    aw, ah = F.relu(ax2 - ax1), F.relu(ay2 - ay1)
    bw, bh = F.relu(bx2 - bx1), F.relu(by2 - by1)
    iw = F.relu(F.broadcast_minimum(ax2, bx2) - F.broadcast_maximum(ax1, bx1))
    ih = F.relu(F.broadcast_minimum(ay2, by2) - F.broadcast_maximum(ay1, by1))
    inter = iw * ih
    union = F.broadcast_add(aw * ah, bw * bh) - inter
    iou = inter / (union + eps)
    if kind == "iou":
        return F.sum(iou, axis=-1)
    cw = F.broadcast_maximum(ax2, bx2) - F.broadcast_minimum(ax1, bx1)  # enclosing box C
    ch = F.broadcast_maximum(ay2, by2) - F.broadcast_minimum(ay1, by1)
    if kind == "giou":
        enclosing = cw * ch
        return F.sum(iou - (enclosing - union) / (enclosing + eps), axis=-1)
    dx = F.broadcast_sub(ax1 + ax2, bx1 + bx2) / 2                      # centre distance
    dy = F.broadcast_sub(ay1 + ay2, by1 + by2) / 2
    diou = iou - (F.square(dx) + F.square(dy)) / (F.square(cw) + F.square(ch) + eps)
    if kind == "diou":
        return F.sum(diou, axis=-1)
    v = (4 / math.pi ** 2) * F.square(F.broadcast_sub(F.arctan(bw / (bh + eps)), F.arctan(aw / (ah + eps))))
    alpha = F.stop_gradient(v / (1 - iou + v + eps))
    return F.sum(diou - alpha * v, axis=-1)


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
