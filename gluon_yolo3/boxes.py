"""Box maths, in one place: conversions, IoU of all pairs and of box shapes (numpy), and the IoU family
(IoU, GIoU, DIoU, CIoU) and pairwise IoU as symbolic functions of `F` (mx.nd or mx.sym) for the loss and NMS.

Boxes are x1y1x2y2 everywhere except the centre form `cxcywh` of target encoding (`xyxy_to_cxcywh`).

Definitions, for boxes A (prediction) and B (target), C the smallest box enclosing both:
- IoU  = |A & B| / |A | B|
- GIoU = IoU - (|C| - |A | B|) / |C|                                 (Rezatofighi et al. 2019)
- DIoU = IoU - d^2 / c^2, d the distance of the centres, c the diagonal of C  (Zheng et al. 2020)
- CIoU = DIoU - alpha * v, v = 4 / pi^2 * (atan(wB / hB) - atan(wA / hA))^2,
  alpha = v / (1 - IoU + v)                                                       (Zheng et al. 2020)
In CIoU, alpha is a trade-off weight held constant in back-propagation (stop_gradient), as in the reference
implementations (Ultralytics, MMDetection).

Two numpy IoUs on purpose: `box_iou` (exact quotient, 0 for an empty union) serves the metrics, which are
compared with GluonCV's and pycocotools' to the last digit; `iou_pairs` mirrors the symbolic `iou_family`
(EPS in every denominator) so that numpy NMS after an ONNX model equals the MXNet graph's NMS.
"""
from __future__ import annotations

import math

import numpy as np

KINDS = ("iou", "giou", "diou", "ciou")
EPS = 1e-9  # keeps every quotient finite (zero-size padding boxes), far below any pixel-scale value


# ---- numpy ------------------------------------------------------------------------------------------

def xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    """`(..., 4)` x1y1x2y2 -> `(..., 4)` centre x, centre y, width, height (same units)."""
    boxes = np.asarray(boxes, dtype=np.float32)
    wh = boxes[..., 2:4] - boxes[..., 0:2]
    return np.concatenate([boxes[..., 0:2] + wh / 2, wh], axis=-1)


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """`(..., 4)` centre x, centre y, width, height -> `(..., 4)` x1y1x2y2 (same units)."""
    boxes = np.asarray(boxes, dtype=np.float32)
    half = boxes[..., 2:4] / 2
    return np.concatenate([boxes[..., 0:2] - half, boxes[..., 0:2] + half], axis=-1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix `(N, M)` of boxes `a (N, 4)` and `b (M, 4)`, both x1y1x2y2."""
    a = np.asarray(a, dtype=np.float64)[:, None, :]
    b = np.asarray(b, dtype=np.float64)[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def shape_iou(wh_a: np.ndarray, wh_b: np.ndarray) -> np.ndarray:
    """IoU `(N, M)` of shapes `(N, 2)` and `(M, 2)` (w, h) with their centres aligned."""
    wh_a = np.asarray(wh_a, dtype=np.float64)[:, None, :]
    wh_b = np.asarray(wh_b, dtype=np.float64)[None, :, :]
    inter = np.minimum(wh_a[..., 0], wh_b[..., 0]) * np.minimum(wh_a[..., 1], wh_b[..., 1])
    union = wh_a[..., 0] * wh_a[..., 1] + wh_b[..., 0] * wh_b[..., 1] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def iou_pairs(a: np.ndarray, b: np.ndarray, kind: str = "iou") -> np.ndarray:
    """IoU (or DIoU) of x1y1x2y2 boxes `a (N, 4)` against `b (M, 4)` -> `(N, M)`, numpy, computed as
    `iou_family` computes them (plain areas, `EPS` in the denominators), so that numpy NMS equals the symbolic one."""
    a, b = a[:, None, :].astype(np.float64), b[None, :, :].astype(np.float64)
    aw, ah = np.maximum(a[..., 2] - a[..., 0], 0), np.maximum(a[..., 3] - a[..., 1], 0)
    bw, bh = np.maximum(b[..., 2] - b[..., 0], 0), np.maximum(b[..., 3] - b[..., 1], 0)
    iw = np.maximum(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0)
    ih = np.maximum(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0)
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    iou = inter / (union + EPS)
    if kind == "iou":
        return iou
    cw = np.maximum(a[..., 2], b[..., 2]) - np.minimum(a[..., 0], b[..., 0])
    ch = np.maximum(a[..., 3], b[..., 3]) - np.minimum(a[..., 1], b[..., 1])
    dx = (a[..., 0] + a[..., 2] - b[..., 0] - b[..., 2]) / 2
    dy = (a[..., 1] + a[..., 3] - b[..., 1] - b[..., 3]) / 2
    return iou - (dx ** 2 + dy ** 2) / (cw ** 2 + ch ** 2 + EPS)


# ---- symbolic (F = mx.nd or mx.sym) ------------------------------------------------------------

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


def pairwise_iou(F, a, b):
    """IoU `(B, N, M)` of boxes `a (B, N, 4)` and `b (B, M, 4)`, x1y1x2y2; padded (-1) boxes give 0."""
    a = F.expand_dims(a, axis=2)                                      # (B, N, 1, 4)
    b = F.expand_dims(b, axis=1)                                      # (B, 1, M, 4)
    a1, a2 = F.slice_axis(a, axis=-1, begin=0, end=2), F.slice_axis(a, axis=-1, begin=2, end=4)
    b1, b2 = F.slice_axis(b, axis=-1, begin=0, end=2), F.slice_axis(b, axis=-1, begin=2, end=4)
    inter = _area(F, F.relu(F.broadcast_minimum(a2, b2) - F.broadcast_maximum(a1, b1)))
    area_a = _area(F, F.relu(a2 - a1))
    area_b = _area(F, F.relu(b2 - b1))
    union = F.broadcast_sub(F.broadcast_add(area_a, area_b), inter)
    return inter / F.maximum(union, 1e-12)


def _area(F, wh):
    """`(..., 2)` width, height -> `(...)` w * h (a product whose gradient stays finite at zero sides)."""
    w = F.slice_axis(wh, axis=-1, begin=0, end=1)
    h = F.slice_axis(wh, axis=-1, begin=1, end=2)
    return F.squeeze(w * h, axis=-1)
