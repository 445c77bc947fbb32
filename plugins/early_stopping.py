"""An example training hook: stop when the validation metric has stopped improving.

A hook is any class registered in `HOOKS` that subclasses `HookBase` (gluon_yolo3/engine/hooks.py); copy this
file to start your own. Use it from a recipe:

    plugins: [../plugins/early_stopping.py]      # relative to the recipe
    train:
      val_every: 1
      hooks:
        - {type: early_stopping, patience: 5, min_delta: 0.001}

Training then ends after the epoch whose validation is the `patience`-th in a row without a gain of more
than `min_delta` over the best so far; that epoch is checkpointed like the last one, and the summary says why
it stopped. (The count starts afresh when a run is resumed.)
"""
from __future__ import annotations

import math

from gluon_yolo3.engine.hooks import HookBase
from gluon_yolo3.registry import HOOKS


@HOOKS.register("early_stopping")
class EarlyStopping(HookBase):
    """Stop training when the validation mAP has not improved by more than `min_delta` for `patience`
    validations in a row."""

    priority = 30           # after the validation hook (20), before the checkpoint hook (80)
    writer_only = True      # validation runs where the run folder is written (rank 0 of a distributed job)

    def __init__(self, patience: int = 5, min_delta: float = 0.0):
        if int(patience) < 1 or float(min_delta) < 0:
            raise ValueError(f"early_stopping: patience must be >= 1 and min_delta >= 0, got {patience}, "
                             f"{min_delta}")
        self.patience, self.min_delta = int(patience), float(min_delta)
        self.best, self.stale, self.seen = -math.inf, 0, None

    def after_epoch(self):
        result = self.trainer.last_val
        if result is None or result is self.seen:     # no validation in this epoch
            return
        self.seen = result
        if result["map"] - self.best > self.min_delta:
            self.best, self.stale = result["map"], 0
            return
        self.stale += 1
        if self.stale >= self.patience:
            self.trainer.request_stop(f"early stopping: validation {result['metric']} mAP {result['map']:.4f} has "
                                      f"not beaten {self.best:.4f} by more than {self.min_delta:g} for "
                                      f"{self.stale} validation(s)")
