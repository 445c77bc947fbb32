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
from .schema import DEFAULTS, RecipeError, check_value, shown

REPLACE_KEY = "_replace_"
BASE_KEY = "_base_"

# Limits on what one YAML text may cost: a recipe is a few kB of a few levels. A 400-byte alias bomb
# (`a: &a [1, 1]`, `b: &b [*a, *a]`, ... nine levels of nine) expands to 9^9 values when walked.
MAX_YAML_BYTES = 1 << 20            # a file's size
MAX_YAML_VALUES = 100_000           # values (scalars, lists, mappings) after alias expansion
MAX_YAML_DEPTH = 50                 # nesting levels
MAX_BASE_DEPTH = 32                 # files in one `_base_` chain
MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """Safe YAML with YAML 1.2 floats (`5e-4` and `1e-3` are numbers, not strings: PyYAML reads 1.1), that
    refuses duplicate keys and documents that expand past MAX_YAML_VALUES or nest past MAX_YAML_DEPTH."""

    def construct_document(self, node):
        _check_expansion(node)
        return super().construct_document(node)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: Dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                    continue            # `<<: *base` keys may be overridden; complex keys: left to PyYAML
                key, line = self.construct_object(key_node), key_node.start_mark.line + 1
                if key in first:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {shown(key)} on lines {first[key]} and {line}: "
                                    "a second one would replace the first; merge them into one", key_node.start_mark)
                first[key] = line
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def _check_expansion(root: yaml.Node):
    """yaml.YAMLError when the node graph, with every alias expanded, holds more than MAX_YAML_VALUES values or
    nests deeper than MAX_YAML_DEPTH (or refers to itself). Counted on the graph (each node once), never expanded."""
    size: Dict[int, int] = {}
    depth: Dict[int, int] = {}
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in size:
            continue
        children = ([n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else
                    list(node.value) if isinstance(node, yaml.SequenceNode) else [])
        if children_done:
            size[id(node)] = 1 + sum(size[id(c)] for c in children)
            depth[id(node)] = 1 + max((depth[id(c)] for c in children), default=0)
            depth.pop(-id(node))
            if size[id(node)] > MAX_YAML_VALUES:
                raise yaml.YAMLError(f"its aliases expand to more than {MAX_YAML_VALUES} values (an alias bomb?); "
                                     "a recipe holds a few hundred")
            if depth[id(node)] > MAX_YAML_DEPTH:
                raise yaml.YAMLError(f"it nests deeper than {MAX_YAML_DEPTH} levels")
            continue
        if -id(node) in depth:
            raise yaml.YAMLError(f"an alias refers to the value that holds it (line {node.start_mark.line + 1})")
        depth[-id(node)] = 0                     # on the path from the root: seen again below it is a loop
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)


def parse_yaml(text: str):
    """Safe YAML (`_Loader`); yaml.YAMLError for a duplicate key, an alias bomb or nesting past the limits."""
    try:
        return yaml.load(text, Loader=_Loader)
    except RecursionError:          # PyYAML composes nested values recursively
        raise yaml.YAMLError(f"it nests deeper than {MAX_YAML_DEPTH} levels") from None


def read_text_file(path: Path, what: str, limit: int = MAX_YAML_BYTES) -> str:
    """The text of a YAML file, read without trusting it: at most `limit` bytes (a longer file, or /dev/zero, is
    refused), UTF-8 without NUL bytes (a binary file is refused); RecipeError naming the file."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as err:
        raise RecipeError(f"cannot read {what} {path}: {err.strerror or err}") from None
    if len(data) > limit:
        raise RecipeError(f"{what} {path} is larger than {limit // 1024} kB; a {what} is a short YAML text")
    try:
        if b"\0" in data:
            raise UnicodeDecodeError("utf-8", data, data.index(b"\0"), data.index(b"\0") + 1, "NUL byte")
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RecipeError(f"{what} {path} is not a text file (byte {err.start}: {err.reason}); a {what} is "
                          "YAML text") from None


def load_recipe(path: str | Path, overrides: Iterable[str] = ()) -> Dict[str, Any]:
    """Load `path` with its bases, apply `--set` style overrides, fill defaults and validate.

    Returns the resolved recipe: a plain dict with `_file_` holding the absolute path of `path`.
    """
    path = Path(path).resolve()
    raw = _load_with_bases(path, chain=(), loaded={})
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
    text = read_text_file(path, "recipe")
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping at the top level, got {type(data).__name__}")
    return data


def _load_with_bases(path: Path, chain: tuple, loaded: Dict[Path, Dict[str, Any]]) -> Dict[str, Any]:
    """`path` merged over its bases; `loaded`: the files this load read already (a base named by many files, or
    many times, is read once)."""
    if path in chain:
        raise RecipeError("recipe inheritance loops: " + " -> ".join(str(p) for p in chain + (path,)))
    if len(chain) >= MAX_BASE_DEPTH:
        raise RecipeError(f"{path}: more than {MAX_BASE_DEPTH} files in one _base_ chain: "
                          + " -> ".join(str(p) for p in chain[:3]) + " -> ...")
    if path in loaded:
        return loaded[path]
    data = _read_yaml(path)
    bases = data.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) and b.strip() for b in bases):
        raise RecipeError(f"{path}: _base_ must be a recipe file or a list of them (paths relative to this file), "
                          f"got {shown(bases)}")
    merged: Dict[str, Any] = {}
    for base in bases:
        base_path = (path.parent / base).resolve()
        if not base_path.is_file():
            raise RecipeError(f"{path}: _base_ file '{shown(base)[1:-1]}' not found (looked at {base_path})")
        merged = merge(merged, _load_with_bases(base_path, chain + (path,), loaded))
    _resolve_paths(data, path.parent)
    loaded[path] = merge(merged, data)
    return loaded[path]


# paths a recipe file gives relative to itself (data roots stay relative to the working directory)
FILE_RELATIVE = (("train", "init_from"), ("train", "init_cfg"), ("data", "split_dir"))


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
        raise RecipeError(f"override {shown(item)} must look like key.path=value")
    key, text = item.split("=", 1)
    key = key.strip()
    try:
        value = parse_yaml(text) if text.strip() else None
    except yaml.YAMLError as err:
        raise RecipeError(f"override {shown(item)}: value is not valid YAML: {err}") from None
    parts = key.split(".")
    _check_path(parts, where=f"--set {shown(key)[1:-1]}")
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
        raise RecipeError(f"--set {shown('.'.join(parts))[1:-1]}: {shown(part)} is not an index of a list of {len(node)}")
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
                raise RecipeError(f"{where}: '{path}' must be a mapping, got {shown(value)}")
            validate(value, where, expected, prefix=f"{path}.")
        elif isinstance(expected, dict) and "type" in expected:
            if not isinstance(value, (dict, str)):
                raise RecipeError(f"{where}: '{path}' must be a component config with a 'type', got {shown(value)}")
        else:
            check_value(path, value, expected, where)


def _unknown(path: str, key: str, schema: Mapping[str, Any], where: str):
    hint = closest(key, [k for k in schema if k != REPLACE_KEY])
    parent = path.rsplit(".", 1)[0] + "." if "." in path else ""
    raise RecipeError(
        f"{where}: unknown key {shown(path)}"
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
