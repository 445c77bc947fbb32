"""Run a detector over a dataset and score it with a registered metric."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import mxnet as mx
import numpy as np
from tqdm import tqdm

from ..data.pipeline import EvalSamples, to_original
from ..engine.devices import split_batch
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


def format_table(result: Mapping[str, Any]) -> str:
    """A per-class table: AP, ground-truth count, detections; then the mean."""
    names = list(result["per_class"])
    width = max([len(n) for n in names] + [8])
    lines = [f"{'class':<{width}}  {'AP':>7}  {'gt':>6}  {'dets':>6}"]
    for name in names:
        ap = result["per_class"][name]
        ap_text = "    n/a" if ap is None or (isinstance(ap, float) and np.isnan(ap)) else f"{ap:7.4f}"
        lines.append(f"{name:<{width}}  {ap_text}  {result.get('num_gt', {}).get(name, 0):>6}  "
                     f"{result.get('num_det', {}).get(name, 0):>6}")
    lines.append(f"{'mAP (' + result['metric'] + ')':<{width}}  {result['map']:7.4f}")
    return "\n".join(lines)
