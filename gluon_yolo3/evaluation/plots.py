"""Training curves: loss terms, learning rate and validation metric of a run's metrics.jsonl.

Plots use `matplotlib.figure.Figure` with an Agg canvas directly, never pyplot, so they neither pick nor
change anyone's matplotlib backend or global state.
"""
from __future__ import annotations

import json
import math
from typing import Dict, List, Sequence

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
