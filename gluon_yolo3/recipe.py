"""Recipes: YAML files with `_base_` inheritance, `--set a.b=value` overrides and validation.

    _base_: [../_base_/tiny.yaml]       # one path or a list, relative to this file; merged in order
    train:
      lr: 0.01                          # deep-merged into the base
    data:
      transforms:                       # lists always replace
        - {type: random_flip}
    model:
      nms: {_replace_: true, type: class_aware, iou_thresh: 0.5}   # replace the base's dict whole
      backbone: {type: darknet_tiny}      # another type: replaces (the old type's keys don't apply)

Every key must exist in `DEFAULTS` (the schema and the defaults in one), except inside component configs
(dicts with a `type`), whose keys are checked against the registered constructor when built. Every value
must have its default's type (an integer is a number; null only where the default is null) and pass its
rule in `RULES` (ranges, list shapes, choices).
"""
from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, NamedTuple

import yaml

from .registry import closest

REPLACE_KEY = "_replace_"
BASE_KEY = "_base_"

# The schema: every valid key with its default. `None` means "no default; a value of any type".
DEFAULTS: Dict[str, Any] = {
    "name": None,
    "plugins": [],
    "model": {
        "input_size": 416,
        "backbone": {"type": "darknet53"},
        "neck": {"type": "yolov3"},
        "head": {"type": "yolov3"},
        # anchors per scale, finest first, (w, h) in pixels of the network input
        "anchors": [[[10, 13], [16, 30], [33, 23]],
                    [[30, 61], [62, 45], [59, 119]],
                    [[116, 90], [156, 198], [373, 326]]],
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
        "optimizer": {"type": "sgd", "momentum": 0.9, "wd": 5.0e-4},
        "lr": 0.001,
        "lr_schedule": {"type": "warmup_cosine", "warmup_epochs": 1, "final_lr": 0.0},
        "seed": 0,
        "hybridize": True,
        "val_every": 1,              # epochs; 0 disables validation during training
        "checkpoint_every": 1,       # epochs
        "keep_checkpoints": 2,
        "log_every": 10,             # steps between metrics lines
        "no_bias_decay": True,       # no weight decay on biases and BatchNorm gamma/beta
        "clip_grad_norm": 0.0,       # clip the global L2 norm of the summed gradient to this; 0 = off
        "ema": None,                 # EMA of the weights for validation and saving: {decay: 0.9998,
                                     # warmup_steps: 2000}; null = off
        "amp": None,                 # mixed precision: float16 (GPU only, MXNet AMP); null = float32
        "dist_timeout": 900,         # dist jobs: seconds a worker waits for the others (a step, or rank 0's
                                     # validation) before it stops with an error; 0 = forever
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
    return (isinstance(value, list) and len(value) > 0
            and all(isinstance(group, list) and len(group) > 0
                    and all(isinstance(wh, list) and len(wh) == 2 and all(map(_is_size, wh)) for wh in group)
                    for group in value))


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
    "model.anchors": Rule(_is_anchors, "per scale, finest first, a list of [w, h] pairs of positive numbers "
                                       "(input pixels), e.g. [[[10, 13], [16, 30]], [[62, 45], [59, 119]]]"),
    "loss.ignore_iou": _number("[0, 1]"),
    "loss.terms": _list_of(_is_component, COMPONENTS + ", at least one", empty=False),
    "data.classes": _list_of(_is_text, "a list of class names (strings: quote a name YAML reads as a number)",
                             empty=False),
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
    "train.val_every": _integer(0),
    "train.checkpoint_every": _integer(1),
    "train.keep_checkpoints": _integer(1),
    "train.log_every": _integer(1),
    "train.dist_timeout": _number("[0, inf)"),
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


class _Loader(yaml.SafeLoader):
    """Safe YAML with YAML 1.2 floats: `5e-4` and `1e-3` are numbers, not strings (PyYAML reads 1.1)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def parse_yaml(text: str):
    return yaml.load(text, Loader=_Loader)


class RecipeError(ValueError):
    """A recipe that cannot be loaded or that holds a bad key or value; the message names the key."""


def load_recipe(path: str | Path, overrides: Iterable[str] = ()) -> Dict[str, Any]:
    """Load `path` with its bases, apply `--set` style overrides, fill defaults and validate.

    Returns the resolved recipe: a plain dict with `_file_` holding the absolute path of `path`.
    """
    path = Path(path).resolve()
    raw = _load_with_bases(path, chain=())
    validate(raw, where=str(path))
    strip_replace_markers(raw)          # `_replace_` acts against bases, never against the defaults
    recipe = merge(copy.deepcopy(DEFAULTS), raw)
    for item in overrides:              # after the defaults, so that `loss.terms.0.weight=2` finds the list
        apply_override(recipe, item)
    validate(recipe, where="--set")
    if not recipe.get("name"):
        recipe["name"] = path.stem
    recipe["_file_"] = str(path)
    return recipe


def resolved_yaml(recipe: Mapping[str, Any]) -> str:
    """The recipe as YAML, standalone (no `_base_`), for the run folder."""
    clean = {k: v for k, v in recipe.items() if k != "_file_"}
    return yaml.safe_dump(clean, sort_keys=False, default_flow_style=None)


def _read_yaml(path: Path) -> Dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as err:
        raise RecipeError(f"cannot read recipe {path}: {err.strerror}") from None
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping at the top level, got {type(data).__name__}")
    return data


def _load_with_bases(path: Path, chain: tuple) -> Dict[str, Any]:
    if path in chain:
        raise RecipeError("recipe inheritance loops: " + " -> ".join(str(p) for p in chain + (path,)))
    data = _read_yaml(path)
    bases = data.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    merged: Dict[str, Any] = {}
    for base in bases:
        base_path = (path.parent / base).resolve()
        if not base_path.exists():
            raise RecipeError(f"{path}: _base_ file '{base}' not found (looked at {base_path})")
        merged = merge(merged, _load_with_bases(base_path, chain + (path,)))
    _resolve_plugin_paths(data, path.parent)
    return merge(merged, data)


def _resolve_plugin_paths(data: Dict[str, Any], folder: Path):
    """Plugin entries that are file paths become absolute, relative to the recipe that names them."""
    plugins = data.get("plugins")
    if not isinstance(plugins, list):
        return
    data["plugins"] = [str((folder / item).resolve())
                       if isinstance(item, str) and (item.endswith(".py") or "/" in item) else item
                       for item in plugins]


def merge(base: Any, update: Any) -> Any:
    """Deep-merge `update` into `base` (both left intact for dicts they don't share); lists replace.

    A dict in `update` holding `_replace_: true` replaces the base's dict instead of merging, and so
    does a component config whose `type` differs from the base's (the old type's arguments don't apply).
    """
    if not isinstance(base, dict) or not isinstance(update, dict) or update.get(REPLACE_KEY):
        return copy.deepcopy(update)
    if "type" in update and "type" in base and update["type"] != base["type"]:
        return copy.deepcopy(update)
    out = dict(base)
    for key, value in update.items():
        out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
    return out


def strip_replace_markers(node: Any):
    if isinstance(node, dict):
        node.pop(REPLACE_KEY, None)
        for value in node.values():
            strip_replace_markers(value)
    elif isinstance(node, list):
        for value in node:
            strip_replace_markers(value)


def apply_override(recipe: Dict[str, Any], item: str):
    """Apply one `a.b.c=value` override in place; the value is parsed as YAML (`0.01`, `[1, 2]`, `true`)."""
    if "=" not in item:
        raise RecipeError(f"override '{item}' must look like key.path=value")
    key, text = item.split("=", 1)
    key = key.strip()
    try:
        value = parse_yaml(text) if text.strip() else None
    except yaml.YAMLError as err:
        raise RecipeError(f"override '{item}': value is not valid YAML: {err}") from None
    parts = key.split(".")
    _check_path(parts, where=f"--set {key}")
    node = recipe
    for depth, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = node[_list_index(node, part, parts[:depth + 1])]
            continue
        if not isinstance(node.get(part), (dict, list)):
            node[part] = {}
        node = node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(node, last, parts)] = value
    elif last == "type" and node.get("type") not in (None, value):
        # a new type is a new component: the old type's arguments don't apply (as in `merge`)
        node.clear()
        node["type"] = value
    else:
        node[last] = value


def _list_index(node: List, part: str, parts: List[str]) -> int:
    if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
        raise RecipeError(f"--set {'.'.join(parts)}: '{part}' is not an index of a list of {len(node)}")
    return int(part)


def _check_path(parts: List[str], where: str):
    """Check that a dotted key path exists in the schema (component configs and lists stay open)."""
    schema: Any = DEFAULTS
    for depth, part in enumerate(parts):
        if isinstance(schema, list) or (isinstance(schema, dict) and "type" in schema):
            return
        if not isinstance(schema, dict):
            raise RecipeError(f"{where}: '{'.'.join(parts[:depth])}' is a value, not a section")
        if part not in schema:
            _unknown(".".join(parts[:depth + 1]), part, schema, where)
        if schema[part] is None:
            return
        schema = schema[part]


def validate(recipe: Mapping[str, Any], where: str = "recipe", schema: Mapping[str, Any] = DEFAULTS,
             prefix: str = ""):
    """Raise RecipeError naming the first key path that the schema does not know, or whose value is wrong."""
    for key, value in recipe.items():
        if key == REPLACE_KEY:
            continue
        path = f"{prefix}{key}"
        if key not in schema:
            _unknown(path, key, schema, where)
        expected = schema[key]
        if isinstance(expected, dict) and "type" not in expected:
            if not isinstance(value, dict):
                raise RecipeError(f"{where}: '{path}' must be a mapping, got {value!r}")
            validate(value, where, expected, prefix=f"{path}.")
        elif isinstance(expected, dict) and "type" in expected:
            if not isinstance(value, (dict, str)):
                raise RecipeError(f"{where}: '{path}' must be a component config with a 'type', got {value!r}")
        else:
            check_value(path, value, expected, where)


def check_value(path: str, value: Any, default: Any, where: str = "recipe"):
    """Raise RecipeError unless `value` passes the rule of key `path` (RULES, else its default's type)."""
    if value is None and default is None:
        return
    rule = RULES.get(path) or next((r for kind, r in TYPE_RULES if isinstance(default, kind)), None)
    if rule is not None and not rule.accepts(value):
        raise RecipeError(f"{where}: {path} must be {rule.expected}, got {_shown(value)}")


def _shown(value: Any) -> str:
    """A value as the recipe's YAML spells it: null, true, 'abc', [1, 2]."""
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else repr(value)


def _unknown(path: str, key: str, schema: Mapping[str, Any], where: str):
    hint = closest(key, [k for k in schema if k != REPLACE_KEY])
    parent = path.rsplit(".", 1)[0] + "." if "." in path else ""
    raise RecipeError(
        f"{where}: unknown key '{path}'"
        + (f" (did you mean '{parent}{hint}'?)" if hint else "")
        + f"; valid keys here: {', '.join(k for k in schema)}")


def component(recipe: Mapping[str, Any], path: str) -> Dict[str, Any]:
    """The component config at dotted `path`, as a dict (a bare string becomes `{'type': ...}`)."""
    node: Any = recipe
    for part in path.split("."):
        node = node[part]
    if isinstance(node, str):
        return {"type": node}
    return dict(node)
