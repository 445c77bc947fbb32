"""The recipe schema: every valid key with its default, and the rules its values must pass.

`DEFAULTS` is the schema and the defaults in one: a recipe states only what differs. A value must have its
default's type (an integer is a number; a bool is not; null only where the default is null) and pass its
rule in `RULES` (ranges, list shapes, choices); `check_value` says which key and what was expected.
"""
from __future__ import annotations

import math
import re
import reprlib
from typing import Any, Callable, Dict, Mapping, NamedTuple


class RecipeError(ValueError):
    """A recipe that cannot be loaded or that holds a bad key or value; the message names the key."""


# The schema: every valid key with its default. `None` means "no default; a value of any type".
DEFAULTS: Dict[str, Any] = {
    "name": None,
    "plugins": [],
    "model": {
        "input_size": 416,
        "backbone": {"type": "darknet53"},
        "neck": {"type": "yolov3"},
        "head": {"type": "yolov3"},
        # anchors per scale, finest first, (w, h) in pixels of the network input; `auto`: k-means on the
        # training boxes when the run starts (3 per scale), written into the run's recipe.yaml
        "anchors": [[[10, 13], [16, 30], [33, 23]],
                    [[30, 61], [62, 45], [59, 119]],
                    [[116, 90], [156, 198], [373, 326]]],
        # grid sensitivity (Darknet's [yolo] scale_x_y): the decoded centre is sigmoid(t) * s - (s - 1) / 2 in
        # its cell, so that it reaches the cell's edges; a number, or one per scale (finest first); 1 = YOLOv3
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
        "root": None,                # a dataset folder (Pascal VOC or YOLO txt): train on trainval (else train),
                                     # validate on test (else val), else a seeded 80/20 split; replaces
                                     # data.train and data.val
        "split_dir": None,           # a folder of train.txt and val.txt fixing data.root's split (a run's splits/:
                                     # train writes it when the folder has no split files); relative to the recipe
        "train": {"type": "synthetic", "split": "train"},
        "val": {"type": "synthetic", "split": "val"},
        "classes": None,             # class names; default: the training dataset's
        "transforms": [{"type": "random_flip"}],
        "resize": "letterbox",       # letterbox | resize: how every image reaches input_size
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "max_boxes": 100,            # ground-truth boxes kept per image for the ignore mask
        "num_workers": 1,
        # multi-scale training: every `every` batches a new input size from min_size..max_size (multiples
        # of 32), the same for every image (and so every device) of a batch; off while both are null
        "multi_scale": {"min_size": None, "max_size": None, "every": 10},
    },
    "train": {
        "devices": ["cpu:0"],
        "kvstore": "device",         # device | local | nccl; dist_sync | dist_device_sync: gluon-yolo3 launch
        "batch_size": 8,             # per worker, split over its devices (global: x workers of a dist job)
        "epochs": 10,
        "steps": None,               # a budget in steps instead: epochs = ceil(steps / steps per epoch), so
                                     # that one recipe fits datasets of any size
        "min_steps": None,           # at least this many steps: epochs = max(epochs, ceil(min_steps / steps per
                                     # epoch)), so that a small dataset still gets enough updates
        "optimizer": {"type": "sgd", "momentum": 0.9, "wd": 5.0e-4},
        "lr": 0.001,
        "lr_schedule": {"type": "warmup_cosine", "warmup_epochs": 1, "final_lr": 0.0},
        "seed": 0,
        "hybridize": True,
        "val_every": 1,              # epochs; 0 disables validation during training; auto: ~10 per run
        "checkpoint_every": 1,       # epochs; auto: ~10 per run
        "keep_checkpoints": 2,
        "log_every": 10,             # steps between metrics lines
        "no_bias_decay": True,       # no weight decay on biases and BatchNorm gamma/beta
        "clip_grad_norm": 0.0,       # clip the global L2 norm of the summed gradient to this; 0 = off
        "ema": None,                 # EMA of the weights for validation and saving: {decay: 0.9998,
                                     # warmup_steps: 2000}; null = off
        "amp": None,                 # mixed precision: bfloat16 (CPUs with AMX or AVX512-BF16: convolutions in
                                     # bfloat16, weights, BatchNorm statistics, loss and update in float32),
                                     # float16 (GPUs, MXNet AMP); auto = bfloat16 where every device is such a
                                     # CPU, else float32; null = float32
        "dist_timeout": 900,         # dist jobs: seconds a worker waits for the others (a step, or rank 0's
                                     # validation) before it stops with an error; 0 = forever
        "hooks": [],                 # more training hooks beside the built-ins: [{type: early_stopping, ...}]
        "init_from": None,           # start from these weights: a run, zoo folder or .params of ours, a Darknet
                                     # .weights (its .cfg beside it or train.init_cfg), a GluonCV YOLOv3 .params;
                                     # a path in a recipe file is relative to that file
        "init_cfg": None,            # the Darknet .cfg of train.init_from, when not beside it
        "freeze": None,              # {modules: [backbone], epochs: 3, norm: true}: not updated for the first
                                     # epochs (0: all), BatchNorm statistics too
    },
    "eval": {"metric": "voc07", "iou_thresh": 0.5, "batch_size": 8},   # detections: model.nms
    "predict": {"score_thresh": 0.3},
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


def check_value(path: str, value: Any, default: Any, where: str = "recipe"):
    """Raise RecipeError unless `value` passes the rule of key `path` (RULES, else its default's type)."""
    if value is None and default is None:
        return
    rule = RULES.get(path) or next((r for kind, r in TYPE_RULES if isinstance(default, kind)), None)
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
