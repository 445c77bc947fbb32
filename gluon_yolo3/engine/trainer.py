"""Data-parallel training of a recipe's detector over devices and machines through a kvstore.

    summary = Trainer(recipe, run_dir).fit()          # or .fit(resume=True)

The trainer runs the loop (epochs of synchronous steps) and nothing around it: validation, checkpoints,
metrics lines, the training plot and prediction previews are hooks (`hooks.py`), and a recipe's
`train.hooks` adds a plugin's. `setup()` calls one named builder per piece (`builders.py`).

Exactness: every device's loss is divided by the GLOBAL batch (`train.batch_size` per worker, split over
its devices, times the number of workers), the kvstore sums the gradients of all devices and workers,
and every copy of the weights applies the same update (`update_on_kvstore=False`): one step on N devices
and W workers equals one step of one device on the union of their batches. In a `dist_sync` job each
worker reads its own shard of the data, every worker starts from rank 0's weights, and only rank 0
writes the run folder.

Safety: a step whose loss is not finite, or whose summed gradients are not, is not applied and stops
training, naming the term or the tensor and the last good checkpoint; weights that are not finite are never
written. With `train.ema`, checkpoints' `.params` and `best.params` hold the averaged weights (what users
evaluate); the raw training weights sit beside them in `epoch_NNNN.train_params` for an exact resume.
"""
from __future__ import annotations

import copy
import json
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon
from mxnet.contrib import amp
from tqdm import tqdm

from ..data.feed import InputSpec
from ..data.pipeline import trim_padding
from ..devices import parse_devices, split_batch
from ..distributed import kvstore as dist
from ..files import atomic_write_text, cannot_write
from ..models.precision import set_compute_dtype
from ..optim.gradients import clip, sums_of_squares
from ..recipe import resolved_yaml
from .builders import (amp_type, build_batches, build_hooks, build_loss, build_model, build_optimizer, build_run_data,
                       epochs_for, no_bias_decay, record_splits, resolve_anchors, seed_everything)
from .checkpoint import CheckpointManager
from .ema import WeightEMA, ema_config
from .hooks import save_before_stopping
from .resume import restore
from .run_folder import hold_run_folder
from .warm_start import start_from


class NonFiniteLoss(RuntimeError):
    """Training stopped because a loss term (or, with a finite loss, a gradient) became NaN or infinite."""


class NonFiniteGradient(NonFiniteLoss):
    """A step whose loss was finite but whose summed gradients were not; it was not applied. `names`: the
    parameters whose gradient holds NaN or infinity."""

    def __init__(self, message: str, names: List[str] = ()):
        super().__init__(message)
        self.names = list(names)


class Trainer:
    """`Trainer(recipe, run_dir).fit()` trains one run; its hooks validate, checkpoint, log and draw."""

    def __init__(self, recipe: Mapping[str, Any], run_dir: Path, devices=None, kvstore: Optional[str] = None,
                 progress: bool = True, log: Callable[[str], None] = print):
        self.recipe = copy.deepcopy(dict(recipe))    # gets the run's class list, written into recipe.yaml
        self.run_dir = Path(run_dir)
        self.train_cfg = self.recipe["train"]
        self.contexts = parse_devices(devices or self.train_cfg["devices"])
        self.kvstore = kvstore or self.train_cfg["kvstore"]
        self.progress = progress
        self.log = log
        self.batch_size = int(self.train_cfg["batch_size"])      # per worker, split over its devices
        if self.batch_size % len(self.contexts):
            raise ValueError(f"train.batch_size {self.batch_size} must be divisible by the number of "
                             f"devices ({len(self.contexts)})")
        dist.check_kvstore(self.kvstore)
        self.distributed = dist.is_distributed(self.kvstore)
        self.amp = amp_type(self.train_cfg.get("amp"), self.contexts, self.log)
        self.ema_cfg = ema_config(self.train_cfg.get("ema"))
        self.clip_grad_norm = float(self.train_cfg.get("clip_grad_norm") or 0.0)
        if self.clip_grad_norm < 0:
            raise ValueError(f"train.clip_grad_norm must be >= 0 (0 = off), got {self.clip_grad_norm}")
        norm = (recipe["model"].get("norm") or {}).get("type", "batchnorm")
        if norm == "syncbn" and len(self.contexts) > 1 and any(c.device_type == "cpu" for c in self.contexts):
            raise ValueError("model.norm.type syncbn on several CPU contexts deadlocks in MXNet 1.9.1 (seen "
                             "here on cpu:0,cpu:1); use model.norm.type frozen (exact) or batchnorm")
        self.rank, self.num_workers = 0, 1
        self.global_batch = self.batch_size
        self.checkpoints = CheckpointManager(self.run_dir, self.train_cfg["keep_checkpoints"])
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.kv = self.worker_sum = self.watchdog = None
        self.ema: Optional[WeightEMA] = None
        self.grad_norm = None
        # the loop's state, read by hooks
        self.epochs = int(self.train_cfg["epochs"])
        self.epoch, self.step, self.best = 0, 0, -math.inf
        self.last_val: Optional[Dict[str, Any]] = None
        self.last_terms, self.last_images, self.bar = None, 0, None
        self.stop_requested: Optional[str] = None
        self.hooks: list = []
        self.resuming, self.init_report, self.dry_run = False, None, False

    @property
    def is_writer(self) -> bool:
        """Whether this process writes the run folder (rank 0 of a distributed job, or the only one)."""
        return self.rank == 0

    @property
    def learning_rate(self) -> float:
        return float(self.gluon_trainer.learning_rate)

    def _guard(self, what: str):
        """The watchdog's guard in a distributed job, else nothing."""
        return nullcontext() if self.watchdog is None else self.watchdog.guard(what)

    # ---- set-up: one named builder per piece -------------------------------------------------------
    def setup(self):
        self.join_job()
        if self.amp == "float16":
            amp.init(target_dtype="float16")   # GPUs: MXNet's AMP, before the network is built
        seed_everything(int(self.train_cfg["seed"]))
        self.build_data()
        self.build_model()
        self.build_optimizer()
        self.register_hooks(build_hooks(self.train_cfg, self.epochs))

    def check(self):
        """Build what `fit` builds (datasets, anchors, network, loss, transforms and batches, optimizer, hooks) with
        the same builders, without joining a job, loading train.init_from, starting DataLoader workers or writing:
        `data check` runs it, so that what training would refuse it refuses too."""
        self.dry_run = True
        self.setup()

    def join_job(self):
        """In a distributed job: the kvstore (waits for every process), rank and worker count, the watchdog."""
        if not self.distributed or self.kv is not None or self.dry_run:
            return
        timeout = float(self.train_cfg.get("dist_timeout") or 0)
        if timeout > 0:
            self.watchdog = dist.Watchdog(timeout)
        with self._guard("joining the distributed job"):
            self.kv = dist.create_kvstore(self.kvstore)
        self.rank, self.num_workers = int(self.kv.rank), int(self.kv.num_workers)
        self.global_batch = self.batch_size * self.num_workers
        if self.rank != 0:          # rank 0 reports for the job
            self.progress = False
            self.log = lambda *_: None

    def build_data(self):
        """The datasets with the run's one class list (written into the recipe), their problems logged, and a drawn
        split recorded in the run (named in its recipe.yaml, relative to it)."""
        sets = build_run_data(self.recipe, self.run_dir, self.resuming, self.log)
        self.train_set, self.val_set = sets["train"], sets["val"]
        self.classes = list(self.train_set.classes)
        self.recipe["data"]["classes"] = list(self.classes)
        self.spec = InputSpec.from_recipe(self.recipe, self.classes)
        self.epochs = epochs_for(self.train_cfg, len(self.train_set), self.batch_size, self.num_workers, self.log)
        self.anchor_fit = resolve_anchors(self.recipe, self.train_set, self.log)
        if self.is_writer and not self.dry_run and record_splits(sets, self.run_dir):
            self.recipe["data"]["split_dir"] = "splits"

    def build_model(self):
        """The network and the loss on every device, hybridized, and the training batches for its anchors."""
        self.net = build_model(self.recipe, self.classes, self.contexts)
        if self.train_cfg.get("init_from") and not self.resuming and not self.dry_run:
            self.init_report = start_from(self.recipe, self.net, self.classes, self.run_dir, self.log, self.is_writer)
        self.loss_fn = build_loss(self.recipe, self.net)
        self.loss_fn.initialize(ctx=self.contexts)
        self.loss_names = list(self.loss_fn.names)
        if self.amp == "bfloat16":          # convolutions in bfloat16, weights and the rest in float32
            set_compute_dtype(self.net, "bfloat16")
        if self.train_cfg["hybridize"]:
            self.net.hybridize(static_alloc=True, static_shape=True)
            self.loss_fn.hybridize(static_alloc=True, static_shape=True)
        samples, self.sampler, batches = build_batches(self.recipe, self.train_set, self.net, len(self.classes),
                                                       self.batch_size, self.rank, self.num_workers)
        self.loader = gluon.data.DataLoader(samples, batch_sampler=batches, num_workers=0 if self.dry_run else
                                            int(self.recipe["data"]["num_workers"]))
        self.steps_per_epoch = len(batches)

    def build_optimizer(self):
        """The optimizer and schedule, Gluon's Trainer over the kvstore, rank 0's weights shared, the EMA.

        update_on_kvstore=False: the kvstore only sums gradients; every device (and worker) applies the same
        update itself, which lets us check and clip the summed gradient, keep an EMA, and save the optimizer
        state on rank 0 in a distributed job."""
        params = self.net.collect_params()
        if self.train_cfg["no_bias_decay"]:
            no_bias_decay(params)
        self.trainable = [p for p in params.values() if p.grad_req != "null"]
        structural = {id(p): name for name, p in self.net._collect_params_with_prefix().items()}
        self.trainable_names = [structural.get(id(p), p.name) for p in self.trainable]
        self.gluon_trainer = gluon.Trainer(params, build_optimizer(self.train_cfg, self.steps_per_epoch),
                                           kvstore=self.kv or self.kvstore, update_on_kvstore=False)
        if self.amp == "float16":
            amp.init_trainer(self.gluon_trainer)
        if self.distributed and not self.dry_run:
            with self._guard("sharing rank 0's initial weights"):
                dist.broadcast_initial_weights(self.gluon_trainer)
                # the loss terms of all workers, summed: every worker takes the same non-finite decision
                self.worker_sum = dist.WorkerSum(self.kv, key=len(self.gluon_trainer._params),
                                                 size=len(self.loss_names) + 1)
        if self.ema_cfg:
            self.ema = WeightEMA(self.net, **self.ema_cfg)

    def register_hooks(self, hooks):
        """Take `hooks` (run in the given order); in a distributed job, writer-only hooks only on rank 0."""
        self.hooks = [h for h in hooks if self.is_writer or not h.writer_only]
        for hook in self.hooks:
            hook.trainer = self

    # ---- the loop ------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> Dict[str, Any]:
        """Train (or, with `resume`, continue) the run; the run folder is this process's alone meanwhile (rank 0
        of a distributed job holds its lock, the other workers never write it)."""
        self.resuming = resume                  # a resumed run loads its checkpoint, not train.init_from
        self.join_job()
        lock = hold_run_folder(self.run_dir, resume, self.log) if self.is_writer else None
        try:
            return self.train_run(resume)
        finally:
            if lock is not None:
                lock.release(remove_alone=True)

    def train_run(self, resume: bool) -> Dict[str, Any]:
        self.setup()
        if resume:              # the checkpoint is checked against the recipe before anything is written
            self.resume()
        if self.is_writer:
            atomic_write_text(self.run_dir / "recipe.yaml", resolved_yaml(self.recipe))
        started = time.time()
        self.run_hooks("before_train")
        while self.epoch < self.epochs and not self.stop_requested:
            self.train_epoch()
            self.epoch += 1
            self.run_hooks("after_epoch")
            self.stop_requested = self.agreed_stop()
        if self.stop_requested:
            self.log(f"stopped after epoch {self.epoch}: {self.stop_requested}")
        self.run_hooks("after_train")
        summary = {"run_dir": str(self.run_dir), "epochs": self.epochs, "steps": self.step,
                   "train_seconds": round(time.time() - started, 1), "best_map": self.best, "final": self.last_val}
        if self.stop_requested:
            summary["stopped"] = self.stop_requested
        if self.distributed:
            summary.update(rank=self.rank, workers=self.num_workers, global_batch=self.global_batch)
            self.leave_job()
        return summary

    def run_hooks(self, stage: str):
        """Each hook's `stage`; when one fails after an epoch (validation on a file gone bad, a plugin's bug), the
        epoch's checkpoint is written before the error ends the run: a failing hook never loses the weights."""
        for hook in self.hooks:
            try:
                getattr(hook, stage)()
            except Exception as err:
                if stage == "after_epoch" and self.is_writer and not getattr(hook, "writes_checkpoints", False):
                    save_before_stopping(self, f"{type(hook).__name__} failed: {type(err).__name__}")
                raise

    def request_stop(self, why: str):
        """End training after the current epoch (its checkpoint is written); `why` goes into the log."""
        self.stop_requested = why

    def agreed_stop(self) -> Optional[str]:
        """The stop request, shared by every worker of a distributed job (rank 0's hooks may decide it)."""
        if self.worker_sum is None:
            return self.stop_requested
        with self._guard("rank 0's validation and checkpoint"):
            asked = self.worker_sum(np.r_[np.zeros(len(self.loss_names)), float(bool(self.stop_requested))])[-1]
        return self.stop_requested or ("a worker asked to stop" if asked else None)

    def leave_job(self):
        """End this worker's part of the distributed job now (waits for the others to end theirs)."""
        with self._guard("the other workers finishing"):
            dist.release_kvstore(self.gluon_trainer)
            self.kv = self.worker_sum = None      # the last references: the kvstore ends here

    def train_epoch(self):
        self.sampler.set_epoch(self.epoch)
        self.bar = tqdm(self.loader, total=self.steps_per_epoch, desc=f"epoch {self.epoch + 1}/{self.epochs}",
                        disable=not self.progress, unit="batch", dynamic_ncols=True)
        for x, target, gt_boxes in self.bar:
            where = f"epoch {self.epoch + 1}, step {self.step + 1}"
            try:
                with self._guard(f"step {self.step + 1} (epoch {self.epoch + 1})"):
                    terms = self.train_step(x, target, gt_boxes)        # (K,) summed over the global batch
            except NonFiniteGradient as err:
                self.stop(f"{err} at {where}, although the loss was finite; this step was not applied.", err)
            self.step += 1
            if not np.all(np.isfinite(terms)):
                bad = [(n, v) for n, v in zip(self.loss_names, terms) if not np.isfinite(v)]
                self.stop(f"loss term(s) {', '.join(repr(n) for n, _ in bad)} became "
                          f"{', '.join(str(v) for _, v in bad)} at {where}; this step was not applied.")
            self.last_terms, self.last_images = terms, x.shape[0] * self.num_workers
            self.run_hooks("after_step")
        self.bar = None

    def train_step(self, x, target, gt_boxes) -> np.ndarray:
        """One synchronous step over all devices (and workers); returns the per-term loss sums (K,) over
        the global batch, before the update.

        A step whose loss is not finite (on any worker) is not applied (the caller stops training), nor is
        one whose summed gradients are not finite (NonFiniteGradient naming the tensors).
        """
        terms = self.compute_gradients(x, target, gt_boxes)
        if self.worker_sum is not None:
            terms = self.worker_sum(np.r_[terms, 0.0])[:-1]
        if np.all(np.isfinite(terms)):
            self.apply_gradients()
        return terms

    def compute_gradients(self, x, target, gt_boxes) -> np.ndarray:
        """Forward and backward on every device; returns the per-term loss sums (K,) of the batch.

        Each device's loss is divided by the GLOBAL batch size (all devices of all workers), so that the
        kvstore's sum of the gradients is the gradient of the mean loss over the global batch; the update
        then uses a rescale of 1. `gt_boxes` loses the padding columns no image of the batch needs.
        """
        xs, ts, gs = (split_batch(a, self.contexts) for a in (x, target, trim_padding(gt_boxes)))
        with autograd.record():
            per_device = [self.loss_fn(t, g, *self.net(xd)) for xd, t, g in zip(xs, ts, gs)]
            totals = [loss.sum() / self.global_batch for loss in per_device]
        if self.amp == "float16":
            with amp.scale_loss(totals, self.gluon_trainer) as scaled:
                autograd.backward(scaled)
        else:
            autograd.backward(totals)
        terms = sum(loss.sum(axis=0).as_in_context(mx.cpu()) for loss in per_device)
        return terms.asnumpy().astype(np.float64)

    def apply_gradients(self):
        """Sum the gradients over devices and workers, check they are finite, clip their global norm, update,
        fold into the EMA."""
        self.gluon_trainer.allreduce_grads()
        if self.amp == "float16":       # MXNet AMP's loss scaler skips overflowing steps itself
            if self.clip_grad_norm > 0:
                amp.unscale(self.gluon_trainer)
                norms = [gluon.utils.clip_global_norm([p.grad(ctx) for p in self.trainable], self.clip_grad_norm,
                                                      check_isfinite=False) for ctx in self.contexts]
                self.grad_norm = float(norms[0].asscalar())
        else:
            norm = self.check_gradients()
            if self.clip_grad_norm > 0:
                self.grad_norm = norm
                # after the allreduce every device holds the whole summed gradient: scale each copy alike
                clip((p.grad(ctx) for ctx in self.contexts for p in self.trainable), norm, self.clip_grad_norm)
        self.gluon_trainer.update(1)
        if self.ema is not None:
            self.ema.update()

    def check_gradients(self) -> float:
        """The global norm of the summed gradient; NonFiniteGradient naming the tensors that hold NaN or infinity
        (every device and worker holds the same sum, so all decide alike)."""
        norm, squares = sums_of_squares([p.grad(self.contexts[0]) for p in self.trainable])
        if np.isfinite(norm):
            return norm
        bad = [n for n, sq in zip(self.trainable_names, squares) if not np.isfinite(sq)]
        raise NonFiniteGradient(f"the summed gradient of '{bad[0]}' holds NaN or infinity"
                                + (f" ({len(bad)} of {len(squares)} tensors)" if len(bad) > 1 else ""), bad)

    def stop(self, what: str, cause: Optional[NonFiniteGradient] = None):
        """Stop training on a non-finite loss or gradient: log it in metrics.jsonl, raise NonFiniteLoss naming
        the last good checkpoint."""
        last = self.checkpoints.last()
        message = (what + " "
                   + (f"Last good checkpoint: {last['params']} (resume with --resume). " if last else
                      "No checkpoint was written yet. ")
                   + "Usual causes: a learning rate too high for training from scratch (lower train.lr), "
                     "no or too short warm-up (train.lr_schedule.warmup_epochs), or wild box targets "
                     "(check the data with broken or tiny boxes).")
        self.write_metrics({"kind": "error", "epoch": self.epoch + 1, "step": self.step + (cause is not None),
                            "message": message})
        if cause is not None:
            raise NonFiniteGradient(message, cause.names) from None
        raise NonFiniteLoss(message)

    # ---- resume and metrics ------------------------------------------------------------------------
    def resume(self):
        """Load the last checkpoint (weights, optimizer state, EMA) and continue the CURRENT recipe's schedule
        at its epoch (`resume.restore`)."""
        restore(self)

    def write_metrics(self, line: Dict[str, Any]):
        if not self.is_writer:
            return
        try:
            with open(self.metrics_path, "a") as fh:
                fh.write(json.dumps(line) + "\n")
        except OSError as err:
            raise cannot_write(self.metrics_path, err) from None
