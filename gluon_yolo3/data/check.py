"""Checking a dataset (counts, bad annotations, unreadable images, box statistics) and k-means anchors.

    report = check_dataset(dataset)                  # counts, problems, box sizes
    write_box_histograms(report, "box_stats.png")    # box sizes and aspect ratios, per class
    anchors = kmeans_anchors(wh, k=9, seed=0)        # (k, 2) sorted by area, 1 - IoU distance
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm import tqdm

from ..boxes import shape_iou
from .base import DatasetError


def dataset_label(dataset, i: int):
    """`(label (N, 6), image or None)`: the label without reading the image when the reader can."""
    if hasattr(dataset, "label"):
        return dataset.label(i), None
    image, label = dataset[i]
    return label, image


def check_dataset(dataset, read_images: bool = True, progress: bool = False) -> Dict[str, Any]:
    """Counts and problems of one dataset.

    Returns a dict: `images`, `boxes` (total), `split_source` (where a dataset folder's split comes from, or None),
    `warnings` (the reader's: what is used but looks wrong), `boxes_per_class` {name: count}, `empty_images` (count) and
    `empty_ids` (first 50), `found_classes` (the class names the annotations use, in `classes` or not),
    `problems` (the reader's list of skipped annotations and truncated images, plus unreadable images and
    images whose size differs from their annotation when `read_images`), `unreadable` (image ids), and
    `wh (M, 2)` / `classes (M,)`: width, height and class of every usable box, original pixels.
    """
    problems: List[str] = list(getattr(dataset, "problems", []))
    counts = np.zeros(len(dataset.classes), np.int64)
    wh, cls, empty_ids, unreadable = [], [], [], []
    for i in tqdm(range(len(dataset)), desc="check", unit="img", disable=not progress):
        label, image = dataset_label(dataset, i)
        if read_images and image is None:
            try:
                image, _ = dataset[i]
            except (DatasetError, OSError) as err:
                problems.append(f"{_image_name(dataset, i)}: {err}; the image would fail training")
                unreadable.append(dataset.image_id(i))
                image = None
            if image is not None and hasattr(dataset, "image_size"):
                if tuple(dataset.image_size(i)) != tuple(image.shape[:2]):
                    h, w = dataset.image_size(i)
                    problems.append(f"{_image_name(dataset, i)}: annotated as {w}x{h} but the image is "
                                    f"{image.shape[1]}x{image.shape[0]}")
        if not len(label):
            empty_ids.append(dataset.image_id(i))
            continue
        wh.append(label[:, 2:4] - label[:, 0:2])
        cls.append(label[:, 4].astype(np.int64))
        counts += np.bincount(cls[-1], minlength=len(counts))[:len(counts)]
    wh_all = np.concatenate(wh) if wh else np.zeros((0, 2), np.float32)
    return {"images": len(dataset), "boxes": int(counts.sum()), "split_source": getattr(dataset, "split_source", None),
            "warnings": list(getattr(dataset, "warnings", [])),
            "classes_list": list(dataset.classes),
            "found_classes": list(getattr(dataset, "found_classes", sorted(dataset.classes))),
            "boxes_per_class": {n: int(c) for n, c in zip(dataset.classes, counts)},
            "empty_images": len(empty_ids), "empty_ids": empty_ids[:50], "problems": problems,
            "unreadable": unreadable, "wh": wh_all,
            "classes": np.concatenate(cls) if cls else np.zeros((0,), np.int64)}


def _image_name(dataset, i: int) -> str:
    if hasattr(dataset, "image_path"):
        return str(dataset.image_path(i))
    return dataset.image_id(i)


def format_check(name: str, report: Mapping[str, Any]) -> str:
    """A human summary of one `check_dataset` report, every problem on its own line."""
    lines = [f"{name}: {report['images']} images, {report['boxes']} boxes, "
             f"{report['empty_images']} without boxes, {len(report['problems'])} problem(s)"]
    width = max([len(c) for c in report["boxes_per_class"]] + [5])
    for cls, count in report["boxes_per_class"].items():
        lines.append(f"  {cls:<{width}} {count:>7} boxes")
    if len(report["wh"]):
        w, h = report["wh"][:, 0], report["wh"][:, 1]
        lines.append(f"  box width  min {w.min():.0f} median {np.median(w):.0f} max {w.max():.0f} px; "
                     f"height min {h.min():.0f} median {np.median(h):.0f} max {h.max():.0f} px")
    if report.get("split_source"):
        lines.insert(1, f"  split: {report['split_source']}")
    for problem in report["problems"]:
        lines.append(f"  problem: {problem}")
    for warning in report.get("warnings", []):
        lines.append(f"  warning: {warning}")
    return "\n".join(lines)


def class_mismatch(found: Mapping[str, Sequence[str]]) -> Dict[str, List[str]]:
    """The classes each split alone has: `{"only_in_<split>": sorted names}` for every split of `found`
    (split name -> the class names found in its annotations, e.g. a dataset's `found_classes`)."""
    out = {}
    for name, classes in found.items():
        others = set().union(*(set(c) for n, c in found.items() if n != name))
        out[f"only_in_{name}"] = sorted(set(classes) - others)
    return out


def split_overlap(train, val) -> Optional[str]:
    """A warning when image files are in both splits (the validation figure would count photos the network trained
    on), or None; datasets without files (generated ones) have none."""
    if not (hasattr(train, "image_path") and hasattr(val, "image_path")):
        return None
    seen = {Path(train.image_path(i)).resolve() for i in range(len(train))}
    both = [val.image_path(i) for i in range(len(val)) if Path(val.image_path(i)).resolve() in seen]
    if not both:
        return None
    return (f"{len(both)} of the {len(val)} validation image(s) are in data.train too "
            f"({', '.join(Path(p).name for p in both[:3])}{', ...' if len(both) > 3 else ''}): the validation figure "
            "counts photos the network trained on")


def format_class_mismatch(mismatch: Mapping[str, Sequence[str]]) -> Optional[str]:
    """"classes only in data.train: A, B; only in data.val: C", or None when every split has the same."""
    parts = [f"only in data.{key[len('only_in_'):]}: {', '.join(names)}"
             for key, names in mismatch.items() if names]
    return "classes " + "; ".join(parts) if parts else None


def write_box_histograms(reports: Mapping[str, Mapping[str, Any]], path) -> Path:
    """A PNG with, per dataset (rows), histograms of box sqrt(area) and aspect ratio (w / h), per class."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(11, 3.6 * len(reports)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(reports), 2, squeeze=False)
    for row, (name, rep) in enumerate(reports.items()):
        wh, cls = np.asarray(rep["wh"], np.float64), np.asarray(rep["classes"])
        names = rep["classes_list"]
        size_ax, ratio_ax = axes[row]
        if len(wh):
            side = np.sqrt(wh[:, 0] * wh[:, 1])
            ratio = wh[:, 0] / wh[:, 1]
            size_bins = np.geomspace(max(side.min(), 1), side.max() * 1.01 + 1, 40)
            ratio_bins = np.geomspace(max(ratio.min(), 1e-2), ratio.max() * 1.01 + 1e-6, 40)
            for k, cname in enumerate(names):
                sel = cls == k
                if sel.any():
                    size_ax.hist(side[sel], bins=size_bins, alpha=0.6, label=f"{cname} ({int(sel.sum())})")
                    ratio_ax.hist(ratio[sel], bins=ratio_bins, alpha=0.6, label=cname)
            for ax in (size_ax, ratio_ax):
                ax.set_xscale("log")
            size_ax.legend(fontsize=8)
        else:
            size_ax.text(0.5, 0.5, "no boxes", ha="center", transform=size_ax.transAxes)
        size_ax.set_title(f"{name}: box size sqrt(w*h), original pixels")
        ratio_ax.set_title(f"{name}: aspect ratio w / h")
        size_ax.set_ylabel("boxes")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    tmp.replace(path)
    return path


def jsonable_report(report: Mapping[str, Any]) -> Dict[str, Any]:
    """The report without the per-box arrays (for JSON)."""
    return {k: v for k, v in report.items() if k not in ("wh", "classes")}


# ------------------------------------------------------------------------------------------- anchors

def best_possible_recall(wh: np.ndarray, anchors: np.ndarray, ratio: float = 4.0) -> float:
    """The share of boxes `(N, 2)` whose best anchor is within `ratio` of them in width and in height
    (Ultralytics' best possible recall, its `anchor_t` 4.0; under 0.98 its check calls the anchors a bad fit)."""
    if not len(wh):
        return float("nan")
    r = np.asarray(wh, np.float64)[:, None, :] / np.asarray(anchors, np.float64).reshape(-1, 2)[None, :, :]
    worst_side = np.minimum(r, 1 / r).min(axis=2)                          # (N, K)
    return float((worst_side.max(axis=1) > 1 / ratio).mean())


def anchor_fit(wh: np.ndarray, anchors) -> Dict[str, float]:
    """`{"mean_iou", "bpr"}` of anchors (any nesting of [w, h] pairs) on box shapes `wh (N, 2)`."""
    flat = np.asarray([a for group in anchors for a in group], np.float64).reshape(-1, 2)
    return {"mean_iou": mean_best_iou(wh, flat), "bpr": best_possible_recall(wh, flat)}


def mean_best_iou(wh: np.ndarray, anchors: np.ndarray) -> float:
    """Mean over boxes of the best shape IoU with any anchor."""
    if not len(wh):
        return float("nan")
    return float(shape_iou(wh, anchors).max(axis=1).mean())


def kmeans_anchors(wh: np.ndarray, k: int, seed: int = 0, iters: int = 300, restarts: int = 3) -> np.ndarray:
    """k-means of box shapes `wh (N, 2)` with distance 1 - IoU (YOLOv2's), centres the median of their
    cluster; k-means++ seeding, `restarts` runs from a generator seeded with `seed`, the best mean IoU kept.
    Returns `(k, 2)` float64 sorted by area.
    """
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    wh = wh[(wh > 0).all(axis=1)]
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(wh) < k:
        raise ValueError(f"k-means needs at least k={k} boxes, the data has {len(wh)}")
    rng = np.random.default_rng(seed)
    best, best_iou = None, -1.0
    for _ in range(max(1, restarts)):
        centres = _kmeanspp(wh, k, rng)
        assign = None
        for _ in range(iters):
            new = shape_iou(wh, centres).argmax(axis=1)
            if assign is not None and np.array_equal(new, assign):
                break
            assign = new
            for j in range(k):
                members = wh[assign == j]
                centres[j] = np.median(members, axis=0) if len(members) else wh[rng.integers(len(wh))]
        iou = mean_best_iou(wh, centres)
        if iou > best_iou:
            best, best_iou = centres.copy(), iou
    return best[np.argsort(best[:, 0] * best[:, 1], kind="stable")]


def _kmeanspp(wh: np.ndarray, k: int, rng) -> np.ndarray:
    centres = [wh[rng.integers(len(wh))]]
    for _ in range(1, k):
        d = 1 - shape_iou(wh, np.array(centres)).max(axis=1)
        total = d.sum()
        centres.append(wh[rng.choice(len(wh), p=d / total)] if total > 0 else wh[rng.integers(len(wh))])
    return np.array(centres, np.float64)


def input_box_shapes(dataset, input_size: int, resize: str = "letterbox", limit: Optional[int] = None) -> np.ndarray:
    """Box shapes `(N, 2)` as the network sees them at `input_size` (letterbox: aspect kept; resize: not), from
    every image, or from `limit` images spread over the dataset."""
    out = []
    count = len(dataset) if limit is None else min(len(dataset), int(limit))
    for i in np.linspace(0, len(dataset) - 1, count).round().astype(int) if count else []:
        label, image = dataset_label(dataset, i)
        if not len(label):
            continue
        if hasattr(dataset, "image_size"):
            h, w = dataset.image_size(i)
        else:
            h, w = (image if image is not None else dataset[i][0]).shape[:2]
        wh = (label[:, 2:4] - label[:, 0:2]).astype(np.float64)
        if resize == "letterbox":
            wh *= min(input_size / h, input_size / w)
        else:
            wh *= (input_size / w, input_size / h)
        out.append(wh)
    return np.concatenate(out) if out else np.zeros((0, 2))


def split_like(anchors: np.ndarray, groups: Sequence[int]) -> List[List[List[int]]]:
    """Sorted anchors `(k, 2)` split into scale groups of the given sizes (finest first), rounded pixels."""
    if sum(groups) != len(anchors):
        sizes = np.array_split(np.arange(len(anchors)), len(groups))
        groups = [len(s) for s in sizes]
    out, start = [], 0
    for g in groups:
        out.append([[int(round(w)), int(round(h))] for w, h in anchors[start:start + g]])
        start += g
    return out


def anchors_yaml(groups: List[List[List[int]]]) -> str:
    """The `model.anchors` YAML snippet for a recipe."""
    lines = ["model:", "  anchors:"]
    for group in groups:
        lines.append("    - [" + ", ".join(f"[{w}, {h}]" for w, h in group) + "]")
    return "\n".join(lines)


def recipe_anchors(recipe: Mapping[str, Any], dataset, k: Optional[int] = None, seed: int = 0
                   ) -> Dict[str, Any]:
    """k-means anchors for a recipe's training data; compares them with the recipe's current anchors.

    Returns: `anchors (k, 2)` sorted by area, `groups` (per scale, as the recipe groups them), `mean_iou`
    (new), `current_mean_iou`, `boxes` (count), `yaml` (snippet to paste into the recipe).
    """
    current = [np.asarray(g, np.float64).reshape(-1, 2) for g in recipe["model"]["anchors"]]
    k = int(k or sum(len(g) for g in current))
    wh = input_box_shapes(dataset, int(recipe["model"]["input_size"]), recipe["data"]["resize"])
    anchors = kmeans_anchors(wh, k, seed=seed)
    groups = split_like(anchors, [len(g) for g in current])
    rounded = np.array([a for g in groups for a in g], np.float64)
    return {"anchors": anchors, "groups": groups, "boxes": len(wh),
            "mean_iou": mean_best_iou(wh, rounded),
            "current_mean_iou": mean_best_iou(wh, np.concatenate(current)),
            "yaml": anchors_yaml(groups)}
