"""The recipe schema: every valid key with its default, and the rules its values must pass.

`DEFAULTS` is the schema and the defaults in one: a recipe states only what differs. A value must have its
default's type (an integer is a number; a bool is not; null only where the default is null) and pass its
rule in `RULES` (ranges, list shapes, choices); `check_value` says which key and what was expected.
`DESCRIPTIONS` says what each key does; `keys()` lists them. The documentation's recipe reference is made from
these three, so that it shows what this file holds.
"""
from __future__ import annotations

import math
import re
import reprlib
from typing import Any, Callable, Dict, Mapping, NamedTuple


class RecipeError(ValueError):
    """A recipe that cannot be loaded or that holds a bad key or value; the message names the key."""


# The schema: every valid key with its default. `None` means "no default; a value of any type". What each key
# does: DESCRIPTIONS below.
DEFAULTS: Dict[str, Any] = {
    "name": None,
    "plugins": [],
    "model": {
        "input_size": 416,
        "backbone": {"type": "darknet53"},
        "neck": {"type": "yolov3"},
        "head": {"type": "yolov3"},
        "anchors": [[[10, 13], [16, 30], [33, 23]],
                    [[30, 61], [62, 45], [59, 119]],
                    [[116, 90], [156, 198], [373, 326]]],
        "scale_x_y": 1.0,
        "norm": {"type": "batchnorm", "momentum": 0.9, "eps": 1.0e-5},
        "nms": {"type": "class_aware", "score_thresh": 0.01, "iou_thresh": 0.45, "topk": 400,
                "max_det": 100},
    },
    "assigner": {"type": "best_anchor"},
    "loss": {
        "ignore_iou": 0.7,
        "terms": [
            {"type": "xy_bce", "weight": 1.0},
            {"type": "wh_l1", "weight": 1.0},
            {"type": "objectness_bce", "weight": 1.0},
            {"type": "class_bce", "weight": 1.0},
        ],
    },
    "data": {
        "root": None,
        "split_dir": None,
        "train": {"type": "synthetic", "split": "train"},
        "val": {"type": "synthetic", "split": "val"},
        "classes": None,
        "transforms": [{"type": "random_flip"}],
        "resize": "letterbox",
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "max_boxes": 100,
        "num_workers": 1,
        "multi_scale": {"min_size": None, "max_size": None, "every": 10},
    },
    "train": {
        "devices": ["cpu:0"],
        "kvstore": "device",
        "batch_size": 8,
        "epochs": 10,
        "steps": None,
        "min_steps": None,
        "max_steps": None,
        "optimizer": {"type": "sgd", "momentum": 0.9, "wd": 5.0e-4},
        "lr": 0.001,
        "lr_schedule": {"type": "warmup_cosine", "warmup_epochs": 1, "final_lr": 0.0},
        "seed": 0,
        "hybridize": True,
        "val_every": 1,
        "checkpoint_every": 1,
        "keep_checkpoints": 2,
        "log_every": 10,
        "no_bias_decay": True,
        "clip_grad_norm": 0.0,
        "ema": None,
        "amp": None,
        "dist_timeout": 900,
        "hooks": [],
        "init_from": None,
        "init_cfg": None,
        "freeze": None,
    },
    "eval": {"metric": "voc07", "iou_thresh": 0.5, "batch_size": 8},
    "predict": {"score_thresh": 0.3},
}

# What each key of DEFAULTS does, by key path: the recipe reference of the documentation is made from these, the
# defaults and the rules (tests/docs checks that every key has a description and every description a key).
# A registry's name in capitals (BACKBONES) links to its entries there.
DESCRIPTIONS: Dict[str, str] = {
    "name": "The run's name: its folder is `runs/<name>` unless `--workdir` says otherwise; null: the recipe "
            "file's name.",
    "plugins": "Python files (relative to the recipe) or module names imported before anything is built; "
               "they register components.",
    "model.input_size": "The square input size in pixels, a multiple of the backbone's largest stride; also the "
                        "size of evaluation, prediction and exports.",
    "model.backbone": "The trunk: a BACKBONES entry and its arguments.",
    "model.neck": "The neck between trunk and head: a NECKS entry and its arguments.",
    "model.head": "The output convolutions: a HEADS entry.",
    "model.anchors": "Anchors per scale, finest first, (w, h) in pixels of the network input; `auto`: k-means on the "
                     "training boxes when the run starts (3 per scale), written into the run's `recipe.yaml`.",
    "model.scale_x_y": "Grid sensitivity (Darknet's `[yolo] scale_x_y`): the decoded centre is sigmoid(t) * s - "
                       "(s - 1) / 2 in its cell, so that it reaches the cell's edges; a number, or one per scale "
                       "(finest first); 1 = YOLOv3.",
    "model.norm": "The normalisation layers: `batchnorm` (`momentum`, `eps`), `frozen` (BatchNorm on its running "
                  "statistics, never updated) or `syncbn` (statistics over the devices; refused on CPU devices).",
    "model.nms": "Non-maximum suppression after decoding: an NMS entry with `score_thresh`, `iou_thresh`, `topk` "
                 "(candidates) and `max_det` (kept per image); evaluation uses it too.",
    "assigner": "Which anchors learn each ground-truth box: an ASSIGNERS entry.",
    "loss.ignore_iou": "Background predictions whose box overlaps a ground-truth box by more than this IoU are "
                       "left out of the objectness loss.",
    "loss.terms": "LOSSES entries, summed with their `weight`s.",
    "data.root": "A dataset folder (Pascal VOC or YOLO txt): train on trainval (else train), validate on test "
                 "(else val), else a seeded 80/20 split; replaces `data.train` and `data.val`.",
    "data.split_dir": "A folder of train.txt and val.txt fixing `data.root`'s split (a run's `splits/`: `train` "
                      "writes it when the folder has no split files); relative to the recipe.",
    "data.train": "The training dataset: a DATASETS entry and its arguments.",
    "data.val": "The validation dataset, also what `eval` scores: a DATASETS entry and its arguments.",
    "data.classes": "The run's class names; null: the training dataset's.",
    "data.transforms": "Augmentations applied in order to training images: TRANSFORMS entries.",
    "data.resize": "How every image reaches `model.input_size`: `letterbox` (aspect ratio kept, padded) or "
                   "`resize`.",
    "data.mean": "Per-channel mean (R, G, B) subtracted from pixels / 255.",
    "data.std": "Per-channel standard deviation (R, G, B) the centred pixels are divided by.",
    "data.max_boxes": "Ground-truth boxes kept per image for the ignore mask.",
    "data.num_workers": "DataLoader worker processes (0: in the training process).",
    "data.multi_scale.min_size": "Multi-scale training: the smallest input size (a multiple of 32); off while "
                                 "both sizes are null.",
    "data.multi_scale.max_size": "Multi-scale training: the largest input size (a multiple of 32).",
    "data.multi_scale.every": "Multi-scale training: a new input size every this many batches, the same for every "
                              "image (and so every device) of a batch.",
    "train.devices": "The devices each batch is split over (`cpu:0`, `gpu:0`, ...); `--devices` sets it.",
    "train.kvstore": "How gradients are summed: `device`, `local` or `nccl`; `dist_sync` and `dist_device_sync` "
                     "for jobs started by `gluon-yolo3 launch`.",
    "train.batch_size": "Images per step on each worker, split over its devices (global: times the workers of a "
                        "distributed job).",
    "train.epochs": "Passes over the training set.",
    "train.steps": "A budget in steps instead of `epochs`: epochs = ceil(steps / steps per epoch), so that one "
                   "recipe fits datasets of any size.",
    "train.min_steps": "At least this many steps: epochs = max(epochs, ceil(min_steps / steps per epoch)), so that "
                       "a small dataset still gets enough updates.",
    "train.max_steps": "At most this many steps (whole epochs, at least one): epochs = min(epochs, floor(max_steps / "
                       "steps per epoch)), so that a large dataset stays within a time budget; after min_steps.",
    "train.optimizer": "An OPTIMIZERS entry and its arguments.",
    "train.lr": "The base learning rate; the schedule scales it.",
    "train.lr_schedule": "The learning-rate schedule: an LR_SCHEDULES entry and its arguments.",
    "train.seed": "Seeds the initialisation, the data order and the augmentation.",
    "train.hybridize": "Run the network as MXNet's static graph (faster); false: imperative, for debugging.",
    "train.val_every": "Validate every this many epochs (and after the last); 0: no validation during training; "
                       "`auto`: about ten times over the run.",
    "train.checkpoint_every": "A checkpoint every this many epochs (and after the last); `auto`: about ten over "
                              "the run.",
    "train.keep_checkpoints": "Epoch checkpoints kept (older ones are deleted; `best.params` stays).",
    "train.log_every": "Steps between metrics lines.",
    "train.no_bias_decay": "No weight decay on biases and BatchNorm gamma/beta.",
    "train.clip_grad_norm": "Clip the global L2 norm of the summed gradient to this; 0 = off.",
    "train.ema": "EMA of the weights for validation and saving: `{decay: 0.9998, warmup_steps: 2000}`; "
                 "null = off.",
    "train.amp": "Mixed precision: `bfloat16` (CPUs with AMX or AVX512-BF16: convolutions in bfloat16; weights, "
                 "BatchNorm statistics, loss and update in float32), `float16` (GPUs, MXNet AMP); `auto` = bfloat16 "
                 "where every device is such a CPU, else float32; null = float32.",
    "train.dist_timeout": "Distributed jobs: seconds a worker waits for the others (a step, or rank 0's "
                          "validation) before it stops with an error; 0 = forever.",
    "train.hooks": "More training hooks beside the built-ins: HOOKS entries, e.g. `[{type: early_stopping, "
                   "patience: 5}]`.",
    "train.init_from": "Start from these weights: a run, zoo folder or `.params` of ours, a Darknet `.weights` (its "
                       "`.cfg` beside it or `train.init_cfg`), a GluonCV YOLOv3 `.params`; a path in a recipe file "
                       "is relative to that file.",
    "train.init_cfg": "The Darknet `.cfg` of `train.init_from`, when it is not beside the weights.",
    "train.freeze": "`{modules: [backbone], epochs: 3, norm: true}`: these modules are not updated for the first "
                    "epochs (0: all), their BatchNorm statistics too.",
    "eval.metric": "The metric of `eval` and of validation: a METRICS entry (`voc07`, `voc`, `coco`).",
    "eval.iou_thresh": "The IoU at which a detection matches a ground-truth box (VOC metrics).",
    "eval.batch_size": "Images per batch in evaluation and validation; the detections come from `model.nms`.",
    "predict.score_thresh": "Detections scoring at least this are drawn and listed by `predict` (and counted in "
                            "the confusion matrix and `errors.json` of `eval --report`).",
}


class Rule(NamedTuple):
    """A value check: `accepts(value)`, and what the value must be, for the message ("an integer >= 1")."""
    accepts: Callable[[Any], bool]
    expected: str


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_text(value) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _is_component(value) -> bool:
    return _is_text(value) or (isinstance(value, Mapping) and "type" in value)


def _is_size(value) -> bool:
    return _is_number(value) and value > 0


def _is_devices(value) -> bool:
    return _is_text(value) or (isinstance(value, list) and len(value) > 0 and all(map(_is_text, value)))


def _is_anchors(value) -> bool:
    return value == "auto" or (isinstance(value, list) and len(value) > 0
            and all(isinstance(group, list) and len(group) > 0
                    and all(isinstance(wh, list) and len(wh) == 2 and all(map(_is_size, wh)) for wh in group)
                    for group in value))


def _in_scale_range(value) -> bool:
    return _is_number(value) and 1 <= value <= 2


def _or_auto(rule: Rule) -> Rule:
    return Rule(lambda v: v == "auto" or rule.accepts(v), f"auto or {rule.expected}")


def _is_freeze(value) -> bool:
    return (isinstance(value, Mapping) and set(value) <= {"modules", "epochs", "norm"}
            and isinstance(value.get("modules", []), list) and all(map(_is_text, value.get("modules", [])))
            and _is_int(value.get("epochs", 0)) and value.get("epochs", 0) >= 0
            and isinstance(value.get("norm", True), bool))


def _integer(low: int, high: int | None = None) -> Rule:
    return Rule(lambda v: _is_int(v) and low <= v and (high is None or v <= high),
                f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]")


def _number(interval: str) -> Rule:
    """A finite number in `interval`, written as in mathematics: "(0, 1]", "[0, inf)"."""
    left, low, high, right = re.fullmatch(r"([\[(])(.+), (.+)([\])])", interval).groups()
    low, high = float(low), float(high)

    def accepts(v):
        return (_is_number(v) and (low <= v if left == "[" else low < v)
                and (v <= high if right == "]" else v < high))
    if high == math.inf:
        return Rule(accepts, f"a number {'>=' if left == '[' else '>'} {low:g}")
    return Rule(accepts, f"a number in {interval}")


def _list_of(item: Callable[[Any], bool], expected: str, length: int | None = None, empty: bool = True) -> Rule:
    return Rule(lambda v: (isinstance(v, list) and all(map(item, v)) and (empty or len(v) > 0)
                           and (length is None or len(v) == length)), expected)


def _one_of(*choices: str) -> Rule:
    return Rule(lambda v: isinstance(v, str) and v in choices, " or ".join(repr(c) for c in choices))


COMPONENTS = "a list of component configs ({type: ...} or a type name)"

# Values beyond their default's type, by key path. Keys whose default is null may also be null; those without
# a rule stay open (train.ema and train.amp: the trainer checks them, as it checks clip_grad_norm >= 0).
RULES: Dict[str, Rule] = {
    "name": Rule(_is_text, "a non-empty string (the run folder's name)"),
    "plugins": _list_of(_is_text, "a list of plugin files (.py) or module names"),
    "model.input_size": _integer(32),
    "model.anchors": Rule(_is_anchors, "auto, or per scale, finest first, a list of [w, h] pairs of positive numbers "
                                       "(input pixels), e.g. [[[10, 13], [16, 30]], [[62, 45], [59, 119]]]"),
    "model.scale_x_y": Rule(lambda v: _in_scale_range(v) or (isinstance(v, list) and len(v) > 0
                                                              and all(map(_in_scale_range, v))),
                            "a number in [1, 2], or a list of them (one per scale, finest first)"),
    "loss.ignore_iou": _number("[0, 1]"),
    "loss.terms": _list_of(_is_component, COMPONENTS + ", at least one", empty=False),
    "data.classes": Rule(lambda v: _list_of(_is_text, "", empty=False).accepts(v) and len(set(v)) == len(v),
                         "a list of distinct class names (strings: quote a name YAML reads as a number)"),
    "data.transforms": _list_of(_is_component, COMPONENTS),
    "data.resize": _one_of("letterbox", "resize"),
    "data.mean": _list_of(_is_number, "a list of 3 numbers (R, G, B)", length=3),
    "data.std": _list_of(_is_size, "a list of 3 positive numbers (R, G, B)", length=3),
    "data.max_boxes": _integer(1),
    "data.num_workers": _integer(0),
    "data.multi_scale.min_size": _integer(32),
    "data.multi_scale.max_size": _integer(32),
    "data.multi_scale.every": _integer(1),
    "train.devices": Rule(_is_devices, "a list of devices like [cpu:0, cpu:1], or one string like cpu:0,cpu:1"),
    "train.kvstore": Rule(_is_text, "a kvstore name (device, local, nccl, dist_sync, dist_device_sync)"),
    "train.batch_size": _integer(1),
    "train.epochs": _integer(1),
    "train.lr": _number("(0, inf)"),
    "train.seed": _integer(0, 2 ** 32 - 1),
    "train.val_every": _or_auto(_integer(0)),
    "train.checkpoint_every": _or_auto(_integer(1)),
    "train.steps": _integer(1),
    "train.min_steps": _integer(1),
    "train.max_steps": _integer(1),
    "train.init_from": Rule(_is_text, "a path to weights (a folder, a .params or a Darknet .weights file)"),
    "train.init_cfg": Rule(_is_text, "a path to a Darknet .cfg file"),
    "train.freeze": Rule(_is_freeze, "a mapping like {modules: [backbone], epochs: 3, norm: true}"),
    "data.root": Rule(_is_text, "a path to a dataset folder (Pascal VOC or YOLO txt)"),
    "data.split_dir": Rule(_is_text, "a path to a folder of split files (train.txt, val.txt)"),
    "train.keep_checkpoints": _integer(1),
    "train.log_every": _integer(1),
    "train.dist_timeout": _number("[0, inf)"),
    "train.hooks": _list_of(_is_component, COMPONENTS),
    "eval.metric": Rule(_is_text, "a metric name (voc07, voc, coco)"),
    "eval.iou_thresh": _number("(0, 1]"),
    "eval.batch_size": _integer(1),
    "predict.score_thresh": _number("[0, 1]"),
}

# The rule of a key without one in RULES, by the type of its default (bool first: a bool is an int in Python).
TYPE_RULES = ((bool, Rule(lambda v: isinstance(v, bool), "true or false")),
              (int, Rule(_is_int, "an integer")),
              (float, Rule(_is_number, "a number")),
              (str, Rule(lambda v: isinstance(v, str), "a string")),
              (list, Rule(lambda v: isinstance(v, list), "a list")))


def rule_of(path: str, default: Any) -> Rule | None:
    """The rule of key `path`: its own in RULES, else its default's type's; None for an open value."""
    return RULES.get(path) or next((r for kind, r in TYPE_RULES if isinstance(default, kind)), None)


def check_value(path: str, value: Any, default: Any, where: str = "recipe"):
    """Raise RecipeError unless `value` passes the rule of key `path` (RULES, else its default's type)."""
    if value is None and default is None:
        return
    rule = rule_of(path, default)
    if rule is not None and not rule.accepts(value):
        raise RecipeError(f"{where}: {path} must be {rule.expected}, got {shown(value)}")


# a value shown in a message: long strings, lists, dicts and deep nesting cut, never walked whole
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 4, 80, 80, 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 8
SHOWN_LENGTH = 160


def shown(value: Any, limit: int = SHOWN_LENGTH) -> str:
    """A value as the recipe's YAML spells it (null, true, 'abc', [1, 2]), cut to a readable length: a value
    from a hostile file may hold millions of characters (`reprlib` stops reading it at its limits)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def is_component(default: Any) -> bool:
    """A component config (a mapping with a `type`): one key of the schema, its arguments the registry's."""
    return isinstance(default, Mapping) and "type" in default


def keys(schema: Mapping[str, Any] = DEFAULTS, prefix: str = ""):
    """Every key of the schema as (dotted path, default), in order: sections are walked, components are keys."""
    for key, default in schema.items():
        if isinstance(default, Mapping) and not is_component(default):
            yield from keys(default, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", default
