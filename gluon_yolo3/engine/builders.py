"""The pieces of a training run, built from a recipe: each a small named function the trainer calls once.

    net = build_model(recipe, classes, contexts)          # initialised, YOLO's head-bias prior
    loss = build_loss(recipe, net)
    samples, sampler, batches = build_batches(recipe, train_set, net, classes, batch_size, rank, workers)
    optimizer = build_optimizer(recipe["train"], steps_per_epoch)
    hooks = build_hooks(recipe["train"])                  # built-ins + the recipe's train.hooks
"""
from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import mxnet as mx
import numpy as np

from ..amx import cpu_bf16, require_bf16
from ..data.build import build_datasets
from ..data.check import anchor_fit, input_box_shapes, kmeans_anchors, split_like, split_overlap
from ..data.pipeline import build_assigner, build_train_batches
from ..files import atomic_write_text
from ..losses.composer import YOLOLoss
from ..models.detector import YOLOv3, build_detector
from ..models.layers import resolve_norm
from ..registry import BACKBONES, HOOKS, LR_SCHEDULES, OPTIMIZERS
from ..schema import DEFAULTS
from .hooks import HookBase, builtin_hooks
from .run_folder import with_run_splits

NO_DECAY_SUFFIXES = ("_bias", "_gamma", "_beta")
AMP_TYPES = ("float16", "bfloat16")


def amp_type(value: Any, contexts, log: Callable[[str], None] = lambda _: None) -> Optional[str]:
    """`train.amp` -> None (off), "float16" (GPUs: MXNet's AMP with loss scaling) or "bfloat16" (CPUs with
    AMX-BF16 or AVX512-BF16: `models/precision.py`); a clear error where the devices cannot run it. `auto` is
    bfloat16 where every device is a CPU that runs it fast, else float32 (never float16: loss scaling is a choice),
    and `log` says which."""
    if value in (None, False, "", "off", "float32"):
        return None
    if value == "auto":
        amp = "bfloat16" if all(ctx.device_type == "cpu" for ctx in contexts) and cpu_bf16() else None
        log(f"train.amp auto: {amp or 'float32 (bfloat16 needs CPU devices with amx_bf16 or avx512_bf16)'}")
        return amp
    if value not in AMP_TYPES:
        raise ValueError(f"train.amp must be null (off), auto, float16 (GPU) or bfloat16 (CPU), got {value!r}")
    if value == "float16" and any(ctx.device_type != "gpu" for ctx in contexts):
        raise ValueError(f"train.amp: float16 needs GPU devices (train.devices / --devices gpu:0,...); got "
                         f"{', '.join(str(c) for c in contexts)}. On a CPU with AMX or AVX512-BF16, train.amp: "
                         "bfloat16; else null (float32).")
    if value == "bfloat16":
        if any(ctx.device_type != "cpu" for ctx in contexts):
            raise ValueError("train.amp: bfloat16 runs on CPU devices; on GPUs use float16")
        require_bf16("train.amp: bfloat16", "Set train.amp to null.")
    return str(value)


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)


def build_model(recipe: Mapping[str, Any], classes: Sequence[str], contexts) -> YOLOv3:
    """The recipe's detector with fresh weights on every context (identical copies), YOLO's prior on the head
    biases, and on CPUs the head's output channels padded for oneDNN's fast BatchNorm backward (HeadConv)."""
    net = build_detector(recipe, len(classes), num_devices=len(contexts))
    net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2.0), ctx=contexts)
    net.init_head_bias(recipe["model"]["input_size"])
    if all(c.device_type == "cpu" for c in contexts) and hasattr(net.head, "pad_outputs"):
        net.head.pad_outputs(True)
    return net


def build_loss(recipe: Mapping[str, Any], net: YOLOv3) -> YOLOLoss:
    """The recipe's weighted loss terms for `net`'s anchors and strides."""
    return YOLOLoss(recipe["loss"]["terms"], net.anchors, net.strides, recipe["loss"]["ignore_iou"],
                    scale_x_y=net.decoder.scale_x_y, prefix="loss_")


def build_batches(recipe: Mapping[str, Any], dataset, net: YOLOv3, num_classes: int, batch_size: int,
                  shard: int = 0, num_shards: int = 1):
    """`(samples, sampler, batch sampler)` of the training set; each worker of a distributed job reads its own
    shard (every num_shards-th key of one permutation). ValueError when not one batch fits."""
    assigner = build_assigner(recipe, net.anchors, net.strides, num_classes)
    samples, sampler, batches = build_train_batches(recipe, dataset, assigner, batch_size,
                                                    int(recipe["train"]["seed"]), shard=shard,
                                                    num_shards=num_shards)
    if len(batches) == 0:
        raise ValueError(f"train.batch_size {batch_size} is larger than the training set ({len(samples)} images"
                         + (f", {len(sampler)} per worker)" if num_shards > 1 else ")"))
    return samples, sampler, batches


def build_optimizer(train_cfg: Mapping[str, Any], steps_per_epoch: int):
    """The recipe's optimizer with its learning-rate schedule over `train.epochs` of `steps_per_epoch`."""
    lr = float(train_cfg["lr"])
    schedule = LR_SCHEDULES.build(train_cfg["lr_schedule"], lr=lr, steps_per_epoch=steps_per_epoch,
                                  epochs=int(train_cfg["epochs"]))
    return OPTIMIZERS.build(train_cfg["optimizer"], lr=lr, lr_scheduler=schedule)


def no_bias_decay(params) -> None:
    """No weight decay on biases and BatchNorm's gamma and beta (`train.no_bias_decay`)."""
    for name, param in params.items():
        if name.endswith(NO_DECAY_SUFFIXES):
            param.wd_mult = 0.0


def build_hooks(train_cfg: Mapping[str, Any], epochs: int) -> list:
    """The built-in hooks the `train` section asks for, then the recipe's `train.hooks` (plugins register them
    in `HOOKS`), all sorted by priority (stable: equal priorities keep this order)."""
    hooks = builtin_hooks(train_cfg, epochs)
    for index, cfg in enumerate(train_cfg.get("hooks") or []):
        hook = HOOKS.build(cfg, where=f"train.hooks.{index}")
        if not isinstance(hook, HookBase):
            raise ValueError(f"train.hooks.{index}: '{hook!r}' is not a hook (subclass gluon_yolo3.engine.hooks."
                             "HookBase)")
        hooks.append(hook)
    return sorted(hooks, key=lambda h: h.priority)


def build_run_data(recipe: Dict[str, Any], run_dir: Path, resuming: bool, log: Callable[[str], None]):
    """`{"train", "val"}` datasets of a run, with one class list; a resumed run reads the split it recorded (`splits/`,
    `run_folder.with_run_splits`). Where each split comes from, its problems and warnings are logged; ValueError
    when the training set holds no labelled box."""
    if resuming:
        recipe["data"] = dict(with_run_splits(recipe, run_dir)["data"])
    sets = build_datasets(recipe)
    log_problems(sets, log)
    overlap = split_overlap(sets["train"], sets["val"])
    if overlap:
        log(f"warning: {overlap}")
    check_boxes(sets["train"], int(recipe["data"]["max_boxes"]), log)
    return sets


def log_problems(datasets: Mapping[str, Any], log: Callable[[str], None], limit: int = 20):
    """Each dataset's drawn or recorded split, its skipped annotations and images (its `problems`, `limit` lines per
    split) and its warnings (what is used but looks wrong)."""
    for split, dataset in datasets.items():
        if getattr(dataset, "split_items", None) is not None:
            log(f"data.{split}: {len(dataset)} images, {dataset.split_source}")
        problems = getattr(dataset, "problems", [])
        for problem in problems[:limit]:
            log(f"data.{split}: {problem}")      # each says what was done: dropped, clipped, scaled, skipped
        if len(problems) > limit:
            log(f"data.{split}: ... and {len(problems) - limit} more problems (gluon-yolo3 data check lists them "
                "all)")
        for warning in getattr(dataset, "warnings", []):
            log(f"data.{split}: warning: {warning}")


def check_boxes(dataset, max_boxes: int, log: Callable[[str], None]):
    """ValueError when `dataset` (the training set) holds no labelled box: a run would learn background only
    (labels not found, every box skipped, no class at all). A note when images hold more than `max_boxes` boxes,
    the cap of the ignore mask's ground truth (every box still gets its target; evaluation counts them all)."""
    counts = [len(dataset.label(i)) for i in range(len(dataset))] if hasattr(dataset, "label") else None
    if not dataset.classes or (counts is not None and not sum(counts)):
        problems = getattr(dataset, "problems", [])
        raise ValueError(f"data.train holds no labelled boxes ({len(dataset)} images"
                         + (f"; {len(problems)} problem(s), the first: {problems[0]}" if problems else "")
                         + "): a detector cannot learn from it. `gluon-yolo3 data check RECIPE` lists every image "
                           "and box that was skipped")
    over = [(n, i) for i, n in enumerate(counts or []) if n > max_boxes]
    if over:
        most, i = max(over)
        name = dataset.image_path(i).name if hasattr(dataset, "image_path") else dataset.image_id(i)
        log(f"data.max_boxes {max_boxes}: {len(over)} training image(s) hold more boxes (up to {most}, {name}): the "
            f"ignore mask compares predictions with the first {max_boxes} of each; every box still gets its target, "
            "and evaluation counts them all")


def epochs_for(train_cfg: Dict[str, Any], images: int, batch_size: int, workers: int, log) -> int:
    """The run's epochs: `train.epochs`; with a step budget (`train.steps`) as many as it takes; with
    `train.min_steps`, at least as many as that takes, and with `train.max_steps` at most as many as fit in it
    (whole epochs, at least one). The count is written into `train_cfg` (and so into the run's recipe.yaml)."""
    steps, min_steps, max_steps = (train_cfg.get(k) for k in ("steps", "min_steps", "max_steps"))
    if not steps and not min_steps and not max_steps:
        return int(train_cfg["epochs"])
    per_epoch = max(1, (images // workers) // batch_size)
    if steps:
        train_cfg["epochs"] = max(1, math.ceil(int(steps) / per_epoch))
        log(f"train.steps {steps}: {train_cfg['epochs']} epochs of {per_epoch} steps")
    else:
        epochs = int(train_cfg["epochs"])
        if min_steps:
            train_cfg["epochs"] = max(train_cfg["epochs"], math.ceil(int(min_steps) / per_epoch))
        if max_steps:
            train_cfg["epochs"] = max(1, min(train_cfg["epochs"], int(max_steps) // per_epoch))
        bounds = ", ".join(f"train.{k} {v}" for k, v in (("min_steps", min_steps), ("max_steps", max_steps)) if v)
        log(f"train.epochs {epochs}, {bounds}: {train_cfg['epochs']} epochs of {per_epoch} steps "
            f"({train_cfg['epochs'] * per_epoch} steps)")
    return int(train_cfg["epochs"])


def resolve_anchors(recipe: Dict[str, Any], dataset, log, limit: int = 2000) -> Optional[Dict[str, Any]]:
    """`model.anchors: auto`: k-means (1 - IoU) anchors of the training boxes at the input size, 3 per scale,
    written into the recipe; explicit anchors: a warning when they fit the boxes badly (best possible recall
    under 0.98). Either way the fit is logged beside that of the default (COCO) anchors; returns it."""
    model = recipe["model"]
    wh = input_box_shapes(dataset, int(model["input_size"]), recipe["data"]["resize"], limit=limit)
    if not len(wh):
        return None
    default = anchor_fit(wh, DEFAULTS["model"]["anchors"])
    auto = model["anchors"] == "auto"
    if auto:
        scales = len(BACKBONES.build(model["backbone"], norm=resolve_norm(model.get("norm"))).strides)
        model["anchors"] = split_like(kmeans_anchors(wh, 3 * scales, seed=0), [3] * scales)
    fit = anchor_fit(wh, model["anchors"])
    log(f"model.anchors{' (auto, k-means)' if auto else ''}: {model['anchors']}: mean best IoU {fit['mean_iou']:.3f}, "
        f"best possible recall {fit['bpr']:.3f} on {len(wh)} training boxes (the default anchors: "
        f"{default['mean_iou']:.3f}, {default['bpr']:.3f})")
    if not auto and fit["bpr"] < 0.98:
        log(f"warning: model.anchors fit the training boxes badly (best possible recall {fit['bpr']:.3f} < 0.98): "
            f"`gluon-yolo3 anchors {recipe.get('_file_', 'RECIPE')}` prints anchors that fit, or set "
            "model.anchors: auto")
    return {"anchors": model["anchors"], "auto": auto, "fit": fit, "default_fit": default, "boxes": len(wh)}


def record_splits(datasets: Mapping[str, Any], run_dir: Path) -> bool:
    """The drawn (or recorded) train/val split of a dataset folder (`data.root` without split files), written into
    the run folder as splits/<split>.txt (one item per line: a VOC id, a YOLO image path relative to the dataset),
    so that the run says which images it held out and whatever reads the run uses them. True when written."""
    written = False
    for split, dataset in datasets.items():
        items = getattr(dataset, "split_items", None)
        if items is not None:
            atomic_write_text(run_dir / "splits" / f"{split}.txt", "".join(f"{i}\n" for i in items))
            written = True
    return written
