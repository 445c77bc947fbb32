"""The Python API under the CLI: load a recipe, build, train, evaluate, predict.

    from gluon_yolo3 import api
    recipe = api.load("recipes/demo_tiny.yaml", overrides=["train.epochs=2"])
    summary = api.train(recipe)
    scores = api.evaluate(recipe, weights="runs/demo_tiny")
    dets = api.Predictor(recipe, weights="runs/demo_tiny")(["cat.jpg"])
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import cv2
import mxnet as mx
import numpy as np

from .data.pipeline import ImageNormalizer, build_resize, resize_with_geometry, to_original
from .engine.checkpoint import find_weights, load_weights
from .devices import parse_devices
from .models.detector import YOLOv3, build_detector
from .plugins import load_plugins
from .recipe import load_recipe

# oneDNN's graph fusion: in the CPU wheels (and the GPU ones, for their CPU contexts)
ONEDNN = mx.runtime.Features().is_enabled("MKLDNN")

__all__ = ["load", "build", "load_detector", "train", "evaluate", "Predictor", "deployed_predictor"]


def load(path: str | Path, overrides: Iterable[str] = ()) -> Dict[str, Any]:
    """Load a recipe (bases, overrides, validation) and import the plugins it names."""
    recipe = load_recipe(path, overrides)
    load_plugins(recipe.get("plugins") or [])
    return recipe


def build(recipe: Mapping[str, Any], num_classes: int) -> YOLOv3:
    """An uninitialised detector as the recipe describes it."""
    return build_detector(recipe, num_classes)


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
    from .engine.trainer import build_datasets
    return list(build_datasets(recipe, splits=("train",))["train"].classes)


def weights_classes(weights: str | Path):
    """`(class list, the file it comes from)` stored beside weights: `data.classes` of the recipe.yaml of their
    run folder, zoo folder or import folder; `(None, None)` when there is none."""
    from .recipe import parse_yaml
    path = Path(weights)
    folder = path if path.is_dir() else path.parent
    if folder.name == "checkpoints":
        folder = folder.parent
    recipe_file = folder / "recipe.yaml"
    if not recipe_file.is_file():
        return None, None
    try:
        stored = parse_yaml(recipe_file.read_text()) or {}
    except Exception:   # noqa: BLE001 - an unreadable recipe beside the weights says nothing about classes
        return None, None
    classes = (stored.get("data") or {}).get("classes") if isinstance(stored, dict) else None
    return (list(map(str, classes)), recipe_file) if isinstance(classes, list) and classes else (None, None)


def load_detector(recipe: Mapping[str, Any], weights: str | Path, contexts=None,
                  classes: Optional[Sequence[str]] = None, hybridize: bool = True,
                  fuse: Optional[bool] = None) -> YOLOv3:
    """A detector with weights from a `.params` file or a run folder, on `contexts` (default cpu:0).

    `fuse` (implies hybridize): oneDNN fuses each conv + BatchNorm + LeakyReLU into one primitive
    (`optimize_for(backend='MKLDNN')`, partitioned at batch 1 and `model.input_size`; another input shape
    re-plans once), the same detections. Default (None): on when hybridized on a single CPU context of a
    oneDNN build. Darknet-53 at 416: 1.2x the plain graph's speed (`make bench`, benchmarks/PROFILE.md).
    The fused graph holds the weights loaded here: for other weights, call load_detector again.
    """
    contexts = contexts or [mx.cpu()]
    classes = list(classes) if classes is not None else class_names(recipe, weights)
    net = build_detector(recipe, len(classes))
    path = find_weights(weights)
    # float16 storage (zoo folders) loads into the float32 network
    load_weights(net, path, contexts, what=f"weights ({recipe['model']['backbone']['type']}, "
                                           f"{len(classes)} classes):")
    if fuse is None:
        fuse = hybridize and len(contexts) == 1 and contexts[0].device_type == "cpu" and ONEDNN
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


def train(recipe: Mapping[str, Any], workdir: Optional[str] = None, devices=None, kvstore=None,
          resume: bool = False, progress: bool = True, log=print) -> Dict[str, Any]:
    """Train the recipe; returns a summary (run folder, steps, time, best validation mAP)."""
    from .engine.trainer import Trainer, make_run_folder
    run_dir = make_run_folder(recipe, workdir, resume)
    try:
        return Trainer(recipe, run_dir, devices=devices, kvstore=kvstore, progress=progress, log=log).fit(resume)
    except BaseException:
        if run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()             # a run that failed before writing anything leaves no empty folder
        raise


def evaluate(recipe: Mapping[str, Any], weights: str | Path, devices=None, metric: Optional[str] = None,
             split: str = "val", progress: bool = True, fuse: Optional[bool] = None):
    """(metric result dict, per-image detections) of the weights on the recipe's `split` dataset; `fuse` as in
    load_detector."""
    from .engine.trainer import build_datasets
    from .evaluation.runner import evaluate as run_eval
    contexts = parse_devices(devices or recipe["train"]["devices"])
    classes = class_names(recipe, weights)
    dataset = build_datasets(recipe, splits=(split,), classes=classes)[split]
    net = load_detector(recipe, weights, contexts, classes=classes, fuse=fuse)
    return run_eval(net, dataset, recipe, contexts, metric=metric, progress=progress)


class Predictor:
    """Detections for images (paths or `(H, W, 3) uint8 RGB` arrays), in original image pixels.

    `predictor(images)` -> one dict per image: `boxes (K, 4)` x1y1x2y2, `scores (K,)`, `ids (K,)`,
    `names` (class names), keeping scores >= `score_thresh` (default: the recipe's predict.score_thresh).
    """

    def __init__(self, recipe: Mapping[str, Any], weights: str | Path | None = None, net: YOLOv3 = None,
                 classes: Optional[Sequence[str]] = None, contexts=None, score_thresh: Optional[float] = None,
                 fuse: Optional[bool] = None):
        self.recipe = recipe
        self.contexts = contexts or [mx.cpu()]
        self.classes = list(classes) if classes is not None else class_names(recipe, weights)
        self.net = net if net is not None else load_detector(recipe, weights, self.contexts, self.classes, fuse=fuse)
        self.resize = build_resize(recipe["data"]["resize"], recipe["model"]["input_size"])
        self.normalize = ImageNormalizer(recipe["data"]["mean"], recipe["data"]["std"])
        self.score_thresh = recipe["predict"]["score_thresh"] if score_thresh is None else score_thresh

    def __call__(self, images: Sequence) -> List[Dict[str, Any]]:
        return [self.predict_one(image) for image in images]

    def predict_one(self, image) -> Dict[str, Any]:
        image = read_image(image) if isinstance(image, (str, Path)) else np.asarray(image)
        resized, geometry = resize_with_geometry(self.resize, image)
        x = mx.nd.array(self.normalize(resized)[None], ctx=self.contexts[0])
        ids, scores, boxes = [o[0].asnumpy() for o in self.net(x)]
        keep = (ids[:, 0] >= 0) & (scores[:, 0] >= self.score_thresh)
        ids = ids[keep, 0].astype(np.int64)
        return {"boxes": to_original(boxes[keep], geometry), "scores": scores[keep, 0], "ids": ids,
                "names": [self.classes[i] for i in ids]}

    def draw(self, image, path: Optional[Path] = None, gt: Optional[np.ndarray] = None, zoom: int = 1):
        """Predict one image and draw its detections (and ground truth `gt (M, >=4)`, if given), enlarged
        `zoom` times."""
        from .evaluation.plots import draw_detections
        image = read_image(image) if isinstance(image, (str, Path)) else np.asarray(image)
        det = self.predict_one(image)
        return draw_detections(image, det["boxes"], det["ids"], det["scores"], self.classes,
                               path=str(path) if path else None,
                               gt_boxes=None if gt is None else np.asarray(gt)[:, :4], zoom=zoom)


def deployed_predictor(path: str | Path, recipe: Optional[Mapping[str, Any]] = None,
                       score_thresh: Optional[float] = None, ctx=None) -> Predictor:
    """A Predictor running an exported model (an `export --format mxnet` folder, a `.onnx` file, or a
    `quantize` folder); preprocessing and class names come from the export, the default score threshold
    from `recipe` (predict.score_thresh)."""
    from .deploy.runtime import deployed_predictor as build
    return build(path, score_thresh=score_thresh, ctx=ctx, recipe=recipe)


def read_image(path: str | Path) -> np.ndarray:
    """`(H, W, 3) uint8 RGB` from an image file; a clear error naming the file otherwise."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image '{path}' (missing or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
