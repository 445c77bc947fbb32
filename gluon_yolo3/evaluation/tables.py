"""Evaluation results as text: the per-class AP table and the one-line comparison of two models."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np


def format_comparison(reference: Mapping[str, Any], other: Mapping[str, Any]) -> str:
    """One line: the reference (fp32) mAP, the other model's, and the difference."""
    label = other.get("model") or "other"
    if _missing(reference["map"]) or _missing(other["map"]):
        delta = "n/a (no ground-truth boxes to score)"
    else:
        delta = f"{other['map'] - reference['map']:+.4f}"
    return (f"mAP ({reference['metric']}): fp32 {_num(reference['map']).strip()}   {label} "
            f"{_num(other['map']).strip()}   delta {delta}")


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _num(value, width: int = 7) -> str:
    """A metric value for a table: 4 decimals, "n/a" for None or NaN."""
    if _missing(value):
        return f"{'n/a':>{width}}"
    return f"{value:{width}.4f}"


def format_table(result: Mapping[str, Any]) -> str:
    """A per-class table: AP, ground-truth count, detections; then the mean.

    With COCO results (`per_class_ap50`, `ap50`, ...) the table also has an AP50 column and ends with
    AP50/AP75, AP by object size and AR lines."""
    names = list(result["per_class"])
    mean_label = f"mAP ({result['metric']})"
    width = max([len(n) for n in names] + [8, len(mean_label)])
    ap50 = result.get("per_class_ap50")
    ap_head = "AP" if ap50 is None else "AP@[.5:.95]"
    col = max(7, len(ap_head))
    lines = [f"{'class':<{width}}  {ap_head:>{col}}" + ("" if ap50 is None else f"  {'AP50':>7}")
             + f"  {'gt':>6}  {'dets':>6}"]
    num_gt = result.get("num_gt", {})
    for name in names:
        if name in num_gt and not num_gt[name] and _missing(result["per_class"][name]):
            lines.append(f"{name:<{width}}  {'no ground truth':>{col}}" + ("" if ap50 is None else f"  {'':>7}")
                         + f"  {0:>6}  {result.get('num_det', {}).get(name, 0):>6}")
            continue
        row = f"{name:<{width}}  {_num(result['per_class'][name], col)}"
        if ap50 is not None:
            row += f"  {_num(ap50.get(name))}"
        lines.append(row + f"  {result.get('num_gt', {}).get(name, 0):>6}  "
                           f"{result.get('num_det', {}).get(name, 0):>6}")
    lines.append(f"{mean_label:<{width}}  {_num(result['map'], col)}"
                 + ("" if ap50 is None else f"  {_num(result.get('ap50'))}"))
    if "ap50" in result:
        lines.append(f"AP50 {_num(result['ap50']).strip()}   AP75 {_num(result.get('ap75')).strip()}")
        lines.append("AP by size: " + "   ".join(
            f"{size} {_num(result.get('ap_' + size)).strip()}" for size in ("small", "medium", "large")))
        lines.append("AR: " + "   ".join(
            f"{key.upper()} {_num(result.get(key)).strip()}" for key in ("ar1", "ar10", "ar100")
            if key in result))
    return "\n".join(lines)
