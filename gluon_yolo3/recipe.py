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

Every key must exist in `schema.DEFAULTS` (the schema and the defaults in one), except inside component
configs (dicts with a `type`), whose keys are checked against the registered constructor when built. Every
value must have its default's type (an integer is a number; null only where the default is null) and pass
its rule in `schema.RULES` (ranges, list shapes, choices).
"""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping

import yaml

from .registry import closest
from .schema import DEFAULTS, RecipeError, check_value

REPLACE_KEY = "_replace_"
BASE_KEY = "_base_"

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
    _resolve_paths(data, path.parent)
    return merge(merged, data)


# paths a recipe file gives relative to itself (data roots stay relative to the working directory)
FILE_RELATIVE = (("train", "init_from"), ("train", "init_cfg"))


def _resolve_paths(data: Dict[str, Any], folder: Path):
    """Plugin entries that are file paths, and the keys of FILE_RELATIVE, become absolute paths, relative to the
    recipe that names them (a `--set` value stays as given: relative to the working directory)."""
    plugins = data.get("plugins")
    if isinstance(plugins, list):
        data["plugins"] = [str((folder / item).resolve())
                           if isinstance(item, str) and (item.endswith(".py") or "/" in item) else item
                           for item in plugins]
    for section, key in FILE_RELATIVE:
        value = (data.get(section) or {}).get(key) if isinstance(data.get(section), dict) else None
        if isinstance(value, str) and value.strip():
            data[section][key] = str((folder / value).resolve())


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
