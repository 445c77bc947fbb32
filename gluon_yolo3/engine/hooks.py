"""Training hooks, in the style of Detectron2's: the trainer runs the loop, hooks do everything around it.

    @HOOKS.register("my_hook")
    class MyHook(HookBase):
        priority = 50                      # lower runs first; built-ins: see the table
        def after_epoch(self):
            if self.trainer.last_val is not None: ...
            self.trainer.request_stop("why")  # training ends after this epoch

A recipe adds hooks with `train.hooks: [{type: my_hook, ...}]` (a plugin registers the class); the built-ins
are made from the `train.*` keys and always present:

| priority | hook                | when          | does                                                      |
| -------- | ------------------- | ------------- | --------------------------------------------------------- |
| 5        | freeze              | before/after  | `train.freeze`: modules not updated for N epochs          |
| 10       | metrics_writer      | after_step    | a "train" line in metrics.jsonl every `train.log_every`   |
| 20       | validation          | after_epoch   | validation every `train.val_every` epochs, best.params    |
| 50       | (recipe hooks)      |               | default priority of a hook                                |
| 80       | periodic_checkpoint | after_epoch   | a checkpoint every `train.checkpoint_every` epochs        |
| 90       | training_plot       | after_epoch   | training.png                                              |
| 95       | prediction_previews | after_train   | predictions/ with a few validation images drawn           |

What a hook can read from `self.trainer`: `epoch` (epochs done), `epochs`, `step`, `last_terms` (the loss terms
of the last step, summed over its `last_images` images), `loss_names`, `best` and `last_val` (the last
validation result), `net`, `ema`, `recipe`, `classes`, `val_set`, `run_dir`, `is_writer`, and the helpers
`write_metrics(line)`, `log(text)`, `request_stop(why)`. In a distributed job only rank 0 runs hooks whose
`writer_only` is true (all the built-ins but the metrics writer's accumulation).
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any, Dict, Optional, Sequence

import mxnet as mx
import numpy as np
from mxnet.gluon import nn

from ..evaluation.plots import plot_training
from ..evaluation.runner import evaluate
from ..evaluation.tables import format_table
from ..files import atomic_write, cannot_write
from ..inference.predictor import Predictor
from ..registry import HOOKS
from .checkpoint import check_finite, trainer_names


class HookBase:
    """Base of every hook; `trainer` is set when the trainer takes the hook. Lower `priority` runs first."""

    trainer = None
    priority = 50
    writer_only = False         # run only on the process that writes the run folder (rank 0)

    def before_train(self):
        pass

    def after_step(self):
        pass

    def after_epoch(self):
        pass

    def after_train(self):
        pass


@HOOKS.register("freeze")
class Freeze(HookBase):
    """`train.freeze`: the named modules (`backbone`, `neck`, `head`, or any parameter-name prefix such as
    `backbone.body16`) are not updated for the first `epochs` epochs (0: the whole run); with `norm` (the
    default) their BatchNorm layers also normalise with their running statistics and leave them unchanged."""

    priority = 5

    def __init__(self, modules: Sequence[str] = ("backbone",), epochs: int = 0, norm: bool = True):
        self.prefixes = tuple(str(m) for m in modules)
        self.epochs, self.norm = int(epochs), bool(norm)
        self.frozen, self.lr_mult = False, {}

    def before_train(self):
        if not self.epochs or self.trainer.epoch < self.epochs:
            self.set(True)

    def after_epoch(self):
        if self.frozen and self.epochs and self.trainer.epoch >= self.epochs:
            self.set(False)
            self.trainer.log(f"freeze: {', '.join(self.prefixes)} train again from epoch {self.trainer.epoch + 1}")

    def set(self, frozen: bool):
        """Freeze (lr_mult 0: the optimizer reads it at every update) or thaw the modules' parameters, and
        switch their BatchNorm layers between running and batch statistics (the graph is traced again)."""
        t = self.trainer
        params = {n: p for n, p in t.net._collect_params_with_prefix().items() if n.startswith(self.prefixes)}
        if not params:
            raise ValueError(f"train.freeze.modules {list(self.prefixes)}: no parameter of the network starts "
                             "with these (use backbone, neck, head or a longer parameter-name prefix)")
        for name, param in params.items():
            if frozen:
                self.lr_mult[name] = param.lr_mult
            param.lr_mult = 0.0 if frozen else self.lr_mult.get(name, 1.0)
        if self.norm:
            for _, block in named_blocks(t.net):
                if isinstance(block, nn.BatchNorm) and any(block_owns(block, p) for p in params.values()):
                    block._kwargs["use_global_stats"] = frozen
            t.net._clear_cached_op()
        self.frozen = frozen


def named_blocks(block, prefix: str = ""):
    """`(structural name, block)` of `block` and every block below it."""
    yield prefix, block
    for name, child in block._children.items():
        yield from named_blocks(child, f"{prefix}.{name}" if prefix else name)


def block_owns(block, param) -> bool:
    """Whether `param` is one of `block`'s own parameters."""
    return any(p is param for p in block._reg_params.values())


@HOOKS.register("metrics_writer")
class MetricsWriter(HookBase):
    """A "train" line in metrics.jsonl every `every` steps and at each epoch's end: lr, the mean of every loss
    term per image, images per second, and the gradient norm before clipping (with train.clip_grad_norm)."""

    priority = 10

    def __init__(self, every: int = 10):
        self.every = max(1, int(every))
        self.sums: Optional[np.ndarray] = None
        self.images, self.started = 0, time.time()

    def after_step(self):
        t = self.trainer
        if self.sums is None:
            self.sums = np.zeros(len(t.loss_names))
        self.sums += t.last_terms
        self.images += t.last_images
        if t.step % self.every and t.step % t.steps_per_epoch:
            return
        means = self.sums / max(self.images, 1)
        line: Dict[str, Any] = {"kind": "train", "epoch": t.epoch + 1, "step": t.step, "lr": t.learning_rate,
                                "loss": float(means.sum()),
                                **{f"loss/{n}": float(v) for n, v in zip(t.loss_names, means)},
                                "img_per_s": round(self.images / max(time.time() - self.started, 1e-9), 2)}
        if t.grad_norm is not None:
            line["grad_norm"] = t.grad_norm      # before clipping, last step
        t.write_metrics(line)
        if t.bar is not None:
            t.bar.set_postfix({n: f"{v:.3f}" for n, v in zip(t.loss_names, means)}, refresh=False)
        self.sums[:] = 0
        self.images, self.started = 0, time.time()


@HOOKS.register("validation")
class Validation(HookBase):
    """Validation every `every` epochs and after the last (with the EMA weights when `train.ema` is on): a
    "val" line, the per-class table in the log, and `best.params` whenever the metric improves."""

    priority = 20
    writer_only = True

    def __init__(self, every: int = 1):
        self.every = int(every)

    def after_epoch(self):
        t = self.trainer
        if not self.every or (t.epoch % self.every and t.epoch != t.epochs and not t.stop_requested):
            return
        t.last_val = self.validate()
        if t.last_val["map"] > t.best:
            t.best = t.last_val["map"]
            t.checkpoints.save_best(t.ema if t.ema is not None else t.net)

    def validate(self) -> Dict[str, Any]:
        """Evaluate on the validation set (with the EMA weights when `train.ema` is on); log and record it."""
        t = self.trainer
        mx.nd.waitall()   # let the last steps' BatchNorm statistics land before the inference graph reads them
        with (t.ema.swapped_in() if t.ema is not None else nullcontext()):
            result, _ = evaluate(t.net, t.val_set, t.recipe, t.spec, t.contexts, progress=t.progress)
        t.log(f"epoch {t.epoch}: validation {result['metric']} mAP {result['map']:.4f}\n" + format_table(result))
        t.write_metrics({"kind": "val", "epoch": t.epoch, "step": t.step, "metric": result["metric"],
                         "map": float(result["map"]),
                         "per_class": {k: (None if v is None or np.isnan(v) else float(v))
                                       for k, v in result["per_class"].items()}})
        return result


@HOOKS.register("periodic_checkpoint")
class PeriodicCheckpoint(HookBase):
    """A checkpoint every `every` epochs, after the last epoch, and when training is asked to stop."""

    priority = 80
    writer_only = True
    writes_checkpoints = True           # when it fails, the trainer does not try again to save the epoch

    def __init__(self, every: int = 1):
        self.every = max(1, int(every))

    def after_epoch(self):
        t = self.trainer
        if t.epoch % self.every == 0 or t.epoch == t.epochs or t.stop_requested:
            self.save()

    def save(self):
        save_checkpoint(self.trainer)


def save_checkpoint(t):
    """The trainer `t`'s checkpoint of its epoch: `epoch_NNNN.params` (the EMA weights with an EMA, else the
    training weights), `.states`, `.json`, and with an EMA the training weights in `epoch_NNNN.train_params`;
    `last.json` is written last. Returns the `.params` path."""
    extra: Dict[str, Any] = {"best": t.best, "classes": list(t.classes)}
    if t.ema is not None:
        mx.nd.waitall()
        raw = t.checkpoints.folder / f"epoch_{t.epoch:04d}.train_params"
        check_finite(t.net, raw)
        atomic_write(raw, t.net.save_parameters)
        extra.update(train_params=raw.name, ema_updates=t.ema.updates)
    return t.checkpoints.save(t.ema if t.ema is not None else t.net, t.gluon_trainer, t.epoch, t.step, extra,
                              names=trainer_names(t.gluon_trainer, t.net))


def save_before_stopping(t, why: str):
    """The trainer `t`'s checkpoint of its epoch, unless it is written already, when a hook failed after the
    epoch; logged either way (the hook's error, raised after, is the one that counts)."""
    last = t.checkpoints.last()
    if last is not None and int(last["epoch"]) == t.epoch:
        return
    try:
        path = save_checkpoint(t)
    except Exception as err:       # noqa: BLE001
        t.log(f"{why}; the checkpoint of epoch {t.epoch} could not be written either: {err}")
        return
    t.log(f"{why}; epoch {t.epoch}'s checkpoint is written first: {path} (resume with --resume)")


@HOOKS.register("training_plot")
class TrainingPlot(HookBase):
    """training.png (loss terms, learning rate, validation metric), redrawn after every epoch."""

    priority = 90
    writer_only = True

    def after_epoch(self):
        t = self.trainer
        if not t.metrics_path.exists():
            return
        try:
            plot_training(t.metrics_path, t.run_dir / "training.png")
        except OSError as err:
            raise cannot_write(t.run_dir / "training.png", err) from None


@HOOKS.register("prediction_previews")
class PredictionPreviews(HookBase):
    """After training, `count` validation images with their detections (and ground truth) in predictions/."""

    priority = 95
    writer_only = True

    def __init__(self, count: int = 6):
        self.count = int(count)

    def after_train(self):
        t = self.trainer
        folder = t.run_dir / "predictions"
        folder.mkdir(exist_ok=True)
        predictor = Predictor(t.spec, t.net, t.contexts[:1], t.recipe["predict"]["score_thresh"])
        with (t.ema.swapped_in() if t.ema is not None else nullcontext()):
            for i in range(min(self.count, len(t.val_set))):
                image, label = t.val_set[i]
                zoom = -(-320 // min(image.shape[:2]))   # previews at least 320 px: readable labels
                predictor.draw(image, folder / f"{t.val_set.image_id(i)}.jpg", gt=label, zoom=zoom)


def builtin_hooks(train_cfg, epochs: int) -> list:
    """The built-in hooks a recipe's `train` section asks for (`auto` intervals: about ten over `epochs`)."""
    hooks = [MetricsWriter(train_cfg["log_every"]), Validation(every(train_cfg["val_every"], epochs)),
             PeriodicCheckpoint(every(train_cfg["checkpoint_every"], epochs)), TrainingPlot(), PredictionPreviews()]
    if train_cfg.get("freeze"):
        hooks.insert(0, Freeze(**train_cfg["freeze"]))
    return hooks


def every(value, epochs: int) -> int:
    """An interval in epochs: the value, or for `auto` about a tenth of the run (at least 1)."""
    return max(1, round(epochs / 10)) if value == "auto" else int(value)
