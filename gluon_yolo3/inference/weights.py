"""Finding and reading weights, without running any code: `.params` files, run folders, zoo folders.

    path = find_weights("runs/demo")             # best.params, else the last complete checkpoint
    load_weights(net, path, contexts)            # checked name by name and shape by shape first
    classes, source = weights_classes("runs/demo")

A run folder's checkpoints (written by `engine.checkpoint`) are read here: `last_checkpoint(folder)` is the
newest complete one. A zoo folder (`pack`) is checked against its `SHA256SUMS` before its weights are used.
Files are read with MXNet's NDArray loader only; a pickle is refused.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import mxnet as mx

from ..data.build import split_config
from ..files import sha256
from ..recipe import parse_yaml

EPOCH_FILE = re.compile(r"^epoch_(\d{4,})\.json$")
ZOO_PARAMS, ZOO_SUMS = "model.params", "SHA256SUMS"


class CheckpointError(ValueError):
    """A checkpoint or weights file that cannot be used; the message names the file and why."""


def is_pickle(path) -> bool:
    """Whether a file starts like a pickle of protocol 2 or later (MXNet's `save_states` writes those)."""
    with open(path, "rb") as fh:
        head = fh.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def load_arrays(path) -> Dict[str, mx.nd.NDArray]:
    """The named arrays of an MXNet parameter file (`.params`, `.states`); CheckpointError when the file is
    not one (text, truncated, a pickle, an ONNX file, ...)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if is_pickle(path):
        raise CheckpointError(f"{path} is a Python pickle, not an MXNet parameter file; pickles can run code "
                              "when loaded, so gluon-yolo3 never loads them")
    try:
        arrays = mx.nd.load(str(path))
    except mx.base.MXNetError:
        raise CheckpointError(f"{path} is not a valid MXNet parameter file (truncated or another format)") from None
    if not isinstance(arrays, dict):
        raise CheckpointError(f"{path} holds unnamed arrays, not named parameters (not a Gluon .params file)")
    return arrays


def load_weights(net, path, contexts, what: str = "weights") -> None:
    """Load a `.params` file into `net` on `contexts`, cast to the network's dtype (float16 zoo storage loads
    into float32). CheckpointError naming the file and the first parameter that does not fit, before any is
    changed."""
    arrays = load_arrays(path)
    params = net._collect_params_with_prefix()
    for name, param in params.items():
        if name not in arrays:
            raise CheckpointError(f"{what} {path} do not fit the model: no parameter '{name}' in the file "
                                  f"({len(arrays)} parameters in it, {len(params)} in the network)")
        known = param.shape and all(d > 0 for d in param.shape)
        if known and tuple(arrays[name].shape) != tuple(param.shape):
            raise CheckpointError(f"{what} {path} do not fit the model: parameter '{name}' has shape "
                                  f"{tuple(arrays[name].shape)} in the file, {tuple(param.shape)} in the network")
    extra = sorted(set(arrays) - set(params))
    if extra:
        raise CheckpointError(f"{what} {path} do not fit the model: the file has parameter '{extra[0]}', which "
                              "the network does not")
    for name, param in params.items():
        param._load_init(arrays[name], contexts, cast_dtype=True, dtype_source="current")


def last_checkpoint(folder) -> Optional[Dict[str, Any]]:
    """The metadata of the newest complete checkpoint in a run's `checkpoints/` folder, with absolute paths, or
    None: `last.json` when it points at complete files, else the newest epoch whose JSON and files are all
    there (a run stopped between writing an epoch's JSON and last.json)."""
    folder = Path(folder)
    candidates = [folder / "last.json"] + sorted(
        (p for p in folder.glob("epoch_*.json") if EPOCH_FILE.match(p.name)), reverse=True)
    for path in candidates:
        meta = _read_meta(folder, path)
        if meta is not None:
            return meta
    return None


def _read_meta(folder: Path, path: Path) -> Optional[Dict[str, Any]]:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or "params" not in meta or "states" not in meta:
        return None
    for key in ("params", "states", "train_params"):
        if meta.get(key):
            meta[key] = str(folder / Path(meta[key]).name)
            if not Path(meta[key]).is_file():
                return None
    return meta


def verify_zoo(folder) -> Dict[str, str]:
    """Check every file SHA256SUMS names in a zoo folder; ValueError naming the first that differs."""
    folder = Path(folder)
    checked = {}
    for line in (folder / ZOO_SUMS).read_text().splitlines():
        if not line.strip():
            continue
        digest, name = line.split(maxsplit=1)
        path = folder / name.lstrip("*")
        if not path.is_file():
            raise ValueError(f"{folder / ZOO_SUMS}: lists '{name}', which is missing")
        actual = sha256(path)
        if actual != digest:
            raise ValueError(f"{path}: sha256 {actual} differs from {digest} in {folder / ZOO_SUMS} "
                             "(damaged or replaced file)")
        checked[name] = digest
    return checked


def find_weights(path) -> Path:
    """A `.params` file, a zoo folder (-> its model.params, checked against its SHA256SUMS), or a run
    folder (-> its best, else its last checkpoint)."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir() and (path / ZOO_PARAMS).is_file():
        if (path / ZOO_SUMS).is_file():
            verify_zoo(path)
        return path / ZOO_PARAMS
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        best = folder / "best.params"
        if best.exists():
            return best
        last = last_checkpoint(folder) if folder.name == "checkpoints" else None
        if last:
            return Path(last["params"])
    raise FileNotFoundError(f"no weights at '{path}': give a .params file or a run folder with checkpoints")


def evaluation_weights(path, recipe: Mapping[str, Any], split: str = "val") -> Tuple[Path, str]:
    """`(weights, why)`: what `eval --weights path` scores on the recipe's `split`, and a line saying which and why.

    A run folder's best.params was picked by validating on its recipe's `data.val`; scored on that same data it
    would flatter the run (the best of several tries on the test photos), so the run's last checkpoint is taken
    instead. A file or zoo folder is taken as given."""
    path = Path(path)
    chosen = find_weights(path)
    if path.is_file() or chosen.name != "best.params":
        return chosen, f"weights: {chosen}"
    run_recipe = _run_recipe(chosen.parent.parent)
    picked_on = split_config(run_recipe["data"], "val") if run_recipe else None
    last = last_checkpoint(chosen.parent)
    if picked_on and _same_data(picked_on, split_config(recipe["data"], split)) and last:
        return Path(last["params"]), (f"weights: {last['params']}, the run's last (epoch {last['epoch']}): its "
                                      f"best.params was picked by validating on this same data ({_shown(picked_on)})")
    on = _shown(picked_on) if picked_on else "the run's data.val"
    return chosen, f"weights: {chosen}, the best of the run's validations on {on}"


def _same_data(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two split configs read the same images: a dataset folder's split of the same folder (wherever its
    split was recorded), else the same config."""
    if a.get("type") == b.get("type") == "folder":
        return (a["split"] == b["split"]
                and Path(str(a["root"])).expanduser().resolve() == Path(str(b["root"])).expanduser().resolve())
    return dict(a) == dict(b)


def _run_recipe(folder: Path) -> Optional[Dict[str, Any]]:
    try:
        stored = parse_yaml((folder / "recipe.yaml").read_text())
    except Exception:   # noqa: BLE001 - no readable recipe: nothing is known of how best.params was picked
        return None
    return stored if isinstance(stored, dict) and isinstance(stored.get("data"), dict) else None


def _shown(config: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in config.items() if k != "split_dir")


def weights_folder(weights) -> Path:
    """The run, zoo or import folder that holds `weights` (a folder, a `.params` in it or in its checkpoints/)."""
    path = Path(weights)
    folder = path if path.is_dir() else path.parent
    return folder.parent if folder.name == "checkpoints" else folder


def weights_classes(weights) -> Tuple[Optional[List[str]], Optional[Path]]:
    """`(class list, the file it comes from)` stored beside weights: `data.classes` of the recipe.yaml of their
    run folder, zoo folder or import folder; `(None, None)` when there is none."""
    recipe_file = weights_folder(weights) / "recipe.yaml"
    if not recipe_file.is_file():
        return None, None
    try:
        stored = parse_yaml(recipe_file.read_text()) or {}
    except Exception:   # noqa: BLE001 - an unreadable recipe beside the weights says nothing about classes
        return None, None
    classes = (stored.get("data") or {}).get("classes") if isinstance(stored, dict) else None
    return (list(map(str, classes)), recipe_file) if isinstance(classes, list) and classes else (None, None)
