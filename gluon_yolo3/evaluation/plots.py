"""Training curves and detection drawings.

Plots use `matplotlib.figure.Figure` with an Agg canvas directly, never pyplot, so they neither pick nor
change anyone's matplotlib backend or global state.
"""
from __future__ import annotations

import colorsys
import json
import math
from typing import Dict, List, Sequence

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

_SKIP_VAL_KEYS = {"kind", "epoch", "step"}


def read_jsonl(path) -> List[Dict]:
    """Records of a JSON-lines file; blank or unparsable lines (a partly written last line) are skipped."""
    records = []
    with open(path, "r", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _series(records: Sequence[Dict], x_key: str, y_key: str):
    """(x, y) lists of the records holding a finite number under both keys."""
    pairs = [(r[x_key], r[y_key]) for r in records if _is_number(r.get(x_key)) and _is_number(r.get(y_key))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _spans_decades(values: Sequence[float], ratio: float = 50.0) -> bool:
    positive = [v for v in values if v > 0]
    return len(positive) == len(values) and len(positive) > 1 and max(positive) / min(positive) >= ratio


def _finish(ax, title: str, xlabel: str, ylabel: str, has_data: bool):
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if not has_data:
        ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes, color="gray")
    elif ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")


def _plot_losses(ax, train: Sequence[Dict]):
    keys = sorted({k for r in train for k in r if k.startswith("loss")}, key=lambda k: (k != "loss", k))
    every = []
    for key in keys:
        x, y = _series(train, "step", key)
        if x:
            ax.plot(x, y, label=key, linewidth=2.0 if key == "loss" else 1.0)
            every += y
    log = _spans_decades(every)
    if log:
        ax.set_yscale("log")
    _finish(ax, "Training loss", "step", "loss (log scale)" if log else "loss", bool(every))


def _plot_lr(ax, train: Sequence[Dict]):
    x, y = _series(train, "step", "lr")
    if x:
        ax.plot(x, y, color="tab:purple")
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    _finish(ax, "Learning rate", "step", "learning rate", bool(x))


def _plot_val(ax, val: Sequence[Dict]):
    keys = sorted({k for r in val for k, v in r.items() if k not in _SKIP_VAL_KEYS and _is_number(v)})
    any_data = False
    for key in keys:
        x, y = _series(val, "epoch", key)
        if x:
            ax.plot(x, y, marker="o", label=key)
            any_data = True
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _finish(ax, "Validation", "epoch", "metric", any_data)


def plot_training(jsonl_path, png_path):
    """Plot the trainer's metrics JSON lines into one PNG: loss terms and learning rate vs step,
    validation metrics vs epoch. Paths are str or PathLike; returns png_path."""
    records = read_jsonl(jsonl_path)
    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    fig = Figure(figsize=(15, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_lr, ax_val = fig.subplots(1, 3)
    _plot_losses(ax_loss, train)
    _plot_lr(ax_lr, train)
    _plot_val(ax_val, val)
    fig.suptitle(f"Training progress: {jsonl_path}", fontsize="medium")
    fig.tight_layout()
    fig.savefig(png_path, format="png")
    return png_path


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
                    gt_boxes=None, zoom: int = 1) -> np.ndarray:
    """Draw detections on a copy of `image` `(H, W, 3)` uint8 RGB and return it (written to `path` if given;
    `zoom` > 1 enlarges the image by that whole factor first).

    boxes `(K, 4)` x1y1x2y2 pixels, ids `(K,)` or `(K, 1)` (< 0: padding, skipped), scores likewise or
    None; one colour per class, label "name 0.87". gt_boxes `(M, 4)` (optional) in a thin light-gray line.
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
        text = name if scores is None else f"{name} {scores[k]:.2f}"
        _draw_label(out, text, max(x1, 0), max(y1, 0), color)
    if path is not None:
        if not cv2.imwrite(str(path), cv2.cvtColor(out, cv2.COLOR_RGB2BGR)):
            raise OSError(f"cv2.imwrite could not write {path}")
    return out
