"""Run a detector over a dataset and score it with a registered metric."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import mxnet as mx
import numpy as np
from tqdm import tqdm

from ..data.pipeline import EvalSamples, to_original
from ..devices import split_batch
from ..registry import METRICS


def eval_loader(dataset, recipe: Mapping[str, Any], batch_size: Optional[int] = None):
    data = recipe["data"]
    samples = EvalSamples(dataset, data["resize"], recipe["model"]["input_size"], data["mean"],
                          data["std"], data["max_boxes"])
    return mx.gluon.data.DataLoader(samples, batch_size=batch_size or recipe["eval"]["batch_size"],
                                    shuffle=False, last_batch="keep",
                                    num_workers=data["num_workers"])


def detect_dataset(net, dataset, recipe: Mapping[str, Any], contexts: Sequence[mx.Context],
                   progress: bool = True) -> List[Dict[str, np.ndarray]]:
    """Detections for every image of `dataset`, in original image pixels.

    Returns one dict per image: `boxes (K, 4)`, `scores (K,)`, `ids (K,)` (padding removed), and the
    ground truth `gt (M, 6)` as the dataset gives it.
    """
    results = []
    loader = eval_loader(dataset, recipe)
    bar = tqdm(loader, desc="eval", leave=False, disable=not progress, unit="batch")
    for x, labels, geometry in bar:
        n = x.shape[0]
        devices = list(contexts)[:n] if n < len(contexts) else list(contexts)
        parts = split_batch(x, devices) if n % len(devices) == 0 else [x.as_in_context(devices[0])]
        outputs = [net(part) for part in parts]
        ids = np.concatenate([o[0].asnumpy() for o in outputs])[..., 0]
        scores = np.concatenate([o[1].asnumpy() for o in outputs])[..., 0]
        boxes = np.concatenate([o[2].asnumpy() for o in outputs])
        labels, geometry = labels.asnumpy(), geometry.asnumpy()
        for i in range(n):
            keep = ids[i] >= 0
            gt = labels[i][labels[i][:, 4] >= 0]
            results.append({"boxes": to_original(boxes[i][keep], geometry[i]), "scores": scores[i][keep],
                            "ids": ids[i][keep].astype(np.int64), "gt": gt})
    return results


def score_detections(results: Sequence[Mapping[str, np.ndarray]], class_names: Sequence[str],
                     metric: str = "voc07", iou_thresh: float = 0.5) -> Dict[str, Any]:
    """Score per-image detections (as from `detect_dataset`) with the metric registered as `metric`."""
    scorer = METRICS.build({"type": metric, "iou_thresh": iou_thresh}, class_names=list(class_names))
    for r in results:
        gt = r["gt"]
        scorer.update(r["boxes"], r["ids"], r["scores"], gt[:, :4], gt[:, 4].astype(np.int64),
                      gt[:, 5] if gt.shape[1] > 5 else None)
    return scorer.compute()


def evaluate(net, dataset, recipe: Mapping[str, Any], contexts: Sequence[mx.Context],
             metric: Optional[str] = None, progress: bool = True):
    """(metric result dict, per-image detections) of `net` on `dataset`."""
    results = detect_dataset(net, dataset, recipe, contexts, progress=progress)
    scores = score_detections(results, dataset.classes, metric or recipe["eval"]["metric"],
                              recipe["eval"]["iou_thresh"])
    return scores, results


def evaluate_deployed(recipe: Mapping[str, Any], path, devices=None, metric: Optional[str] = None,
                      split: str = "val", progress: bool = True):
    """(metric result, per-image detections) of an exported or quantized model (an int8 folder, an MXNet
    export folder or an .onnx file) on the recipe's `split` dataset, preprocessed as the recipe says.

    The result gets `"model": <format>` (int8, mxnet, onnx). The export's input size, resize, mean and std
    must equal the recipe's (ValueError naming the difference otherwise)."""
    from ..deploy.runtime import deployed_label, load_deployed
    from ..devices import parse_devices
    from ..engine.trainer import build_datasets
    contexts = parse_devices(devices or recipe["train"]["devices"])[:1]
    detector = load_deployed(path, contexts[0])
    info, data = detector.info, recipe["data"]
    mine = {"input_size": recipe["model"]["input_size"], "resize": data["resize"],
            "mean": [float(v) for v in data["mean"]], "std": [float(v) for v in data["std"]]}
    for key, value in mine.items():
        if info.get(key) != value:
            raise ValueError(f"'{path}' was exported with {key}={info.get(key)!r} but the recipe has {value!r}; "
                             f"evaluate it with the recipe it was exported from")
    dataset = build_datasets(recipe, splits=(split,))[split]
    result, detections = evaluate(detector, dataset, recipe, contexts, metric=metric, progress=progress)
    result["model"] = deployed_label(info)
    return result, detections


def format_comparison(reference: Mapping[str, Any], other: Mapping[str, Any]) -> str:
    """One line: the reference (fp32) mAP, the other model's, and the difference."""
    label = other.get("model") or "other"
    delta = other["map"] - reference["map"]
    return (f"mAP ({reference['metric']}): fp32 {_num(reference['map']).strip()}   {label} "
            f"{_num(other['map']).strip()}   delta {delta:+.4f}")


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
