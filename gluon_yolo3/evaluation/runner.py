"""Run a detector over a dataset and score it with a registered metric.

    result, detections = evaluate(net, dataset, recipe, spec, contexts)   # spec: the data.feed.InputSpec
    result, detections = evaluate_deployed(recipe, "deploy/int8")          # an exported or quantized model
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import mxnet as mx
import numpy as np
from tqdm import tqdm

from ..data.base import FileDetectionDataset
from ..data.build import build_datasets
from ..data.feed import InputSpec, to_original
from ..data.pipeline import EvalSamples, PadLabels
from ..devices import parse_devices, split_batch
from ..inference.deployed import deployed_label, load_deployed
from ..registry import METRICS


def eval_loader(dataset, spec: InputSpec, recipe: Mapping[str, Any], batch_size: Optional[int] = None):
    """Batches `(x, labels (B, M, 6) padded -1, geometry (B, 6))` of `dataset` fed as `spec` says, M the most boxes
    an image of the batch has (every annotated box counts: no `data.max_boxes` cap); batch size and workers from
    the recipe's eval / data sections."""
    workers = int(recipe["data"]["num_workers"])
    return mx.gluon.data.DataLoader(EvalSamples(dataset, spec), batch_size=batch_size or recipe["eval"]["batch_size"],
                                    shuffle=False, last_batch="keep", num_workers=workers,
                                    batchify_fn=PadLabels(workers > 0))


def detect_dataset(net, dataset, recipe: Mapping[str, Any], spec: InputSpec, contexts: Sequence[mx.Context],
                   progress: bool = True) -> List[Dict[str, np.ndarray]]:
    """Detections for every image of `dataset`, in original image pixels.

    Returns one dict per image: `boxes (K, 4)`, `scores (K,)`, `ids (K,)` (padding removed), the
    ground truth `gt (M, 6)` as the dataset gives it, and `image`: its file name (or the dataset's image id).
    """
    results = []
    loader = eval_loader(dataset, spec, recipe)
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
                            "ids": ids[i][keep].astype(np.int64), "gt": gt,
                            "image": image_name(dataset, len(results))})
    return results


def image_name(dataset, i: int) -> str:
    """The file name of image `i` of `dataset` (its image id when it has no files)."""
    return dataset.image_path(i).name if isinstance(dataset, FileDetectionDataset) else dataset.image_id(i)


def score_detections(results: Sequence[Mapping[str, np.ndarray]], class_names: Sequence[str],
                     metric: str = "voc07", iou_thresh: float = 0.5) -> Dict[str, Any]:
    """Score per-image detections (as from `detect_dataset`) with the metric registered as `metric`."""
    scorer = METRICS.build({"type": metric, "iou_thresh": iou_thresh}, class_names=list(class_names))
    for r in results:
        gt = r["gt"]
        scorer.update(r["boxes"], r["ids"], r["scores"], gt[:, :4], gt[:, 4].astype(np.int64),
                      gt[:, 5] if gt.shape[1] > 5 else None)
    return scorer.compute()


def evaluate(net, dataset, recipe: Mapping[str, Any], spec: InputSpec, contexts: Sequence[mx.Context],
             metric: Optional[str] = None, progress: bool = True):
    """(metric result dict, per-image detections) of `net` on `dataset`, fed as `spec` says; the metric and
    its IoU threshold from the recipe's eval section unless `metric` is given."""
    results = detect_dataset(net, dataset, recipe, spec, contexts, progress=progress)
    scores = score_detections(results, dataset.classes, metric or recipe["eval"]["metric"],
                              recipe["eval"]["iou_thresh"])
    return scores, results


def evaluate_deployed(recipe: Mapping[str, Any], path, devices=None, metric: Optional[str] = None,
                      split: str = "val", progress: bool = True):
    """(metric result, per-image detections) of an exported or quantized model (an int8 folder, an MXNet or
    OpenVINO export folder or an .onnx file) on the recipe's `split` dataset, with the model's class list.

    The result gets `"model": <format>` (`inference.deployed.deployed_label`: int8, mxnet, onnx, openvino-int8,
    ...). The model must be fed as the recipe feeds its network (input size, resize, mean, std): ValueError naming
    the difference otherwise."""
    contexts = parse_devices(devices or recipe["train"]["devices"])[:1]
    detector = load_deployed(path, contexts[0])
    classes = list(detector.spec.classes)
    mine = InputSpec.from_recipe(recipe, recipe["data"].get("classes") or classes)
    differences = mine.differences(detector.spec, keys=("input_size", "resize", "mean", "std", "classes"))
    if differences:
        key, value, theirs = differences[0]
        raise ValueError(f"'{path}' was exported with {key}={theirs!r} but the recipe has {value!r}; "
                         f"evaluate it with the recipe it was exported from")
    dataset = build_datasets(recipe, splits=(split,), classes=classes)[split]
    result, detections = evaluate(detector, dataset, recipe, detector.spec, contexts, metric=metric,
                                  progress=progress)
    result["model"] = deployed_label(detector.info)
    return result, detections
