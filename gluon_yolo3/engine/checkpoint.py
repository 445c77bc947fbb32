"""Checkpoints in a run folder, written so that a crash at any moment leaves the last one loadable, and read
without running any code.

    <run>/checkpoints/epoch_0003.params   network weights (Gluon `save_parameters`: MXNet's NDArray format)
    <run>/checkpoints/epoch_0003.states   optimizer state (momentum, ...) as named NDArrays (`nd.save`)
    <run>/checkpoints/epoch_0003.json     {"epoch": 3, "step": 750, "params": ..., "states": ..., "classes": [...],
                                           "optimizer": {"type", "states": {param: layout}}, ...}
    <run>/checkpoints/last.json           a copy of the last complete epoch's JSON
    <run>/checkpoints/best.params         weights of the best validation metric so far

Every file is written to a temporary name in the same folder and renamed over the target; an epoch's JSON is
written after its arrays and `last.json` last, so both only ever point at complete files. Nothing here reads a
pickle: optimizer state files written by MXNet's `Trainer.save_states` (pickles, which can run code when
loaded) are refused with a message. Weights that are not finite are never written. Reading weights and
finding the last complete checkpoint: `inference.weights`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import mxnet as mx
import numpy as np

from ..files import atomic_write, atomic_write_text
from ..inference.weights import CheckpointError, is_pickle, last_checkpoint, load_arrays

STATES_FORMAT = 2          # named NDArrays + a JSON layout (format 1: MXNet's pickled Trainer states)


class NonFiniteWeights(RuntimeError):
    """Weights holding NaN or infinity, which are never written; the message names the first bad tensor."""


def named_arrays(source) -> Dict[str, mx.nd.NDArray]:
    """Structural name -> array of a Gluon block's parameters (first context) or of a `WeightEMA`."""
    if hasattr(source, "shadow"):
        return dict(source.shadow)
    return {name: p.data() for name, p in source._collect_params_with_prefix().items()}


def first_non_finite(arrays: Mapping[str, mx.nd.NDArray]) -> List[str]:
    """Names of the arrays holding NaN or infinity ([] when all are finite: one fused check first)."""
    values = list(arrays.values())
    if not values or mx.nd.multi_all_finite(*values, num_arrays=len(values), init_output=True).asscalar() == 1:
        return []
    return [name for name, a in arrays.items() if not np.isfinite(a.asnumpy()).all()]


def check_finite(source, path) -> None:
    """NonFiniteWeights naming `path` and the first bad tensor when `source`'s weights are not all finite."""
    arrays = named_arrays(source)
    bad = first_non_finite(arrays)
    if bad:
        value = arrays[bad[0]].asnumpy()
        kind = "NaN" if np.isnan(value).any() else "infinity"
        raise NonFiniteWeights(f"refusing to write {path}: parameter '{bad[0]}' holds {kind}"
                               + (f" ({len(bad)} of {len(arrays)} tensors are not finite)" if len(bad) > 1 else "")
                               + "; the weights diverged")


# ---- optimizer state: named arrays + a JSON layout ------------------------------------------------

def _flatten(state, key: str, arrays: Dict[str, mx.nd.NDArray]):
    """The JSON layout of one parameter's optimizer state (None, an array, or nested tuples of them)."""
    if state is None:
        return None
    if isinstance(state, mx.nd.NDArray):
        arrays[key] = state.as_in_context(mx.cpu())
        return key
    if isinstance(state, (list, tuple)):
        return [_flatten(s, f"{key}:{i}", arrays) for i, s in enumerate(state)]
    raise CheckpointError(f"optimizer state of type {type(state).__name__} cannot be saved")


def _unflatten(layout, arrays: Mapping[str, mx.nd.NDArray], ctx, where: str):
    if layout is None:
        return None
    if isinstance(layout, str):
        if layout not in arrays:
            raise CheckpointError(f"{where}: optimizer state '{layout}' is missing")
        return arrays[layout].as_in_context(ctx)
    return tuple(_unflatten(item, arrays, ctx, where) for item in layout)


def save_optimizer_states(trainer, names: Mapping[int, str], path) -> Dict[str, Any]:
    """Write `trainer`'s optimizer state (its first device's copy: every device holds the same) to `path` as
    named NDArrays; returns the JSON layout to keep beside it. `names`: parameter index -> structural name."""
    arrays: Dict[str, mx.nd.NDArray] = {}
    states = trainer._updaters[0].states if trainer._updaters else {}
    layout = {names[index]: _flatten(state, names[index], arrays) for index, state in states.items()}
    atomic_write(path, lambda tmp: mx.nd.save(tmp, arrays))
    return {"type": type(trainer._optimizer).__name__.lower(), "format": STATES_FORMAT, "states": layout}


def load_optimizer_states(trainer, names: Mapping[int, str], path, meta: Mapping[str, Any]):
    """Load the state written by `save_optimizer_states` into every device's updater of `trainer`."""
    path = Path(path)
    optimizer = meta.get("optimizer") or {}
    if is_pickle(path) or optimizer.get("format") != STATES_FORMAT:
        raise CheckpointError(
            f"{path} holds the optimizer state in MXNet's pickle format (an older gluon-yolo3 wrote it); "
            "loading a pickle can run code, so it is refused. The weights beside it "
            f"({Path(meta.get('params', '')).name or 'epoch_NNNN.params'}) are safe to use with --weights.")
    kind = type(trainer._optimizer).__name__.lower()
    if optimizer.get("type") != kind:
        raise CheckpointError(f"{path}: the checkpoint's optimizer is {optimizer.get('type')}, the recipe's is "
                              f"{kind}; their states do not carry over (keep train.optimizer.type)")
    arrays = load_arrays(path)
    layout = optimizer.get("states") or {}
    index_of = {name: index for index, name in names.items()}
    unknown = sorted(set(layout) - set(index_of))
    if unknown:
        raise CheckpointError(f"{path}: optimizer state for '{unknown[0]}', which the network does not have")
    if not trainer._updaters:
        raise CheckpointError("the trainer's updaters are not created yet: load states after its kvstore is set up")
    for updater, ctx in zip(trainer._updaters, trainer._contexts):
        for name, item in layout.items():
            updater.states[index_of[name]] = _unflatten(item, arrays, ctx, str(path))
            updater.states_synced[index_of[name]] = True


# ---- the run folder's checkpoints -------------------------------------------------------------------

class CheckpointManager:
    """Save and find checkpoints of one run folder."""

    def __init__(self, run_dir: Path, keep: int = 2):
        self.folder = Path(run_dir) / "checkpoints"
        self.keep = max(1, int(keep))

    def save(self, net, trainer, epoch: int, step: int, extra: Optional[Dict[str, Any]] = None, *,
             names: Mapping[int, str]) -> Path:
        """Write `epoch_NNNN.params` (from `net`: a block or a WeightEMA), `.states` (the optimizer state of the
        Gluon `trainer`; `names`: its parameter index -> structural name), `.json`, then last.json."""
        # A hybridized static graph updates BatchNorm statistics outside the reads save_parameters
        # waits for: without this, a checkpoint can hold statistics from before the last steps.
        mx.nd.waitall()
        stem = f"epoch_{epoch:04d}"
        params = self.folder / f"{stem}.params"
        states = self.folder / f"{stem}.states"
        check_finite(net, params)
        atomic_write(params, net.save_parameters)
        optimizer = save_optimizer_states(trainer, names, states)
        meta = {"epoch": epoch, "step": step, "params": params.name, "states": states.name, **(extra or {}),
                "optimizer": optimizer}
        text = json.dumps(meta, indent=1)
        atomic_write_text(self.folder / f"{stem}.json", text)
        atomic_write_text(self.folder / "last.json", text)
        self._prune(keep_stem=stem)
        return params

    def save_best(self, net):
        mx.nd.waitall()
        path = self.folder / "best.params"
        check_finite(net, path)
        atomic_write(path, net.save_parameters)

    def last(self) -> Optional[Dict[str, Any]]:
        """The metadata of the last complete checkpoint, with absolute paths, or None (`last_checkpoint`)."""
        return last_checkpoint(self.folder)

    def _prune(self, keep_stem: str):
        stems = sorted({p.stem for p in self.folder.glob("epoch_*.params")})
        for stem in stems[:-self.keep]:
            if stem == keep_stem:
                continue
            for suffix in (".params", ".states", ".json", ".train_params"):
                (self.folder / f"{stem}{suffix}").unlink(missing_ok=True)


def trainer_names(trainer, net) -> Dict[int, str]:
    """Trainer parameter index -> the parameter's structural name in `net` (as in its .params files)."""
    structural = {id(p): name for name, p in net._collect_params_with_prefix().items()}
    return {i: structural.get(id(p), p.name) for i, p in enumerate(trainer._params)}


