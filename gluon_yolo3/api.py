"""The Python API under the CLI: load a recipe, build, train, evaluate, predict. A thin facade over the
library: nothing inside the package imports it.

    from gluon_yolo3 import api
    recipe = api.load("recipes/demo_tiny.yaml", overrides=["train.epochs=2"])
    summary = api.train(recipe)
    result, detections = api.evaluate(recipe, weights="runs/demo_tiny")
    dets = api.Predictor(recipe, weights="runs/demo_tiny")(["cat.jpg"])
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence

import mxnet as mx

from .data.build import build_datasets
from .data.feed import InputSpec
from .data.images import read_image
from .devices import parse_devices
from .engine.run_folder import make_run_folder, with_run_splits
from .engine.trainer import Trainer
from .evaluation.runner import evaluate as run_eval
from .inference import predictor as _predictor
from .inference.deployed import deployed_predictor
from .inference.detector import class_names, load_detector
from .models.detector import YOLOv3, build_detector
from .plugins import load_plugins
from .recipe import load_recipe

__all__ = ["load", "build", "class_names", "load_detector", "train", "evaluate", "Predictor",
           "deployed_predictor", "read_image"]


def load(path: str | Path, overrides: Iterable[str] = ()) -> Dict[str, Any]:
    """Load a recipe (bases, overrides, validation) and import the plugins it names."""
    recipe = load_recipe(path, overrides)
    load_plugins(recipe.get("plugins") or [])
    return recipe


def build(recipe: Mapping[str, Any], num_classes: int) -> YOLOv3:
    """An uninitialised detector as the recipe describes it."""
    return build_detector(recipe, num_classes)


def train(recipe: Mapping[str, Any], workdir: Optional[str] = None, devices=None, kvstore=None,
          resume: bool = False, progress: bool = True, log=print) -> Dict[str, Any]:
    """Train the recipe; returns a summary (run folder, steps, time, best validation mAP)."""
    run_dir = make_run_folder(recipe, workdir, resume)
    try:
        return Trainer(recipe, run_dir, devices=devices, kvstore=kvstore, progress=progress, log=log).fit(resume)
    except BaseException:
        if run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()             # a run that failed before writing anything leaves no empty folder
        raise


def evaluate(recipe: Mapping[str, Any], weights: str | Path, devices=None, metric: Optional[str] = None,
             split: str = "val", progress: bool = True, fuse: Optional[bool] = None,
             precision: Optional[str] = None):
    """(metric result dict, per-image detections) of the weights on the recipe's `split` dataset, with the
    run's class list and, for a dataset folder, the split the weights' run recorded (`with_run_splits`); `fuse`
    and `precision` as in load_detector. The result says its precision, and its dataset's `split_source`,
    `warnings` and the count of skipped `problems`."""
    contexts = parse_devices(devices or recipe["train"]["devices"])
    recipe = with_run_splits(recipe, weights)
    classes = class_names(recipe, weights)
    dataset = build_datasets(recipe, splits=(split,), classes=classes)[split]
    net = load_detector(recipe, weights, contexts, classes=classes, fuse=fuse, precision=precision)
    result, detections = run_eval(net, dataset, recipe, InputSpec.from_recipe(recipe, classes), contexts,
                                  metric=metric, progress=progress)
    result["precision"] = precision or "float32"
    result.update(split_source=getattr(dataset, "split_source", None), warnings=list(dataset.warnings),
                  problems=len(dataset.problems))
    return result, detections


class Predictor(_predictor.Predictor):
    """`inference.Predictor` made from a recipe and weights (or a built `net`): fed as the recipe says, with
    the run's class list, keeping scores >= `score_thresh` (default: the recipe's predict.score_thresh)."""

    def __init__(self, recipe: Mapping[str, Any], weights: str | Path | None = None, net: YOLOv3 = None,
                 classes: Optional[Sequence[str]] = None, contexts=None, score_thresh: Optional[float] = None,
                 fuse: Optional[bool] = None, precision: Optional[str] = None):
        contexts = contexts or [mx.cpu()]
        classes = list(classes) if classes is not None else class_names(recipe, weights)
        net = net if net is not None else load_detector(recipe, weights, contexts, classes, fuse=fuse,
                                                        precision=precision)
        super().__init__(InputSpec.from_recipe(recipe, classes), net, contexts,
                         recipe["predict"]["score_thresh"] if score_thresh is None else score_thresh)
