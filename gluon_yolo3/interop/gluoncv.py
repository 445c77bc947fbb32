"""Import GluonCV YOLOv3 weights (`yolo3_darknet53_*`, `yolo3_mobilenet1.0_*`, `yolo3_mobilenet0.25_*`).

    from gluon_yolo3.interop.gluoncv import import_gluoncv
    paths = import_gluoncv("yolo3_darknet53_voc.params", "yolo3_darknet53_voc", "runs/gcv_d53")
    # runs/gcv_d53/recipe.yaml and runs/gcv_d53/checkpoints/best.params: use it like a run folder

A GluonCV `.params` file (written by `save_parameters`) holds structural names: `stages.S.*` (the three
backbone pieces), `yolo_blocks.K.*` and `transitions.K.*` (the neck, coarsest scale first) and
`yolo_outputs.K.prediction.*` plus `yolo_outputs.K.anchors` (coarsest first). Our network has the same
layers in another arrangement (scales finest first, Darknet-53 residual blocks named `reduce`/`expand`);
this module maps every name and checks every shape. GluonCV's output conv is anchor-major, channel
`a * (5 + C) + k` = (anchor a, field k) with fields tx, ty, tw, th, objectness, classes, the same layout
as our head, so its weights are copied unchanged (only the scale order is reversed). Anchors, class
count and neck widths are read from the file; the recipe written beside the weights reproduces GluonCV's
YOLOv3 (see `gluoncv_recipe`).
"""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np
import yaml

from ..files import atomic_write, atomic_write_text
from ..models.backbones.darknet import DARKNET53_STAGES
from ..models.detector import build_detector
from ..recipe import load_recipe, merge
from ..schema import DEFAULTS

BACKBONE_CHANNELS = {"darknet53": (256, 512, 1024), "mobilenet1.0": (256, 512, 1024),
                     "mobilenet0.25": (64, 128, 256)}
DATASETS = ("voc", "coco", "custom")
ARCHS = tuple(f"yolo3_{b}_{d}" for b in BACKBONE_CHANNELS for d in DATASETS)
DARKNET_CUTS = (15, 24)          # GluonCV's yolo3_darknet53: features[:15], [15:24], [24:]
IGNORED_KEYS = re.compile(r"^yolo_outputs\.\d+\.offsets$")   # grid offsets: ours come from arange


class GluonCVImportError(ValueError):
    """A GluonCV weights file that cannot be imported; the message names the file and the parameter."""


# --------------------------------------------------------------------------------------------------
# GluonCV's YOLOv3 as a recipe

def gluoncv_recipe(arch: str, classes: Sequence[str], anchors: Optional[Sequence] = None,
                   widths: Optional[Sequence[int]] = None, data_root: str = "VOCdevkit/VOC2007") -> Dict[str, Any]:
    """The recipe (keys that differ from or pin our defaults) that reproduces GluonCV's `arch`.

    GluonCV's YOLOv3: input 416, COCO anchors, ImageNet mean/std on x / 255, plain resize for validation,
    BatchNorm eps 1e-5 momentum 0.9, NMS per class IoU 0.45 over the 400 best (score > 0.01) keeping 100;
    targets by `YOLOV3PrefetchTargetGenerator` (the `gluoncv` assigner); loss `YOLOV3Loss`: xy sigmoid
    BCE and wh L1 on log-scale targets both weighted by 2 - w*h, objectness BCE with ignore IoU 0.7,
    class BCE (label smoothing off, GluonCV's default); SGD lr 0.001, momentum 0.9, wd 5e-4, 200 epochs,
    x0.1 at epochs 160 and 180, 4 warm-up epochs (its VOC command line). `anchors` (finest first) and
    `widths` (neck block widths, finest first) default to GluonCV's for `arch`.
    """
    backbone, dataset = parse_arch(arch)
    anchors = [[[10, 13], [16, 30], [33, 23]], [[30, 61], [62, 45], [59, 119]],
               [[116, 90], [156, 198], [373, 326]]] if anchors is None else _plain(anchors)
    if widths is None:
        widths = [128, 128, 256] if backbone == "mobilenet0.25" else [128, 256, 512]
    widths = [int(w) for w in widths]
    if widths == _standard_widths(BACKBONE_CHANNELS[backbone]):
        neck: Dict[str, Any] = {"type": "yolov3"}
    else:
        neck = {"type": "yolov3_gluoncv", "widths": widths}
    return {
        "name": f"gluoncv_{backbone}_{dataset}",
        "model": {
            "input_size": 416,
            "backbone": {"type": backbone},
            "neck": neck,
            "head": {"type": "yolov3"},
            "anchors": anchors,
            "norm": {"type": "batchnorm", "momentum": 0.9, "eps": 1.0e-5},
            "nms": {"type": "class_aware", "score_thresh": 0.01, "iou_thresh": 0.45, "topk": 400,
                    "max_det": 100},
        },
        "assigner": {"type": "gluoncv"},
        "loss": {
            "ignore_iou": 0.7,
            "terms": [
                {"type": "xy_bce", "weight": 1.0},
                {"type": "wh_l1", "weight": 1.0},
                {"type": "objectness_bce", "weight": 1.0},
                {"type": "class_bce", "weight": 1.0, "label_smoothing": 0.0},
            ],
        },
        "data": {
            "train": {"type": "voc", "root": data_root, "splits": ["trainval"]},
            "val": {"type": "voc", "root": data_root, "splits": ["test"]},
            "classes": [str(c) for c in classes],
            "transforms": [
                {"type": "color_jitter"},
                {"type": "random_expand", "p": 0.5, "max_ratio": 4.0, "fill": [124, 116, 104]},
                {"type": "random_crop", "p": 0.5},
                {"type": "random_flip", "p": 0.5},
            ],
            "resize": "resize",
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
        },
        "train": {
            "batch_size": 64,
            "epochs": 200,
            "optimizer": {"type": "sgd", "momentum": 0.9, "wd": 5.0e-4},
            "lr": 0.001,
            "lr_schedule": {"type": "warmup_step", "milestones": [160, 180], "factor": 0.1,
                            "warmup_epochs": 4},
        },
        "eval": {"metric": "voc07", "iou_thresh": 0.5},
    }


def parse_arch(arch: str) -> Tuple[str, str]:
    """`yolo3_<backbone>_<dataset>` (GluonCV's model-zoo name; `mobilenet1_0` spelling too) ->
    (backbone, dataset)."""
    name = str(arch).strip().lower().replace("mobilenet1_0", "mobilenet1.0").replace(
        "mobilenet0_25", "mobilenet0.25")
    match = re.fullmatch(r"yolo3_(darknet53|mobilenet1\.0|mobilenet0\.25)_(voc|coco|custom)", name)
    if not match:
        raise GluonCVImportError(f"unknown GluonCV architecture {arch!r}; known: {', '.join(ARCHS)}")
    return match.group(1), match.group(2)


def dataset_classes(dataset: str) -> Optional[List[str]]:
    """GluonCV's class names for `voc` and `coco`; None for `custom`."""
    # gluoncv takes 1.7 s to import: only here, not at every start of the CLI
    if dataset == "voc":
        from gluoncv.data import VOCDetection
        return list(VOCDetection.CLASSES)
    if dataset == "coco":
        from gluoncv.data import COCODetection
        return list(COCODetection.CLASSES)
    return None


# --------------------------------------------------------------------------------------------------
# reading a GluonCV file

def read_params(path: str | Path) -> Dict[str, np.ndarray]:
    """`{structural name: array}` of a GluonCV `.params` file (Gluon `save_parameters` format)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GluonCV weights file not found: {path}")
    try:
        loaded = mx.nd.load(str(path))
    except mx.base.MXNetError as err:
        raise GluonCVImportError(f"{path}: not an MXNet .params file ({str(err).splitlines()[0]})") from None
    if not isinstance(loaded, dict) or not loaded:
        raise GluonCVImportError(f"{path}: holds no named parameters")
    params = {k: v.asnumpy() for k, v in loaded.items()}
    if not any(k.startswith("yolo_outputs.") for k in params):
        prefixed = any(k.endswith("_weight") and "." not in k for k in params)
        raise GluonCVImportError(
            f"{path}: no 'yolo_outputs.*' parameters; not a GluonCV YOLOv3 file written by save_parameters"
            + (" (it looks like the old save_params format: load it into the GluonCV model and "
               "save it again with net.save_parameters)" if prefixed else ""))
    return params


def file_layout(params: Dict[str, np.ndarray], path: str | Path = "<params>") -> Dict[str, Any]:
    """Scales, anchors (finest first, pixels), class count and neck widths (finest first) of a file."""
    outputs = sorted(int(m.group(1)) for k in params
                     if (m := re.fullmatch(r"yolo_outputs\.(\d+)\.prediction\.weight", k)))
    if outputs != list(range(len(outputs))) or not outputs:
        raise GluonCVImportError(f"{path}: expected yolo_outputs.0..N prediction weights, found {outputs}")
    anchors, num_classes = [], None
    for k in reversed(outputs):                                   # coarsest first in GluonCV
        key = f"yolo_outputs.{k}.anchors"
        if key not in params:
            raise GluonCVImportError(f"{path}: missing '{key}'")
        group = params[key].reshape(-1, 2)
        pred = params[f"yolo_outputs.{k}.prediction.weight"].shape[0]
        if pred % len(group):
            raise GluonCVImportError(f"{path}: yolo_outputs.{k}.prediction has {pred} channels, not a "
                                     f"multiple of its {len(group)} anchors")
        classes = pred // len(group) - 5
        if num_classes not in (None, classes) or classes < 1:
            raise GluonCVImportError(f"{path}: yolo_outputs disagree on the class count "
                                     f"({num_classes} vs {classes})")
        num_classes = classes
        anchors.append(_plain(group))
    widths = []
    for k in reversed(outputs):
        key = f"yolo_blocks.{k}.body.0.0.weight"
        if key not in params:
            raise GluonCVImportError(f"{path}: missing '{key}'")
        widths.append(int(params[key].shape[0]))
    return {"num_scales": len(outputs), "anchors": anchors, "num_classes": num_classes, "widths": widths}


def guess_backbone(params: Dict[str, np.ndarray]) -> Optional[str]:
    """darknet53 / mobilenet1.0 / mobilenet0.25 from the parameter names and stem width, or None."""
    if "stages.0.2.body.0.0.weight" in params:
        return "darknet53"
    stem = params.get("stages.0.0.weight")
    if stem is not None and stem.ndim == 4:
        return {32: "mobilenet1.0", 8: "mobilenet0.25"}.get(int(stem.shape[0]))
    return None


# --------------------------------------------------------------------------------------------------
# name mapping: our structural name -> GluonCV's

def gluoncv_key(key: str, backbone: str, num_scales: int) -> str:
    """GluonCV's structural name for our structural parameter name `key` (of a YOLOv3 detector)."""
    unit = {"conv.weight": "0.weight", "bn.gamma": "1.gamma", "bn.beta": "1.beta",
            "bn.running_mean": "1.running_mean", "bn.running_var": "1.running_var"}
    if key.startswith("backbone."):
        rest = key[len("backbone."):]
        if backbone.startswith("mobilenet"):
            return rest                                           # stages.S.L.* as in GluonCV
        m = re.fullmatch(r"stem\.(.+)", rest)
        if m and m.group(1) in unit:
            return _darknet_feature(0) + unit[m.group(1)]
        m = re.fullmatch(r"stages\.(\d+)\.0\.(.+)", rest)
        if m and m.group(2) in unit:
            return _darknet_feature(_darknet_down(int(m.group(1)))) + unit[m.group(2)]
        m = re.fullmatch(r"stages\.(\d+)\.(\d+)\.(reduce|expand)\.(.+)", rest)
        if m and m.group(4) in unit:
            feature = _darknet_down(int(m.group(1))) + int(m.group(2))
            body = 0 if m.group(3) == "reduce" else 1
            return _darknet_feature(feature) + f"body.{body}." + unit[m.group(4)]
    m = re.fullmatch(r"neck\.blocks\.(\d+)\.(body\.\d+|tip)\.(.+)", key)
    if m and m.group(3) in unit:
        return f"yolo_blocks.{m.group(1)}.{m.group(2)}." + unit[m.group(3)]
    m = re.fullmatch(r"neck\.reduces\.(\d+)\.(.+)", key)
    if m and m.group(2) in unit:
        return f"transitions.{m.group(1)}." + unit[m.group(2)]
    m = re.fullmatch(r"head\.outputs\.(\d+)\.(weight|bias)", key)
    if m:
        return f"yolo_outputs.{num_scales - 1 - int(m.group(1))}.prediction.{m.group(2)}"
    m = re.fullmatch(r"decoder\.anchors(\d+)", key)
    if m:
        return f"yolo_outputs.{num_scales - 1 - int(m.group(1))}.anchors"
    raise GluonCVImportError(f"no GluonCV counterpart known for our parameter '{key}'")


def _darknet_down(stage: int) -> int:
    """Index in GluonCV's darknet53 `features` of stage `stage`'s stride-2 conv."""
    return 1 + sum(1 + repeats for _, repeats in DARKNET53_STAGES[:stage])


def _darknet_feature(index: int) -> str:
    """`features[index]` -> its name in GluonCV's yolo3 `stages` (features cut at 15 and 24)."""
    start = 0
    for s, end in enumerate(DARKNET_CUTS + (10 ** 6,)):
        if index < end:
            return f"stages.{s}.{index - start}."
        start = end
    raise AssertionError(index)


# --------------------------------------------------------------------------------------------------
# conversion

def convert(params_path: str | Path, arch: str, classes: Optional[Sequence[str]] = None,
            data_root: str = "VOCdevkit/VOC2007"):
    """(recipe dict, our detector with the GluonCV weights) for a GluonCV `.params` file of `arch`.

    `classes`: class names; default GluonCV's VOC / COCO names for `*_voc` / `*_coco` (required for
    `*_custom` and for files whose class count differs). Every parameter of our network is taken from
    the file (shape-checked) and every file entry is used, except GluonCV's precomputed grid offsets.
    """

    backbone, dataset = parse_arch(arch)
    path = Path(params_path)
    params = read_params(path)
    guessed = guess_backbone(params)
    if guessed is not None and guessed != backbone:
        raise GluonCVImportError(f"{path}: looks like a yolo3_{guessed}_* file (stem and block names), "
                                 f"but --arch is {arch}")
    layout = file_layout(params, path)
    classes = _resolve_classes(classes, dataset, layout["num_classes"], path)
    recipe = gluoncv_recipe(arch, classes, layout["anchors"], layout["widths"], data_root)
    resolved = merge(copy.deepcopy(DEFAULTS), copy.deepcopy(recipe))
    net = build_detector(resolved, len(classes))
    net.initialize(ctx=mx.cpu())
    net(mx.nd.zeros((1, 3, 64, 64)))                              # settles deferred shapes
    used = set()
    for key, param in net._collect_params_with_prefix().items():
        source = gluoncv_key(key, backbone, layout["num_scales"])
        if source not in params:
            raise GluonCVImportError(f"{path}: missing parameter '{source}' (for our '{key}')")
        value = params[source].reshape(param.shape) if key.startswith("decoder.") else params[source]
        if tuple(value.shape) != tuple(param.shape):
            raise GluonCVImportError(f"{path}: parameter '{source}' has shape {tuple(value.shape)}, our "
                                     f"'{key}' needs {tuple(param.shape)}")
        param.set_data(mx.nd.array(value, dtype=param.dtype))
        used.add(source)
    unused = sorted(k for k in params if k not in used and not IGNORED_KEYS.match(k))
    if unused:
        raise GluonCVImportError(f"{path}: {len(unused)} parameters have no place in a {arch} network, "
                                 f"e.g. {', '.join(unused[:3])}")
    return recipe, net


def import_gluoncv(params_path: str | Path, arch: str, out_dir: str | Path,
                   classes: Optional[Sequence[str]] = None, data_root: str = "VOCdevkit/VOC2007",
                   overwrite: bool = False) -> Dict[str, Path]:
    """Convert a GluonCV file and write `out_dir/recipe.yaml` and `out_dir/checkpoints/best.params`.

    `out_dir` is then a run folder that `eval`, `predict` and `api.load_detector` accept as weights.
    Existing files are only replaced with `overwrite=True`; files are written to a temporary name first.
    """

    out = Path(out_dir)
    recipe_path, weights_path = out / "recipe.yaml", out / "checkpoints" / "best.params"
    taken = [p for p in (recipe_path, weights_path) if p.exists()]
    if taken and not overwrite:
        raise GluonCVImportError(f"{taken[0]} already exists; choose another output folder or overwrite it "
                                 "(--overwrite)")
    recipe, net = convert(params_path, arch, classes, data_root)
    header = (f"# GluonCV {parse_arch(arch)[0]} YOLOv3 imported from {Path(params_path).name} by "
              f"`gluon-yolo3 import-gluoncv`.\n# Weights: checkpoints/best.params (use this folder as "
              f"--weights). Point data.val.root at your VOC folder with --set.\n")
    text = header + yaml.safe_dump(recipe, sort_keys=False, default_flow_style=None)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(weights_path, net.save_parameters)
    atomic_write_text(recipe_path, text)
    load_recipe(recipe_path)                                      # the written recipe must load
    return {"recipe": recipe_path, "weights": weights_path}


def _resolve_classes(classes, dataset: str, count: int, path) -> List[str]:
    if classes is not None:
        classes = [str(c) for c in classes]
        if len(classes) != count:
            raise GluonCVImportError(f"{path}: the file predicts {count} classes but {len(classes)} class "
                                     f"names were given")
        return classes
    names = dataset_classes(dataset)
    if names is None:
        raise GluonCVImportError(f"{path}: a *_custom model needs its class names ({count} of them)")
    if len(names) != count:
        raise GluonCVImportError(f"{path}: the file predicts {count} classes, not GluonCV's {len(names)} "
                                 f"{dataset.upper()} classes; give the class names")
    return names


def _standard_widths(channels: Sequence[int]) -> List[int]:
    """Block widths of our `yolov3` neck for backbone `channels` (finest first)."""
    n = len(channels)
    return [max(1, (channels[-1] // 2) >> (n - 1 - s)) for s in range(n)]


def _plain(anchors):
    """Nested anchors as plain Python numbers (ints where integral), for YAML."""
    out = []
    for item in anchors:
        if isinstance(item, (list, tuple, np.ndarray)):
            out.append(_plain(item))
        else:
            value = float(item)
            out.append(int(value) if value.is_integer() else value)
    return out
