"""Data-parallel training of a recipe's detector over devices and machines through a kvstore.

The run folder receives: `recipe.yaml` (resolved, reproduces the run), `metrics.jsonl` (train and val
lines), `checkpoints/` (see checkpoint.py), `training.png` (loss terms, LR, validation metric; refreshed
every epoch), and `predictions/` (a few validation images with their detections drawn).

Exactness: every device's loss is divided by the GLOBAL batch (`train.batch_size` per worker, split over
its devices, times the number of workers), the kvstore sums the gradients of all devices and workers,
and every copy of the weights applies the same update (`update_on_kvstore=False`): one step on N devices
and W workers equals one step of one device on the union of their batches. In a `dist_sync` job each
worker reads its own shard of the data, every worker starts from rank 0's weights, and only rank 0
writes the run folder.

With `train.ema`, checkpoints' `.params` and `best.params` hold the averaged weights (what users
evaluate); the raw training weights sit beside them in `epoch_NNNN.train_params` for an exact resume.
"""
from __future__ import annotations

import copy
import json
import math
import random
import time
from contextlib import nullcontext as _nullcontext
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon
from tqdm import tqdm

from ..data.pipeline import build_assigner, build_train_batches
from ..evaluation.runner import evaluate, format_table
from ..losses.composer import YOLOLoss
from ..models.detector import YOLOv3, build_detector
from ..files import WriteError, atomic_write, atomic_write_text, cannot_write, make_folder
from ..recipe import RecipeError, parse_yaml, resolved_yaml
from ..registry import DATASETS, LR_SCHEDULES, OPTIMIZERS
from ..distributed import kvstore as dist
from .checkpoint import CheckpointError, CheckpointManager, check_finite, load_optimizer_states, load_weights, \
    trainer_names
from ..devices import parse_devices, split_batch
from .ema import WeightEMA, ema_config

NO_DECAY_SUFFIXES = ("_bias", "_gamma", "_beta")


class NonFiniteLoss(RuntimeError):
    """Training stopped because a loss term (or, with a finite loss, a gradient) became NaN or infinite."""


class NonFiniteGradient(NonFiniteLoss):
    """A step whose loss was finite but whose summed gradients were not; it was not applied. `names`: the
    parameters whose gradient holds NaN or infinity."""

    def __init__(self, message: str, names: List[str] = ()):
        super().__init__(message)
        self.names = list(names)


class RunFolderError(RuntimeError):
    """A run folder that would overwrite an earlier run, or a folder that is not a run."""


# keys whose change a resumed run cannot honour: the checkpoint's weights would not mean the same
FIXED_ON_RESUME = ("model.backbone", "model.neck", "model.head", "model.anchors", "model.norm",
                   "train.optimizer.type")
RUN_FILES = ("recipe.yaml", "metrics.jsonl", "checkpoints")     # a folder holding one of these is a run


AMP_TYPES = ("float16",)


def amp_type(value: Any, contexts) -> Optional[str]:
    """`train.amp` -> None (off) or "float16"; float16 only on GPUs (MXNet's AMP), a clear error otherwise."""
    if value in (None, False, "", "off", "float32"):
        return None
    if value not in AMP_TYPES:
        raise ValueError(f"train.amp must be null (off) or float16, got {value!r}"
                         + ("; bfloat16 AMP on CPU in MXNet 1.9.1 was measured slower than float32 and "
                            "crashing, so it is not offered" if str(value).startswith("bf") else ""))
    if any(ctx.device_type != "gpu" for ctx in contexts):
        raise ValueError(f"train.amp: {value} needs GPU devices (train.devices / --devices gpu:0,...); "
                         f"got {', '.join(str(c) for c in contexts)}. Mixed precision on CPU is not offered: "
                         "MXNet 1.9.1's bfloat16 path was measured slower than float32 and crashing. Set "
                         "train.amp to null to train in float32.")
    return str(value)


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)


SPLITS = ("train", "val")


def build_datasets(recipe: Mapping[str, Any], splits=SPLITS, classes=None) -> Dict[str, Any]:
    """Build the recipe's datasets, all with ONE class list: `classes`, else `data.classes`, else the training
    set's own (so that a validation split holding another set of classes cannot shift the class ids).

    A box whose class is outside the list is reported in the dataset's `problems` and skipped."""
    data = recipe["data"]
    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise ValueError(f"unknown split '{bad[0]}': a recipe's data section has the splits "
                         f"{', '.join(SPLITS)} (data.train, data.val)")
    out: Dict[str, Any] = {}
    if classes is None and data.get("classes"):
        classes = list(data["classes"])
    if classes is None and any(s != "train" for s in splits):
        out["train"] = _build_split(data, "train", None)
        classes = list(out["train"].classes)
    for split in splits:
        if split not in out:
            out[split] = _build_split(data, split, classes)
    return {split: out[split] for split in splits}


def _build_split(data: Mapping[str, Any], split: str, classes) -> Any:
    cfg = dict(data[split])
    if classes is not None:
        cfg["classes"] = list(classes)
    dataset = DATASETS.build(cfg)
    if len(dataset) == 0:
        raise ValueError(f"data.{split}: dataset '{cfg['type']}' holds no images ({cfg})")
    return dataset


def build_loss(recipe: Mapping[str, Any], net: YOLOv3) -> YOLOLoss:
    return YOLOLoss(recipe["loss"]["terms"], net.anchors, net.strides, recipe["loss"]["ignore_iou"],
                    prefix="loss_")


def initialize(net: YOLOv3, contexts, input_size: int):
    """Fresh weights on every context (identical copies), with YOLO's prior on the head biases."""
    net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2.0), ctx=contexts)
    net.init_head_bias(input_size)


def check_run_name(name: Any) -> str:
    """A recipe's `name` as a run name: one folder name under runs/ (no `/`, no `..`); RecipeError otherwise."""
    text = str(name) if name is not None else ""
    if not text.strip() or "/" in text or "\\" in text or text in (".", "..") or text != text.strip():
        raise RecipeError(f"name {name!r} is not a run name: give a plain name (the run goes to runs/<name>); "
                          "choose another folder with --workdir")
    return text


def holds_other_files(folder: Path) -> bool:
    """Whether `folder` exists, is not empty and holds no run (none of recipe.yaml, metrics.jsonl, checkpoints/)."""
    return folder.is_dir() and any(folder.iterdir()) and not any((folder / f).exists() for f in RUN_FILES)


def make_run_folder(recipe: Mapping[str, Any], workdir: Optional[str], resume: bool) -> Path:
    """`runs/<recipe name>` (numbered when taken) or `workdir`. Never reuses a folder holding a run unless
    resuming, and never writes into a folder that holds something other than a run."""
    if workdir:
        folder = Path(workdir)
        if folder.exists() and not folder.is_dir():
            raise WriteError(f"cannot write {folder}: it is a file, not a folder (--workdir)")
        if resume and not (folder / "checkpoints").is_dir():
            raise FileNotFoundError(f"--resume: '{folder}' holds no run with checkpoints to continue")
        if not resume and (folder / "checkpoints").exists():
            raise RunFolderError(f"run folder '{folder}' already holds a run: pass --resume to continue it, "
                                 "or choose another --workdir")
    else:
        base = Path("runs") / check_run_name(recipe["name"])
        folder = base
        if not resume:
            n = 2
            while (folder / "checkpoints").exists():
                folder, n = Path(f"{base}-{n}"), n + 1
    if holds_other_files(folder):
        raise RunFolderError(f"'{folder}' already holds files that are not a gluon-yolo3 run; choose an empty or "
                             "new folder with --workdir (or another recipe name)")
    return make_folder(folder)


def _differences(old: Any, new: Any, prefix: str = ""):
    """`[(dotted key, old value, new value)]` where two resolved recipes differ (lists compared whole)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [(prefix[:-1], old, new)]


class Trainer:
    """`Trainer(recipe, run_dir).fit()` trains, validates, checkpoints and logs one run."""

    def __init__(self, recipe: Mapping[str, Any], run_dir: Path, devices=None, kvstore: Optional[str] = None,
                 progress: bool = True, log: Callable[[str], None] = print):
        self.recipe = copy.deepcopy(dict(recipe))    # gets the run's class list, written into recipe.yaml
        self.run_dir = Path(run_dir)
        self.train_cfg = recipe["train"]
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
        self.amp = amp_type(self.train_cfg.get("amp"), self.contexts)
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
        self.kv = None
        self.worker_sum = None
        self.watchdog = None
        self.ema: Optional[WeightEMA] = None
        self.grad_norm = None

    @property
    def is_writer(self) -> bool:
        """Whether this process writes the run folder (rank 0 of a distributed job, or the only one)."""
        return self.rank == 0

    def _guard(self, what: str):
        """The watchdog's guard in a distributed job, else nothing."""
        if self.watchdog is None:
            return _nullcontext()
        return self.watchdog.guard(what)

    # ---- set-up --------------------------------------------------------------------------------
    def setup(self):
        recipe = self.recipe
        if self.distributed:
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
        if self.amp:
            from mxnet.contrib import amp
            amp.init(target_dtype=self.amp)     # before the network is built
        seed_everything(int(self.train_cfg["seed"]))
        sets = build_datasets(recipe)
        self.train_set, self.val_set = sets["train"], sets["val"]
        self.classes = list(self.train_set.classes)
        recipe["data"]["classes"] = list(self.classes)     # the run's one class list, in its recipe.yaml
        for split, dataset in sets.items():
            problems = getattr(dataset, "problems", [])
            for problem in problems[:20]:
                self.log(f"data.{split}: skipped: {problem}")
            if len(problems) > 20:
                self.log(f"data.{split}: ... and {len(problems) - 20} more problems (gluon-yolo3 data check "
                         "lists them all)")
        self.net = build_detector(recipe, len(self.classes), num_devices=len(self.contexts))
        initialize(self.net, self.contexts, recipe["model"]["input_size"])
        self.loss_fn = build_loss(recipe, self.net)
        self.loss_fn.initialize(ctx=self.contexts)
        if all(c.device_type == "cpu" for c in self.contexts) and hasattr(self.net.head, "pad_outputs"):
            self.net.head.pad_outputs(True)   # oneDNN: a slow BatchNorm backward otherwise (HeadConv)
        if self.train_cfg["hybridize"]:
            self.net.hybridize(static_alloc=True, static_shape=True)
            self.loss_fn.hybridize(static_alloc=True, static_shape=True)

        assigner = build_assigner(recipe, self.net.anchors, self.net.strides, len(self.classes))
        data = recipe["data"]
        # each worker of a distributed job reads its own shard (every num_workers-th key of one permutation)
        samples, self.sampler, batches = build_train_batches(
            recipe, self.train_set, assigner, self.batch_size, int(self.train_cfg["seed"]),
            shard=self.rank, num_shards=self.num_workers)
        if len(batches) == 0:
            raise ValueError(f"train.batch_size {self.batch_size} is larger than the training set "
                             f"({len(samples)} images" + (f", {len(self.sampler)} per worker)"
                                                          if self.num_workers > 1 else ")"))
        self.loader = gluon.data.DataLoader(samples, batch_sampler=batches,
                                            num_workers=int(data["num_workers"]))
        self.steps_per_epoch = len(batches)
        epochs = int(self.train_cfg["epochs"])
        schedule = LR_SCHEDULES.build(self.train_cfg["lr_schedule"], lr=float(self.train_cfg["lr"]),
                                      steps_per_epoch=self.steps_per_epoch, epochs=epochs)
        optimizer = OPTIMIZERS.build(self.train_cfg["optimizer"], lr=float(self.train_cfg["lr"]),
                                     lr_scheduler=schedule)
        params = self.net.collect_params()
        if self.train_cfg["no_bias_decay"]:
            for name, param in params.items():
                if name.endswith(NO_DECAY_SUFFIXES):
                    param.wd_mult = 0.0
        self.trainable = [p for p in params.values() if p.grad_req != "null"]
        structural = {id(p): name for name, p in self.net._collect_params_with_prefix().items()}
        self.trainable_names = [structural.get(id(p), p.name) for p in self.trainable]
        # update_on_kvstore=False: the kvstore only sums gradients; every device (and worker) applies the
        # same update itself, which lets us clip the summed gradient, keep an EMA, and save the optimizer
        # state on rank 0 in a distributed job.
        self.trainer = gluon.Trainer(params, optimizer, kvstore=self.kv or self.kvstore, update_on_kvstore=False)
        if self.amp:
            from mxnet.contrib import amp
            amp.init_trainer(self.trainer)
        if self.distributed:
            with self._guard("sharing rank 0's initial weights"):
                dist.broadcast_initial_weights(self.trainer)
                # the loss terms of all workers, summed: every worker takes the same non-finite decision
                self.worker_sum = dist.WorkerSum(self.kv, key=len(self.trainer._params),
                                                 size=len(self.loss_fn.names))
        if self.ema_cfg:
            self.ema = WeightEMA(self.net, **self.ema_cfg)

    # ---- the loop ------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> Dict[str, Any]:
        self.setup()
        epoch, step, best = 0, 0, -math.inf
        if resume:              # the checkpoint is checked against the recipe before anything is written
            epoch, step, best = self.resume()
        if self.is_writer:
            atomic_write_text(self.run_dir / "recipe.yaml", resolved_yaml(self.recipe))
        epochs = int(self.train_cfg["epochs"])
        started = time.time()
        last_val: Optional[Dict[str, Any]] = None
        while epoch < epochs:
            step = self.train_epoch(epoch, step)
            epoch += 1
            if not self.is_writer:            # rank 0 validates and writes; the others go on (and wait
                continue                      # for it at their next step)
            val_every = int(self.train_cfg["val_every"])
            if val_every and (epoch % val_every == 0 or epoch == epochs):
                last_val = self.validate(epoch, step)
                if last_val["map"] > best:
                    best = last_val["map"]
                    self.checkpoints.save_best(self.ema if self.ema is not None else self.net)
            if epoch % int(self.train_cfg["checkpoint_every"]) == 0 or epoch == epochs:
                self.save_checkpoint(epoch, step, best)
            self.plot()                       # training.png follows the run epoch by epoch
        summary = {"run_dir": str(self.run_dir), "epochs": epochs, "steps": step,
                   "train_seconds": round(time.time() - started, 1), "best_map": best,
                   "final": last_val}
        if self.distributed:
            summary.update(rank=self.rank, workers=self.num_workers, global_batch=self.global_batch)
        if self.is_writer:
            self.draw_predictions()
        if self.distributed:
            self.leave_job()
        return summary

    def leave_job(self):
        """End this worker's part of the distributed job now (waits for the others to end theirs)."""
        with self._guard("the other workers finishing"):
            dist.release_kvstore(self.trainer)
            self.kv = self.worker_sum = None      # the last references: the kvstore ends here

    def save_checkpoint(self, epoch: int, step: int, best: float):
        """`epoch_NNNN.params` (the EMA weights with an EMA, else the training weights), `.states`, `.json`,
        and with an EMA the training weights in `epoch_NNNN.train_params`; `last.json` is written last."""
        extra: Dict[str, Any] = {"best": best, "classes": list(self.classes)}
        if self.ema is not None:
            mx.nd.waitall()
            raw = self.checkpoints.folder / f"epoch_{epoch:04d}.train_params"
            check_finite(self.net, raw)
            atomic_write(raw, self.net.save_parameters)
            extra.update(train_params=raw.name, ema_updates=self.ema.updates)
        self.checkpoints.save(self.ema if self.ema is not None else self.net, self.trainer, epoch, step, extra,
                              names=trainer_names(self.trainer, self.net))
        kept = {p.stem for p in self.checkpoints.folder.glob("epoch_*.params")}
        for path in self.checkpoints.folder.glob("epoch_*.train_params"):
            if path.stem not in kept:
                path.unlink(missing_ok=True)

    def resume(self):
        """Load the last checkpoint (weights, optimizer state, EMA) and continue the CURRENT recipe's schedule
        at its epoch; -> (epoch, step, best).

        Changed settings the run can honour (more epochs, another lr or schedule, batch size, data, loss) are
        listed in the log; a change it cannot (the architecture, the anchors, the class list, the optimizer
        type) is refused before anything is written. Every worker of a distributed job reads the checkpoint:
        the run folder must be on storage they share.
        """
        meta = self.checkpoints.last()
        if meta is None:
            raise FileNotFoundError(f"--resume: no complete checkpoint in {self.checkpoints.folder}"
                                    + (f" (worker rank {self.rank}: the run folder must be on storage every "
                                       "worker shares)" if self.rank else ""))
        changes = self.recipe_changes()
        fixed = [c for c in changes if c[0].startswith(FIXED_ON_RESUME)]
        if fixed:
            key, old, new = fixed[0]
            raise CheckpointError(f"--resume: {key} changed from {old!r} to {new!r}; the checkpoint's weights "
                                  f"belong to the old value. Resume with the run's own recipe.yaml, or start a new run")
        saved_classes = meta.get("classes")
        if saved_classes is not None and list(saved_classes) != list(self.classes):
            raise CheckpointError(f"--resume: the checkpoint was trained with classes {saved_classes}, the recipe's "
                                  f"data gives {self.classes}")
        raw = str(self.checkpoints.folder / Path(meta["train_params"]).name) if meta.get("train_params") \
            else meta["params"]
        load_weights(self.net, raw, self.contexts, what="--resume")
        load_optimizer_states(self.trainer, trainer_names(self.trainer, self.net), meta["states"], meta)
        if self.ema is not None:
            if meta.get("train_params"):
                self.ema.load_parameters(meta["params"], updates=meta.get("ema_updates", meta["step"]))
            else:                   # the run had no EMA so far: start it here
                self.ema.reset(updates=0)
        epoch = int(meta["epoch"])
        step = epoch * self.steps_per_epoch      # the schedule's position: the current recipe's, at this epoch
        optimizer = self.trainer._optimizer
        optimizer.begin_num_update = optimizer.num_update = step
        if self.is_writer:              # half-written files of a process killed while saving
            for stale in self.checkpoints.folder.glob(".*.tmp"):
                stale.unlink(missing_ok=True)
        self.log(f"resumed from {raw} (epoch {meta['epoch']}, step {meta['step']})")
        for key, old, new in changes:
            self.log(f"resume: {key} changed from {old!r} to {new!r}")
        if step != int(meta["step"]):
            self.log(f"resume: {self.steps_per_epoch} steps per epoch now ({meta['step']} steps in "
                     f"{epoch} epochs before): the schedule continues at step {step}")
        if changes:
            self.log(f"resume: the learning-rate schedule follows the current recipe from step {step}: lr "
                     f"{optimizer.learning_rate:.6g} now")
        return epoch, step, meta.get("best", -math.inf)

    def recipe_changes(self):
        """`[(dotted key, old, new)]` between the run folder's recipe.yaml and the current recipe."""
        path = self.run_dir / "recipe.yaml"
        if not path.is_file():
            return []
        try:
            old = parse_yaml(path.read_text()) or {}
        except Exception as err:   # noqa: BLE001 - a damaged recipe.yaml: report, compare nothing
            self.log(f"resume: cannot read {path} ({err}); changed settings are not listed")
            return []
        new = {k: v for k, v in self.recipe.items() if k != "_file_"}
        return [(key, a, b) for key, a, b in _differences(old, new)
                if key != "name" and not (key == "data.classes" and a is None)]   # classes: checked against
                                                                                  # the checkpoint's own list

    def train_epoch(self, epoch: int, step: int) -> int:
        self.sampler.set_epoch(epoch)
        names = self.loss_fn.names
        interval_sum = np.zeros(len(names))
        interval_images, interval_start = 0, time.time()
        bar = tqdm(self.loader, total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{self.train_cfg['epochs']}",
                   disable=not self.progress, unit="batch", dynamic_ncols=True)
        for x, target, gt_boxes in bar:
            try:
                with self._guard(f"step {step + 1} (epoch {epoch + 1})"):
                    terms = self.train_step(x, target, gt_boxes)        # (K,) summed over the global batch
            except NonFiniteGradient as err:
                self.stop(f"{err} at epoch {epoch + 1}, step {step + 1}, although the loss was finite; "
                          "this step was not applied.", epoch, step + 1, err)
            step += 1
            if not np.all(np.isfinite(terms)):
                bad = [n for n, v in zip(names, terms) if not np.isfinite(v)]
                self.stop(f"loss term(s) {', '.join(repr(b) for b in bad)} became "
                          f"{', '.join(str(v) for n, v in zip(names, terms) if n in bad)} at epoch "
                          f"{epoch + 1}, step {step}; this step was not applied.", epoch, step)
            interval_sum += terms
            interval_images += x.shape[0] * self.num_workers
            if step % int(self.train_cfg["log_every"]) == 0 or step % self.steps_per_epoch == 0:
                means = interval_sum / max(interval_images, 1)
                line = {"kind": "train", "epoch": epoch + 1, "step": step,
                        "lr": float(self.trainer.learning_rate), "loss": float(means.sum()),
                        **{f"loss/{n}": float(v) for n, v in zip(names, means)},
                        "img_per_s": round(interval_images / max(time.time() - interval_start, 1e-9), 2)}
                if self.grad_norm is not None:
                    line["grad_norm"] = float(self.grad_norm.asscalar())   # before clipping, last step
                self.write_metrics(line)
                bar.set_postfix({n: f"{v:.3f}" for n, v in zip(names, means)}, refresh=False)
                interval_sum[:] = 0
                interval_images, interval_start = 0, time.time()
        return step

    def train_step(self, x, target, gt_boxes) -> np.ndarray:
        """One synchronous step over all devices (and workers); returns the per-term loss sums (K,) over
        the global batch, before the update.

        A step whose loss is not finite (on any worker) is not applied (the caller stops training), nor is
        one whose summed gradients are not finite (NonFiniteGradient naming the tensors).
        """
        terms = self.compute_gradients(x, target, gt_boxes)
        if self.worker_sum is not None:
            terms = self.worker_sum(terms)
        if np.all(np.isfinite(terms)):
            self.apply_gradients()
        return terms

    def apply_gradients(self):
        """Sum the gradients over devices and workers, check they are finite, clip their global norm, update,
        fold into the EMA."""
        self.trainer.allreduce_grads()
        if self.amp != "float16":       # float16: MXNet AMP's loss scaler skips overflowing steps itself
            self.check_gradients()
        if self.clip_grad_norm > 0:
            if self.amp:
                from mxnet.contrib import amp
                amp.unscale(self.trainer)
            # after the allreduce every device holds the whole summed gradient: clip each copy alike
            norms = [gluon.utils.clip_global_norm([p.grad(ctx) for p in self.trainable], self.clip_grad_norm,
                                                  check_isfinite=False)
                     for ctx in self.contexts]
            self.grad_norm = norms[0]
        self.trainer.update(1)
        if self.ema is not None:
            self.ema.update()

    def check_gradients(self):
        """NonFiniteGradient naming the tensors whose summed gradient holds NaN or infinity (one fused check
        over all of them first; every device and worker holds the same sum, so all decide alike)."""
        grads = [p.grad(self.contexts[0]) for p in self.trainable]
        finite = [mx.nd.multi_all_finite(*grads[i:i + 64], num_arrays=len(grads[i:i + 64]), init_output=True)
                  for i in range(0, len(grads), 64)]
        if min(f.asscalar() for f in finite) == 1:
            return
        bad = [n for n, g in zip(self.trainable_names, grads) if not np.isfinite(g.asnumpy()).all()]
        raise NonFiniteGradient(f"the summed gradient of '{bad[0]}' holds NaN or infinity"
                                + (f" ({len(bad)} of {len(grads)} tensors)" if len(bad) > 1 else ""), bad)

    def compute_gradients(self, x, target, gt_boxes) -> np.ndarray:
        """Forward and backward on every device; returns the per-term loss sums (K,) of the batch.

        Each device's loss is divided by the GLOBAL batch size (all devices of all workers), so that the
        kvstore's sum of the gradients is the gradient of the mean loss over the global batch; the update
        then uses a rescale of 1.
        """
        xs = split_batch(x, self.contexts)
        ts = split_batch(target, self.contexts)
        gs = split_batch(gt_boxes, self.contexts)
        with autograd.record():
            per_device = [self.loss_fn(t, g, *self.net(xd)) for xd, t, g in zip(xs, ts, gs)]
            totals = [loss.sum() / self.global_batch for loss in per_device]
        if self.amp:
            from mxnet.contrib import amp
            with amp.scale_loss(totals, self.trainer) as scaled:
                autograd.backward(scaled)
        else:
            autograd.backward(totals)
        terms = sum(loss.sum(axis=0).as_in_context(mx.cpu()) for loss in per_device)
        return terms.asnumpy().astype(np.float64)

    def stop(self, what: str, epoch: int, step: int, cause: Optional[BaseException] = None):
        """Stop training on a non-finite loss or gradient: log it in metrics.jsonl, raise NonFiniteLoss naming
        the last good checkpoint."""
        last = self.checkpoints.last()
        message = (what + " "
                   + (f"Last good checkpoint: {last['params']} (resume with --resume). " if last else
                      "No checkpoint was written yet. ")
                   + "Usual causes: a learning rate too high for training from scratch (lower train.lr), "
                     "no or too short warm-up (train.lr_schedule.warmup_epochs), or wild box targets "
                     "(check the data with broken or tiny boxes).")
        self.write_metrics({"kind": "error", "epoch": epoch + 1, "step": step, "message": message})
        if isinstance(cause, NonFiniteGradient):
            raise NonFiniteGradient(message, cause.names) from None
        raise NonFiniteLoss(message)

    # ---- validation, logs, plots ---------------------------------------------------------------
    def validate(self, epoch: int, step: int) -> Dict[str, Any]:
        """Evaluate on the validation set (with the EMA weights when `train.ema` is on)."""
        mx.nd.waitall()   # let the last steps' BatchNorm statistics land before the inference graph reads them
        with (self.ema.swapped_in() if self.ema is not None else _nullcontext()):
            result, _ = evaluate(self.net, self.val_set, self.recipe, self.contexts, progress=self.progress)
        self.log(f"epoch {epoch}: validation {result['metric']} mAP {result['map']:.4f}\n"
                 + format_table(result))
        self.write_metrics({"kind": "val", "epoch": epoch, "step": step, "metric": result["metric"],
                            "map": float(result["map"]),
                            "per_class": {k: (None if v is None or np.isnan(v) else float(v))
                                          for k, v in result["per_class"].items()}})
        return result

    def write_metrics(self, line: Dict[str, Any]):
        if not self.is_writer:
            return
        try:
            with open(self.metrics_path, "a") as fh:
                fh.write(json.dumps(line) + "\n")
        except OSError as err:
            raise cannot_write(self.metrics_path, err) from None

    def plot(self):
        from ..evaluation.plots import plot_training
        if self.is_writer and self.metrics_path.exists():
            try:
                plot_training(self.metrics_path, self.run_dir / "training.png")
            except OSError as err:
                raise cannot_write(self.run_dir / "training.png", err) from None

    def draw_predictions(self, count: int = 6):
        from ..api import Predictor
        folder = self.run_dir / "predictions"
        folder.mkdir(exist_ok=True)
        predictor = Predictor(self.recipe, net=self.net, classes=self.classes, contexts=self.contexts[:1])
        with (self.ema.swapped_in() if self.ema is not None else _nullcontext()):
            for i in range(min(count, len(self.val_set))):
                image, label = self.val_set[i]
                zoom = -(-320 // min(image.shape[:2]))   # previews at least 320 px: readable labels
                predictor.draw(image, folder / f"{self.val_set.image_id(i)}.jpg", gt=label, zoom=zoom)
