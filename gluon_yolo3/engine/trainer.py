"""Data-parallel training of a recipe's detector over one or several devices through a kvstore.

The run folder receives: `recipe.yaml` (resolved, reproduces the run), `metrics.jsonl` (train and val
lines), `checkpoints/` (see checkpoint.py), `training.png` (loss terms, LR, validation metric; refreshed
every epoch), and `predictions/` (a few validation images with their detections drawn).
"""
from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon
from tqdm import tqdm

from ..data.pipeline import EpochSampler, TrainSamples, build_assigner
from ..evaluation.runner import evaluate, format_table
from ..losses.composer import YOLOLoss
from ..models.detector import YOLOv3, build_detector
from ..recipe import resolved_yaml
from ..registry import DATASETS, LR_SCHEDULES, OPTIMIZERS
from .checkpoint import CheckpointManager, atomic_write_text
from .devices import parse_devices, split_batch

NO_DECAY_SUFFIXES = ("_bias", "_gamma", "_beta")


class NonFiniteLoss(RuntimeError):
    """Training stopped because a loss term became NaN or infinite."""


class RunFolderError(RuntimeError):
    """A run folder that would overwrite an earlier run."""


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)


def build_datasets(recipe: Mapping[str, Any], splits=("train", "val")) -> Dict[str, Any]:
    """Build the recipe's datasets; class names come from `data.classes` or the training set."""
    data = recipe["data"]
    out = {}
    for split in splits:
        cfg = dict(data[split])
        if data.get("classes") and "classes" not in cfg:
            cfg["classes"] = list(data["classes"])
        dataset = DATASETS.build(cfg)
        if len(dataset) == 0:
            raise ValueError(f"data.{split}: dataset '{cfg['type']}' holds no images ({cfg})")
        out[split] = dataset
    return out


def build_loss(recipe: Mapping[str, Any], net: YOLOv3) -> YOLOLoss:
    return YOLOLoss(recipe["loss"]["terms"], net.anchors, net.strides, recipe["loss"]["ignore_iou"],
                    prefix="loss_")


def initialize(net: YOLOv3, contexts, input_size: int):
    """Fresh weights on every context (identical copies), with YOLO's prior on the head biases."""
    net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2.0), ctx=contexts)
    net.init_head_bias(input_size)


def make_run_folder(recipe: Mapping[str, Any], workdir: Optional[str], resume: bool) -> Path:
    """`runs/<recipe name>` (or `workdir`); never reuse a folder holding a run unless resuming."""
    if workdir:
        folder = Path(workdir)
        if not resume and (folder / "checkpoints").exists():
            raise RunFolderError(f"run folder '{folder}' already holds a run: pass --resume to continue it, "
                                 "or choose another --workdir")
    else:
        base = Path("runs") / recipe["name"]
        folder = base
        if not resume:
            n = 2
            while (folder / "checkpoints").exists():
                folder, n = Path(f"{base}-{n}"), n + 1
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Trainer:
    """`Trainer(recipe, run_dir).fit()` trains, validates, checkpoints and logs one run."""

    def __init__(self, recipe: Mapping[str, Any], run_dir: Path, devices=None, kvstore: Optional[str] = None,
                 progress: bool = True, log: Callable[[str], None] = print):
        self.recipe = recipe
        self.run_dir = Path(run_dir)
        self.train_cfg = recipe["train"]
        self.contexts = parse_devices(devices or self.train_cfg["devices"])
        self.kvstore = kvstore or self.train_cfg["kvstore"]
        self.progress = progress
        self.log = log
        self.batch_size = int(self.train_cfg["batch_size"])
        if self.batch_size % len(self.contexts):
            raise ValueError(f"train.batch_size {self.batch_size} must be divisible by the number of "
                             f"devices ({len(self.contexts)})")
        self.checkpoints = CheckpointManager(self.run_dir, self.train_cfg["keep_checkpoints"])
        self.metrics_path = self.run_dir / "metrics.jsonl"

    # ---- set-up --------------------------------------------------------------------------------
    def setup(self):
        recipe = self.recipe
        seed_everything(int(self.train_cfg["seed"]))
        sets = build_datasets(recipe)
        self.train_set, self.val_set = sets["train"], sets["val"]
        self.classes = list(self.train_set.classes)
        for problem in getattr(self.train_set, "problems", [])[:20]:
            self.log(f"skipped annotation: {problem}")
        self.net = build_detector(recipe, len(self.classes), num_devices=len(self.contexts))
        initialize(self.net, self.contexts, recipe["model"]["input_size"])
        self.loss_fn = build_loss(recipe, self.net)
        self.loss_fn.initialize(ctx=self.contexts)
        if self.train_cfg["hybridize"]:
            self.net.hybridize(static_alloc=True, static_shape=True)
            self.loss_fn.hybridize(static_alloc=True, static_shape=True)

        size = recipe["model"]["input_size"]
        assigner = build_assigner(recipe, self.net.anchors, self.net.strides, len(self.classes))
        data = recipe["data"]
        samples = TrainSamples(self.train_set, data["transforms"], data["resize"], size, data["mean"],
                               data["std"], assigner, data["max_boxes"], self.train_cfg["seed"])
        self.sampler = EpochSampler(len(samples), shuffle=True, seed=self.train_cfg["seed"])
        batches = gluon.data.BatchSampler(self.sampler, self.batch_size, last_batch="discard")
        if len(batches) == 0:
            raise ValueError(f"train.batch_size {self.batch_size} is larger than the training set "
                             f"({len(samples)} images)")
        self.loader = gluon.data.DataLoader(samples, batch_sampler=batches,
                                            num_workers=int(data["num_workers"]))
        self.steps_per_epoch = len(batches)
        epochs = int(self.train_cfg["epochs"])
        schedule = LR_SCHEDULES.build(self.train_cfg["lr_schedule"], lr=float(self.train_cfg["lr"]),
                                      steps_per_epoch=self.steps_per_epoch, epochs=epochs)
        optimizer = OPTIMIZERS.build(self.train_cfg["optimizer"], lr=float(self.train_cfg["lr"]),
                                     lr_scheduler=schedule)
        params = self.net.collect_params()
        if self.train_cfg.get("no_bias_decay", True):
            for name, param in params.items():
                if name.endswith(NO_DECAY_SUFFIXES):
                    param.wd_mult = 0.0
        self.trainer = gluon.Trainer(params, optimizer, kvstore=self.kvstore)

    # ---- the loop ------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> Dict[str, Any]:
        self.setup()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "recipe.yaml").write_text(resolved_yaml(self.recipe))
        epoch, step, best = 0, 0, -math.inf
        if resume:
            meta = self.checkpoints.last()
            if meta is None:
                raise FileNotFoundError(f"--resume: no checkpoint in {self.checkpoints.folder}")
            self.net.load_parameters(meta["params"], ctx=self.contexts)
            self.trainer.load_states(meta["states"])
            epoch, step, best = meta["epoch"], meta["step"], meta.get("best", -math.inf)
            self.log(f"resumed from {meta['params']} (epoch {epoch}, step {step})")
        epochs = int(self.train_cfg["epochs"])
        started = time.time()
        last_val: Optional[Dict[str, Any]] = None
        while epoch < epochs:
            step = self.train_epoch(epoch, step)
            epoch += 1
            val_every = int(self.train_cfg["val_every"])
            if val_every and (epoch % val_every == 0 or epoch == epochs):
                last_val = self.validate(epoch, step)
                if last_val["map"] > best:
                    best = last_val["map"]
                    self.checkpoints.save_best(self.net)
            if epoch % int(self.train_cfg["checkpoint_every"]) == 0 or epoch == epochs:
                self.checkpoints.save(self.net, self.trainer, epoch, step, {"best": best})
            self.plot()                       # training.png follows the run epoch by epoch
        summary = {"run_dir": str(self.run_dir), "epochs": epochs, "steps": step,
                   "train_seconds": round(time.time() - started, 1), "best_map": best,
                   "final": last_val}
        self.draw_predictions()
        return summary

    def train_epoch(self, epoch: int, step: int) -> int:
        self.sampler.set_epoch(epoch)
        names = self.loss_fn.names
        interval_sum = np.zeros(len(names))
        interval_images, interval_start = 0, time.time()
        bar = tqdm(self.loader, total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{self.train_cfg['epochs']}",
                   disable=not self.progress, unit="batch", dynamic_ncols=True)
        for x, target, gt_boxes in bar:
            terms = self.train_step(x, target, gt_boxes)            # (K,) summed over the batch
            step += 1
            if not np.all(np.isfinite(terms)):
                self.stop_on_nonfinite(terms, epoch, step)
            interval_sum += terms
            interval_images += x.shape[0]
            if step % int(self.train_cfg["log_every"]) == 0 or step % self.steps_per_epoch == 0:
                means = interval_sum / max(interval_images, 1)
                line = {"kind": "train", "epoch": epoch + 1, "step": step,
                        "lr": float(self.trainer.learning_rate), "loss": float(means.sum()),
                        **{f"loss/{n}": float(v) for n, v in zip(names, means)},
                        "img_per_s": round(interval_images / max(time.time() - interval_start, 1e-9), 2)}
                self.write_metrics(line)
                bar.set_postfix({n: f"{v:.3f}" for n, v in zip(names, means)}, refresh=False)
                interval_sum[:] = 0
                interval_images, interval_start = 0, time.time()
        return step

    def train_step(self, x, target, gt_boxes) -> np.ndarray:
        """One synchronous step over all devices; returns the per-term loss sums (K,) before the update.

        A step whose loss is not finite is not applied (the caller stops training).
        """
        terms = self.compute_gradients(x, target, gt_boxes)
        if np.all(np.isfinite(terms)):
            self.trainer.step(1)
        return terms

    def compute_gradients(self, x, target, gt_boxes) -> np.ndarray:
        """Forward and backward on every device; returns the per-term loss sums (K,) of the batch.

        Each device's loss is divided by the GLOBAL batch size, so that the kvstore's sum of the device
        gradients is the gradient of the mean loss over the whole batch; the update then uses step(1).
        """
        xs = split_batch(x, self.contexts)
        ts = split_batch(target, self.contexts)
        gs = split_batch(gt_boxes, self.contexts)
        with autograd.record():
            per_device = [self.loss_fn(t, g, *self.net(xd)) for xd, t, g in zip(xs, ts, gs)]
            totals = [loss.sum() / self.batch_size for loss in per_device]
        autograd.backward(totals)
        terms = sum(loss.sum(axis=0).as_in_context(mx.cpu()) for loss in per_device)
        return terms.asnumpy().astype(np.float64)

    def stop_on_nonfinite(self, terms: np.ndarray, epoch: int, step: int):
        bad = [n for n, v in zip(self.loss_fn.names, terms) if not np.isfinite(v)]
        last = self.checkpoints.last()
        message = (f"loss term(s) {', '.join(repr(b) for b in bad)} became "
                   f"{', '.join(str(v) for n, v in zip(self.loss_fn.names, terms) if n in bad)} at epoch "
                   f"{epoch + 1}, step {step}; this step was not applied. "
                   + (f"Last good checkpoint: {last['params']} (resume with --resume). " if last else
                      "No checkpoint was written yet. ")
                   + "Usual causes: a learning rate too high for training from scratch (lower train.lr), "
                     "no or too short warm-up (train.lr_schedule.warmup_epochs), or wild box targets "
                     "(check the data with broken or tiny boxes).")
        self.write_metrics({"kind": "error", "epoch": epoch + 1, "step": step, "message": message})
        raise NonFiniteLoss(message)

    # ---- validation, logs, plots ---------------------------------------------------------------
    def validate(self, epoch: int, step: int) -> Dict[str, Any]:
        mx.nd.waitall()   # let the last steps' BatchNorm statistics land before the inference graph reads them
        result, _ = evaluate(self.net, self.val_set, self.recipe, self.contexts, progress=self.progress)
        self.log(f"epoch {epoch}: validation {result['metric']} mAP {result['map']:.4f}\n"
                 + format_table(result))
        self.write_metrics({"kind": "val", "epoch": epoch, "step": step, "metric": result["metric"],
                            "map": float(result["map"]),
                            "per_class": {k: (None if v is None or np.isnan(v) else float(v))
                                          for k, v in result["per_class"].items()}})
        return result

    def write_metrics(self, line: Dict[str, Any]):
        with open(self.metrics_path, "a") as fh:
            fh.write(json.dumps(line) + "\n")

    def plot(self):
        from ..evaluation.plots import plot_training
        if self.metrics_path.exists():
            plot_training(self.metrics_path, self.run_dir / "training.png")

    def draw_predictions(self, count: int = 6):
        from ..api import Predictor
        folder = self.run_dir / "predictions"
        folder.mkdir(exist_ok=True)
        predictor = Predictor(self.recipe, net=self.net, classes=self.classes, contexts=self.contexts[:1])
        for i in range(min(count, len(self.val_set))):
            image, label = self.val_set[i]
            zoom = -(-320 // min(image.shape[:2]))   # previews at least 320 px: readable labels
            predictor.draw(image, folder / f"{self.val_set.image_id(i)}.jpg", gt=label, zoom=zoom)
