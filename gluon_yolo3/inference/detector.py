"""A recipe's detector with trained weights, ready for inference, and the class list those weights use.

    classes = class_names(recipe, "runs/demo")
    net = load_detector(recipe, "runs/demo")       # hybridized; oneDNN's fused graph on one CPU device
    ids, scores, boxes = net(x)                    # x (B, 3, S, S), fed as InputSpec.from_recipe says
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence

import mxnet as mx

from ..data.build import build_datasets
from ..models.detector import YOLOv3, build_detector
from ..models.precision import inference_dtype, set_compute_dtype
from .weights import find_weights, load_weights, weights_classes

# oneDNN's graph fusion: in the CPU wheels (and the GPU ones, for their CPU contexts)
ONEDNN = mx.runtime.Features().is_enabled("MKLDNN")


def class_names(recipe: Mapping[str, Any], weights: str | Path | None = None) -> List[str]:
    """The run's one class list: `data.classes`, else the list stored beside `weights` (the recipe.yaml of their
    run or zoo folder), else the training set's. ValueError when the recipe and the weights disagree."""
    given = recipe["data"].get("classes")
    stored, source = weights_classes(weights) if weights is not None else (None, None)
    if given and stored is not None and list(given) != list(stored):
        raise ValueError(f"the recipe's data.classes {list(given)} differ from the classes the weights were "
                         f"trained with, {stored} ({source}): the class ids would not mean the same")
    if given:
        return list(given)
    if stored is not None:
        return stored
    return list(build_datasets(recipe, splits=("train",))["train"].classes)


def load_detector(recipe: Mapping[str, Any], weights: str | Path, contexts=None,
                  classes: Optional[Sequence[str]] = None, hybridize: bool = True,
                  fuse: Optional[bool] = None, precision: Optional[str] = None) -> YOLOv3:
    """A detector with weights from a `.params` file, a run folder or a zoo folder, on `contexts` (default
    cpu:0); `classes` default: `class_names(recipe, weights)`. `precision="bfloat16"`: the convolutions compute
    in bfloat16 (`models/precision.py`; not fused: oneDNN's fused graph folds BatchNorm into bfloat16 weights,
    which moved scores by 0.03 where the plain graph moves them by 0.001).

    `fuse` (implies hybridize): oneDNN fuses each conv + BatchNorm + LeakyReLU into one primitive
    (`optimize_for(backend='MKLDNN')`, partitioned at batch 1 and `model.input_size`; another input shape
    re-plans once), the same detections. Default (None): on when hybridized on a single CPU context of a
    oneDNN build. Darknet-53 at 416: 1.2x the plain graph's speed (`make bench`, benchmarks/PROFILE.md).
    The fused graph holds the weights loaded here: for other weights, call load_detector again.
    """
    contexts = contexts or [mx.cpu()]
    precision = inference_dtype(precision)
    classes = list(classes) if classes is not None else class_names(recipe, weights)
    net = build_detector(recipe, len(classes))
    path = find_weights(weights)
    # float16 storage (zoo folders) loads into the float32 network
    load_weights(net, path, contexts, what=f"weights ({recipe['model']['backbone']['type']}, "
                                           f"{len(classes)} classes):")
    if precision is not None:
        set_compute_dtype(net, precision)
    if fuse is None:
        fuse = hybridize and len(contexts) == 1 and contexts[0].device_type == "cpu" and ONEDNN and precision is None
    if fuse and all(c.device_type == "cpu" for c in contexts):
        size = int(recipe["model"]["input_size"])
        # static_shape: without it the fused graph ran 1.3x slower than with it (benchmarks/PROFILE.md);
        # another input shape re-plans the graph once
        net.optimize_for(mx.nd.zeros((1, 3, size, size), ctx=contexts[0]), backend="MKLDNN",
                         static_alloc=True, static_shape=True)
        net.fused = True
    elif hybridize:
        net.hybridize(static_alloc=True)
    return net
