"""Learning-rate schedules, registered so that recipes can name them (`train.lr_schedule: {type: ...}`)."""
from __future__ import annotations

import mxnet as mx

from ..registry import LR_SCHEDULES


@LR_SCHEDULES.register("warmup_cosine")
def warmup_cosine(lr: float, steps_per_epoch: int, epochs: int, warmup_epochs: float = 1.0,
                  final_lr: float = 0.0, warmup_begin_lr: float = 0.0, warmup_steps: int | None = None):
    """Linear warm-up from `warmup_begin_lr` over `warmup_epochs` (or `warmup_steps`, which wins: a step budget
    fits datasets of any size), then cosine decay to `final_lr`."""
    total = max(1, int(round(epochs * steps_per_epoch)))
    warmup = min(_warmup(warmup_epochs, warmup_steps, steps_per_epoch), total - 1)
    return mx.lr_scheduler.CosineScheduler(
        max_update=total, base_lr=lr, final_lr=final_lr, warmup_steps=warmup,
        warmup_begin_lr=warmup_begin_lr, warmup_mode="linear")


@LR_SCHEDULES.register("warmup_step")
def warmup_step(lr: float, steps_per_epoch: int, epochs: int, milestones=(0.8, 0.9), factor: float = 0.1,
                warmup_epochs: float = 1.0, warmup_begin_lr: float = 0.0, warmup_steps: int | None = None):
    """Linear warm-up (`warmup_epochs`, or `warmup_steps`), then the LR times `factor` at each milestone
    (fractions of training or epochs)."""
    total = max(1, int(round(epochs * steps_per_epoch)))
    steps = [int(round((m * epochs if m < 1 else m) * steps_per_epoch)) for m in milestones]
    warmup = min(_warmup(warmup_epochs, warmup_steps, steps_per_epoch), max(steps[0] - 1, 0) if steps else total)
    return mx.lr_scheduler.MultiFactorScheduler(
        step=[max(s, warmup + 1) for s in steps], factor=factor, base_lr=lr, warmup_steps=warmup,
        warmup_begin_lr=warmup_begin_lr, warmup_mode="linear")


def _warmup(epochs: float, steps: int | None, steps_per_epoch: int) -> int:
    return int(steps) if steps is not None else int(round(epochs * steps_per_epoch))
