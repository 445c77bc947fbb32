"""Detections and ground truth drawn on images (OpenCV): one colour per class, labels "name 0.87".

    draw_detections(image, boxes, ids, scores, class_names, path="out.jpg")

Used by `predict`, the training run's prediction previews and `data show`.
"""
from __future__ import annotations

import colorsys
from typing import Optional, Sequence

import cv2
import numpy as np


def class_color(class_id: int) -> tuple:
    """A distinct, saturated RGB colour (0-255 ints) for a class id (golden-ratio hue steps)."""
    hue = (int(class_id) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def _as_numpy(a):
    if a is None:
        return None
    return a.asnumpy() if hasattr(a, "asnumpy") else np.asarray(a)


def _draw_label(image: np.ndarray, text: str, x: int, y: int, color: tuple):
    """Filled label box with `text` just above (or, at the top edge, inside) the point (x, y)."""
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    top = y - th - base - 2 if y - th - base - 2 >= 0 else y
    cv2.rectangle(image, (x, top), (x + tw + 2, top + th + base + 2), color, thickness=-1)
    text_color = (0, 0, 0) if sum(color) > 382 else (255, 255, 255)
    cv2.putText(image, text, (x + 1, top + th + 1), font, scale, text_color, thick, cv2.LINE_AA)


def draw_detections(image, boxes, ids, scores, class_names: Sequence[str] | None = None, path=None,
                    gt_boxes=None, zoom: int = 1, labels: Optional[Sequence[str]] = None) -> np.ndarray:
    """Draw detections on a copy of `image` `(H, W, 3)` uint8 RGB and return it (written to `path` if given;
    `zoom` > 1 enlarges the image by that whole factor first).

    boxes `(K, 4)` x1y1x2y2 pixels, ids `(K,)` or `(K, 1)` (< 0: padding, skipped), scores likewise or
    None; one colour per class, label "name 0.87" (or `labels[k]`). gt_boxes `(M, 4)` (optional) in a thin
    light-gray line.
    """
    out = np.ascontiguousarray(_as_numpy(image), dtype=np.uint8).copy()
    boxes = _as_numpy(boxes).reshape(-1, 4)
    if zoom > 1:   # enlarged (nearest) so that labels stay legible on small images; boxes follow
        out = cv2.resize(out, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)
        boxes = boxes * zoom
        gt_boxes = None if gt_boxes is None else _as_numpy(gt_boxes).reshape(-1, 4) * zoom
    ids = _as_numpy(ids).reshape(-1)
    scores = None if scores is None else _as_numpy(scores).reshape(-1)
    if gt_boxes is not None:
        for x1, y1, x2, y2 in np.round(_as_numpy(gt_boxes).reshape(-1, 4)).astype(int):
            if x2 > x1 or y2 > y1:  # skip -1 padding rows
                cv2.rectangle(out, (x1, y1), (x2, y2), (220, 220, 220), 1, cv2.LINE_AA)
    thickness = max(1, round(min(out.shape[:2]) / 300))
    limit = 4 * max(out.shape[:2])  # cv2 wants int32 points; an untrained net's boxes can be huge
    for k in np.flatnonzero((ids >= 0) & np.isfinite(boxes).all(axis=1)):
        c = int(ids[k])
        x1, y1, x2, y2 = (int(v) for v in np.round(np.clip(boxes[k], -limit, limit)))
        color = class_color(c)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness)
        name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
        text = labels[k] if labels is not None else name if scores is None else f"{name} {scores[k]:.2f}"
        _draw_label(out, text, max(x1, 0), max(y1, 0), color)
    if path is not None:
        if not cv2.imwrite(str(path), cv2.cvtColor(out, cv2.COLOR_RGB2BGR)):
            raise OSError(f"cv2.imwrite could not write {path}")
    return out
