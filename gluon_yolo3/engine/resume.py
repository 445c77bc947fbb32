"""What a resumed run may change: settings it can honour are listed, a change of what the weights mean is
refused before anything is written.

    changes = recipe_changes(run_dir / "recipe.yaml", recipe)   # [(key, old, new)]
    check_resumable(changes, checkpoint_meta, classes)          # CheckpointError for an architecture change
    restore(trainer)                                            # the trainer at its last checkpoint

A resumed run follows the CURRENT recipe: more epochs, another learning rate or schedule, batch size, data
or loss terms are honoured (the schedule is rebuilt at the checkpoint's epoch). The architecture, the anchors,
the normalisation, the class list and the optimizer type are fixed by the checkpoint.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple

from ..inference.weights import CheckpointError, load_weights
from ..recipe import parse_yaml
from .checkpoint import load_optimizer_states, trainer_names

# keys whose change a resumed run cannot honour: the checkpoint's weights would not mean the same
FIXED_ON_RESUME = ("model.backbone", "model.neck", "model.head", "model.anchors", "model.norm",
                   "train.optimizer.type")

Change = Tuple[str, Any, Any]


def differences(old: Any, new: Any, prefix: str = "") -> List[Change]:
    """`[(dotted key, old value, new value)]` where two resolved recipes differ (lists compared whole)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            out += differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [(prefix[:-1], old, new)]


def recipe_changes(path: Path, recipe: Mapping[str, Any], log=print) -> List[Change]:
    """`[(dotted key, old, new)]` between the run's recipe.yaml at `path` and the current `recipe` (its name and
    a class list the old recipe left open are not changes; the class list is checked against the checkpoint)."""
    if not path.is_file():
        return []
    try:
        old = parse_yaml(path.read_text()) or {}
    except Exception as err:   # noqa: BLE001 - a damaged recipe.yaml: report, compare nothing
        log(f"resume: cannot read {path} ({err}); changed settings are not listed")
        return []
    new = {k: v for k, v in recipe.items() if k != "_file_"}
    return [(key, a, b) for key, a, b in differences(old, new)
            if key != "name" and not (key == "data.classes" and a is None)]


def log_changes(changes: Sequence[Change], meta: Mapping[str, Any], step: int, steps_per_epoch: int, lr: float,
                log=print):
    """Say in the log what changed since the checkpoint, and where the learning-rate schedule continues."""
    for key, old, new in changes:
        log(f"resume: {key} changed from {old!r} to {new!r}")
    if step != int(meta["step"]):
        log(f"resume: {steps_per_epoch} steps per epoch now ({meta['step']} steps in {meta['epoch']} epochs "
            f"before): the schedule continues at step {step}")
    if changes:
        log(f"resume: the learning-rate schedule follows the current recipe from step {step}: lr {lr:.6g} now")


def check_resumable(changes: Sequence[Change], meta: Mapping[str, Any], classes: Optional[Sequence[str]]):
    """CheckpointError when a change cannot be honoured, or when the checkpoint's class list differs."""
    fixed = [c for c in changes if c[0].startswith(FIXED_ON_RESUME)]
    if fixed:
        key, old, new = fixed[0]
        raise CheckpointError(f"--resume: {key} changed from {old!r} to {new!r}; the checkpoint's weights "
                              f"belong to the old value. Resume with the run's own recipe.yaml, or start a new run")
    saved = meta.get("classes")
    if saved is not None and classes is not None and list(saved) != list(classes):
        raise CheckpointError(f"--resume: the checkpoint was trained with classes {list(saved)}, the recipe's "
                              f"data gives {list(classes)}")


def restore(t):
    """Load the trainer `t`'s last checkpoint (weights, optimizer state, EMA) and continue the CURRENT recipe's
    schedule at its epoch, after checking what changed. Every worker of a distributed job reads the checkpoint:
    the run folder must be on storage they share."""
    meta = t.checkpoints.last()
    if meta is None:
        raise FileNotFoundError(f"--resume: no complete checkpoint in {t.checkpoints.folder}"
                                + (f" (worker rank {t.rank}: the run folder must be on storage every "
                                   "worker shares)" if t.rank else ""))
    changes = recipe_changes(t.run_dir / "recipe.yaml", t.recipe, t.log)
    check_resumable(changes, meta, t.classes)
    raw = meta.get("train_params") or meta["params"]
    load_weights(t.net, raw, t.contexts, what="--resume:")
    load_optimizer_states(t.gluon_trainer, trainer_names(t.gluon_trainer, t.net), meta["states"], meta)
    if t.ema is not None:
        if meta.get("train_params"):
            t.ema.load_parameters(meta["params"], updates=meta.get("ema_updates", meta["step"]))
        else:                   # the run had no EMA so far: start it here
            t.ema.reset(updates=0)
    t.epoch = int(meta["epoch"])
    t.step = t.epoch * t.steps_per_epoch    # the schedule's position: the current recipe's
    optimizer = t.gluon_trainer._optimizer
    optimizer.begin_num_update = optimizer.num_update = t.step
    t.best = meta.get("best", -math.inf)
    if t.is_writer:              # half-written files of a process killed while saving
        for stale in t.checkpoints.folder.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
    t.log(f"resumed from {raw} (epoch {meta['epoch']}, step {meta['step']})")
    log_changes(changes, meta, t.step, t.steps_per_epoch, optimizer.learning_rate, t.log)
