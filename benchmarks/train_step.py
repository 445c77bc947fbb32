"""Training-step throughput: ours (Trainer, recipe, hybridized) vs GluonCV's yolo3_darknet53_voc, same run.

    python benchmarks/train_step.py                 # batch 8, 320 px, darknet53 and darknet_tiny
    python benchmarks/train_step.py --quick         # fewer repeats
    python benchmarks/train_step.py --only darknet_tiny --repeats 10

A step is everything after decoding: forward, loss (targets already encoded), backward, update, and
the wait for the result. Ours: `Trainer(recipe).setup()` builds the recipe's network and loss
(hybridized with static_alloc/static_shape as `train.hybridize` does), then `Trainer.train_step` is
called on one batch taken from its own loader (synthetic images, augmentation off), reused every
step. GluonCV: `yolo3_darknet53_voc` (pretrained=False, pretrained_base=False, random weights, nothing
downloaded), hybridized the same way, its prefetch targets from `YOLO3DefaultTrainTransform` on the
same images, and in the step its own dynamic target generator and `YOLOV3Loss` (the training-mode
forward), then `gluon.Trainer.step` with SGD (momentum 0.9, wd 5e-4) as its train_yolo3.py does.

Images per second = batch / median step time over `--repeats` steps after `--warmup` steps, in
`--rounds` rounds that alternate ours and GluonCV (other load on the machine hits both); the best
round's median counts. The ratio is ours / GluonCV; darknet_tiny's ratio is against the same
GluonCV darknet53 (a different, much smaller network: it says what the tiny recipe buys, not that
our Darknet-53 is faster). Our synthetic data has 3 classes, GluonCV's VOC head 20 (the 1x1 output
convolutions differ: under 0.5 % of the FLOPs).

`--pipeline` times whole training iterations instead, data pipeline included (the issue's training
target): both sides read the same images (BCCD when found, else synthetic) through their own DataLoader
with the same number of worker processes, the same augmentation (data_pipeline.py's set: colour jitter,
expand, IoU crop, resize, flip) and their own target encoding, at batch 8 and 320 px, on darknet53 with
3 classes on both sides; the worker processes share the two cores with the maths, as in a real run.
Images per second = images / wall time of `--repeats` iterations after `--warmup`, waits for data
included. Each side's iteration waits for its loss values only, as its training loop does (the backward and
update may run on while the next batch is fetched); the clock starts and stops on an idle engine.
Before either, `training_ceiling` times one large 3x3 convolution's forward and both gradients alone (what
fp32 convolutions reach in training here) and counts the convolutions of a darknet53 training step
(`conv_gflop(training=True)`); the step rows then give each side's GFLOP/s, and the pipeline row what
1.25x GluonCV would need: GFLOP/s over the whole iteration, and the time left for everything that is
not a convolution once the convolutions run at the ceiling.
bfloat16 (`train.amp: bfloat16`, convolutions on AMX tiles, float32 master weights) is timed beside float32 in
the step rows and the pipeline row on CPUs that have it (`amx.cpu_bf16()`); GluonCV has no bfloat16 and stays in
float32, its only training precision on a CPU. `--epoch-only` times one epoch of the tiny BCCD recipe as
`gluon-yolo3 train` runs it (its own loader, augmentation, multi-scale, EMA; validation off), float32 against
bfloat16, after one warm-up epoch each.
`--gluoncv-only` times GluonCV's side alone (run_all.py uses it for GluonCV at MXNet's
default thread count).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

import common  # first: gluon_yolo3 before MXNet (its thread count, see common.py)
import mxnet as mx
from mxnet import autograd, gluon

from common import REPO
from data_pipeline import OURS, gluoncv_loader, gluoncv_net, load_images
from gluon_yolo3 import amx, api
from gluon_yolo3.data.pipeline import build_assigner, build_train_batches
from gluon_yolo3.engine.trainer import Trainer
from gluon_yolo3.speed.timing import conv_ceiling, conv_gflop, median_seconds

MODELS = {
    "darknet53": ("recipes/bccd_darknet53.yaml", "ours darknet53-YOLOv3"),
    "darknet_tiny": ("recipes/bccd_tiny.yaml", "ours darknet_tiny-YOLOv3-tiny"),
}


def precisions():
    """Our training precisions on this CPU: float32, and bfloat16 where the CPU has it."""
    return ["float32"] + (["bfloat16"] if amx.cpu_bf16() else [])


def our_trainer(name: str, size: int, batch: int, folder: Path, transforms=(), amp: str = "float32") -> Trainer:
    """A set-up Trainer for our model `name` at `size`, hybridized, on synthetic data with `transforms`, in
    `amp` (float32 or bfloat16)."""
    recipe = api.load(REPO / MODELS[name][0], [
        f"data.train={{type: synthetic, split: train, num_images: {4 * batch}, image_size: {size}}}",
        f"data.val={{type: synthetic, split: val, num_images: 4, image_size: {size}}}",
        f"data.transforms={json.dumps(list(transforms))}", "data.resize=resize",
        "data.multi_scale={min_size: null, max_size: null}", "data.num_workers=0",
        f"model.input_size={size}", f"train.batch_size={batch}", "train.devices=cpu", "train.hybridize=true",
        "train.ema=null", f"train.amp={'null' if amp == 'float32' else amp}"])
    trainer = Trainer(recipe, folder / f"{name}-{amp}", progress=False, log=lambda *_: None)
    trainer.setup()
    return trainer


def training_ceiling(size: int, batch: int, runs: int = 10) -> Dict[str, float]:
    """What the machine's fp32 convolutions reach in training, and what a darknet53 step asks of them.

    -> {"conv_gflops": GFLOP/s of one large 3x3 convolution's forward, input gradient and weight gradient
    (darknet53's 256 -> 512 channels at its stage-4 map, size / 16, hybridized, oneDNN), "gflop_per_image":
    the convolutions of our darknet53 training step per image (forward and both gradients, none for the
    image; `conv_gflop(training=True)`)}."""
    recipe = api.load(REPO / MODELS["darknet53"][0], [f"model.input_size={size}"])
    gflop = conv_gflop(api.build(recipe, 3), size, training=True)      # 3 classes, as our_trainer's data
    return {"conv_gflops": conv_ceiling(batch, size // 16, backward=True, runs=runs), "gflop_per_image": gflop}


def our_step(name: str, size: int, batch: int, folder: Path, amp: str = "float32"):
    """-> (step(): one full training step, waited for; the batch as numpy images (B, 3, S, S))."""
    trainer = our_trainer(name, size, batch, folder, amp=amp)
    trainer.sampler.set_epoch(0)
    x, target, gt_boxes = next(iter(trainer.loader))

    def step():
        trainer.train_step(x, target, gt_boxes)      # returns once the loss is known: wait for the update
        mx.nd.waitall()
    return step, x.asnumpy()


def gluoncv_step(images: np.ndarray):
    """GluonCV's darknet53 YOLOv3 training step on `images` (B, 3, S, S) normalised; -> step()."""
    from gluoncv.data.transforms.presets.yolo import YOLO3DefaultTrainTransform
    batch, _, size, _ = images.shape
    net = common.gluoncv_model("yolo3_darknet53_voc", pretrained=False, pretrained_base=False)
    transform = YOLO3DefaultTrainTransform(size, size, net)
    # prefetch targets (the data side of GluonCV's target generation) for boxes like ours, once
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(batch):
        img = mx.nd.array(rng.integers(0, 255, (size, size, 3)), dtype="uint8")
        n = int(rng.integers(1, 6))
        xy = rng.uniform(0, size * 0.6, (n, 2))
        wh = rng.uniform(size * 0.1, size * 0.4, (n, 2))
        label = np.concatenate([xy, xy + wh, rng.integers(0, 20, (n, 1))], axis=1).astype(np.float32)
        samples.append(transform(img, label))
    fixed = [mx.nd.array(np.stack([s[k].asnumpy() for s in samples])) for k in range(1, 6)]
    width = max(s[6].shape[0] for s in samples)
    gt = np.full((batch, width, 4), -1, np.float32)
    for i, s in enumerate(samples):
        gt[i, :s[6].shape[0]] = s[6].asnumpy()
    gt_boxes = mx.nd.array(gt)
    x = mx.nd.array(images)
    update = gluoncv_update(net, batch)
    return lambda: update(x, gt_boxes, fixed)


def gluoncv_update(net, batch: int, wait: bool = True):
    """Hybridize GluonCV's `net` and give its train_yolo3.py update: -> update(x, gt_boxes, fixed targets),
    forward with its own loss, backward, SGD step (momentum 0.9, wd 5e-4). `wait`: until the update is done
    (a step timed alone); else, as train_yolo3.py's loss metrics do, until the loss values are on the host
    (the backward and update may still run, as ours do in the pipeline mode)."""
    net.hybridize(static_alloc=True, static_shape=True)
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.001, "wd": 0.0005,
                                                          "momentum": 0.9})

    def update(x, gt_boxes, fixed):
        with autograd.record():
            obj, center, scale, cls = net(x, gt_boxes, *fixed)
            total = obj + center + scale + cls
        autograd.backward(total)
        trainer.step(batch)
        if wait:
            mx.nd.waitall()
        else:
            [loss.asnumpy() for loss in (obj, center, scale, cls)]
    return update


def our_iteration(dataset, size: int, batch: int, workers: int, folder: Path, amp: str = "float32"):
    """Ours, data pipeline included: -> (make_iter(): a fresh epoch of batches, step(batch))."""
    trainer = our_trainer("darknet53", size, batch, folder / "pipeline", OURS, amp=amp)
    recipe = trainer.recipe
    assigner = build_assigner(recipe, trainer.net.anchors, trainer.net.strides, len(dataset.classes))
    samples, sampler, batches = build_train_batches(recipe, dataset, assigner, batch, seed=0)
    loader = gluon.data.DataLoader(samples, batch_sampler=batches, num_workers=workers)
    epochs = iter(range(10 ** 6))

    def make_iter():
        sampler.set_epoch(next(epochs))
        return iter(loader)

    def step(item):
        trainer.train_step(*item)        # returns once the loss is known; backward and update may still run
    return make_iter, step


def gluoncv_iteration(dataset, size: int, batch: int, workers: int):
    """GluonCV's train_yolo3.py iteration, data pipeline included: -> (make_iter, step(batch))."""
    net = gluoncv_net(dataset.classes)
    loader = gluoncv_loader(dataset, size, batch, workers, net=net)
    update = gluoncv_update(net, batch, wait=False)
    ctx = mx.cpu()

    def step(item):
        x = item[0].as_in_context(ctx)                # its batchify gives cpu_shared arrays
        fixed = [t.as_in_context(ctx) for t in item[1:6]]
        gt = item[6].as_in_context(ctx)
        width = max(100, gt.shape[1])                 # one width for every batch, as static_shape wants
        if gt.shape[1] < width:
            gt = mx.nd.concat(gt, -mx.nd.ones((gt.shape[0], width - gt.shape[1], 4)), dim=1)
        update(x, gt, fixed)
    return (lambda: iter(loader)), step


def iterations_per_second(make_iter, step, batch: int, repeats: int, warmup: int) -> float:
    """Images per second over `repeats` iterations (data wait + step) after `warmup` ones.

    The clock starts and stops on an idle engine (`waitall`): our step returns once its loss is known, while
    its backward and update still run (the next step's forward waits for them), so without the wait a
    window would count some steps' backward passes and not others'."""
    done, start = 0, None
    while True:
        for item in make_iter():
            step(item)
            done += 1
            if done == warmup:
                mx.nd.waitall()
                start = time.perf_counter()
            elif done == warmup + repeats:
                mx.nd.waitall()
                return repeats * batch / (time.perf_counter() - start)


def budget(ceiling: Dict[str, float], gluoncv_img_s: float, batch: int, target: float = 1.25) -> Dict[str, float]:
    """What `target` x GluonCV's images/s asks of the machine: -> {"need_gflops" (convolutions only, over the
    whole iteration), "need_share" (of the ceiling), "budget_s" (per iteration), "conv_s_at_ceiling" (its
    convolutions at the ceiling), "rest_s" (what is left for everything else)}."""
    need = target * gluoncv_img_s * ceiling["gflop_per_image"]
    budget_s = batch / (target * gluoncv_img_s)
    conv_s = batch * ceiling["gflop_per_image"] / ceiling["conv_gflops"]
    return {"target": target, "need_gflops": need, "need_share": need / ceiling["conv_gflops"],
            "budget_s": budget_s, "conv_s_at_ceiling": conv_s, "rest_s": budget_s - conv_s}


def run_pipeline(root, size: int = 320, batch: int = 8, workers: int = 2, repeats: int = 5, warmup: int = 2,
                 rounds: int = 2, gluoncv_only: bool = False, ceiling=None) -> Dict[str, float]:
    """Training iterations with the data pipeline: -> {"ours_img_s", "gluoncv_img_s", "ratio", ...}; with
    `ceiling` (training_ceiling()), also the `budget` that 1.25x GluonCV leaves."""
    warmup = max(warmup, 2)      # the second iteration still builds (backward graph): never time it
    dataset, what = load_images(root, size, count=batch * (repeats + warmup + 1))
    threads = common.omp_threads("MXNet's default")
    print(f"training iterations with the data pipeline: darknet53, batch {batch}, {size}x{size}, {workers} "
          f"workers each, OMP threads {threads}; data: {what}")
    sides = {"gluoncv": gluoncv_iteration(dataset, size, batch, workers)}
    with tempfile.TemporaryDirectory() as tmp:
        if not gluoncv_only:
            for amp in precisions():
                key = "ours" if amp == "float32" else f"ours {amp}"
                sides[key] = our_iteration(dataset, size, batch, workers, Path(tmp), amp)
        best = {k: 0.0 for k in sides}
        for r in range(rounds):
            for key, (make_iter, step) in sides.items():
                best[key] = max(best[key], iterations_per_second(make_iter, step, batch, repeats, warmup))
                print(f"  round {r + 1}: {key:<13} {best[key]:6.2f} images/s (best so far)", flush=True)
    out = {"gluoncv_img_s": best["gluoncv"], "threads": threads, "workers": workers, "data": what}
    if not gluoncv_only:
        out.update(ours_img_s=best["ours"], ratio=best["ours"] / best["gluoncv"])
        print(f"  ours {best['ours']:.2f} images/s, GluonCV {best['gluoncv']:.2f} images/s, "
              f"ratio {out['ratio']:.2f}x (target >= 1.25x)")
        if "ours bfloat16" in best:
            out.update(ours_bf16_img_s=best["ours bfloat16"], ratio_bf16=best["ours bfloat16"] / best["gluoncv"])
            print(f"  ours bfloat16 {best['ours bfloat16']:.2f} images/s, ratio {out['ratio_bf16']:.2f}x GluonCV "
                  f"float32 (target >= 2x), {best['ours bfloat16'] / best['ours']:.2f}x our float32")
    if ceiling:              # None with gluoncv_only
        b = out["budget"] = budget(ceiling, best["gluoncv"], batch)
        print(f"  1.25x GluonCV needs {b['need_gflops']:.0f} GFLOP/s of convolutions over the whole iteration "
              f"({b['need_share']:.0%} of one convolution's training ceiling, {ceiling['conv_gflops']:.0f}): "
              f"{b['budget_s']:.2f} s per iteration, of which its convolutions at the ceiling take "
              f"{b['conv_s_at_ceiling']:.2f} s, leaving {b['rest_s']:.2f} s for BatchNorm, LeakyReLU, additions, "
              f"loss, update and data")
    return out


def run(models: List[str], size: int = 320, batch: int = 8, repeats: int = 5, warmup: int = 2,
        rounds: int = 2, ceiling=None) -> Dict[str, Dict[str, float]]:
    """-> {name: {"ours_img_s", "gluoncv_img_s", "ratio"}}; GluonCV is timed in every round alongside. With
    `ceiling` (training_ceiling()), darknet53's GFLOP/s on each side too."""
    with tempfile.TemporaryDirectory() as tmp:
        steps = {}
        images = None
        for name in models:
            for amp in precisions():
                key = name if amp == "float32" else f"{name} {amp}"
                steps[key], images = our_step(name, size, batch, Path(tmp), amp)
        steps["gluoncv"] = gluoncv_step(images)
        best = {k: float("inf") for k in steps}
        for r in range(rounds):
            for key, step in steps.items():
                best[key] = min(best[key], median_seconds(step, repeats, warmup if r == 0 else 1))
    gcv = batch / best["gluoncv"]
    out = {}
    print(f"training step, batch {batch}, {size}x{size} ({repeats} steps x {rounds} rounds, median, best round)")
    print(f"  {'GluonCV yolo3_darknet53_voc':<34} {gcv:7.2f} images/s  ({best['gluoncv']:.2f} s/step)")
    for name in [k for k in steps if k != "gluoncv"]:
        ours = batch / best[name]
        out[name] = {"ours_img_s": ours, "gluoncv_img_s": gcv, "ratio": ours / gcv,
                     "ours_s_step": best[name], "gluoncv_s_step": best["gluoncv"]}
        model, _, amp = name.partition(" ")
        print(f"  {MODELS[model][1] + (' ' + amp if amp else ''):<43} {ours:7.2f} images/s  ({best[name]:.2f} "
              f"s/step)   ratio vs GluonCV darknet53 {ours / gcv:5.2f}x")
        if ceiling and name == "darknet53":
            rate = {side: img_s * ceiling["gflop_per_image"] for side, img_s in (("ours", ours), ("gluoncv", gcv))}
            out[name].update({f"{side}_gflops": v for side, v in rate.items()})
            print(f"  darknet53 convolutions per training image {ceiling['gflop_per_image']:.1f} GFLOP: ours "
                  f"{rate['ours']:.0f} GFLOP/s, GluonCV {rate['gluoncv']:.0f} GFLOP/s; one convolution's training "
                  f"ceiling {ceiling['conv_gflops']:.0f} GFLOP/s")
    return out


def epoch_seconds(root: Path, rounds: int = 1) -> Dict[str, Dict[str, float]]:
    """One training epoch of recipes/bccd_tiny.yaml on the VOC folder `root` as `gluon-yolo3 train` runs it
    (validation and checkpoints off), per precision: -> {amp: {"seconds", "img_s", "steps"}}; one warm-up
    epoch each (hybridization, the first multi-scale sizes), then `rounds` timed epochs alternating the
    precisions, the best counts."""
    trainers = {}
    with tempfile.TemporaryDirectory() as tmp:
        for amp in precisions():
            recipe = api.load(REPO / MODELS["darknet_tiny"][0], [
                f"data.train.root={root}", f"data.val.root={root}", "train.val_every=0",
                "train.checkpoint_every=1000", "train.epochs=1000",
                f"train.amp={'null' if amp == 'float32' else amp}"])
            trainer = trainers[amp] = Trainer(recipe, Path(tmp) / amp, progress=False, log=lambda *_: None)
            trainer.setup()
            trainer.hooks = []                      # no metrics file, no checkpoints: the epoch alone
            trainer.train_epoch()
            trainer.epoch += 1
        best = {amp: float("inf") for amp in trainers}
        for _ in range(rounds):
            for amp, trainer in trainers.items():
                mx.nd.waitall()
                start = time.perf_counter()
                trainer.train_epoch()
                mx.nd.waitall()
                best[amp] = min(best[amp], time.perf_counter() - start)
                trainer.epoch += 1
    images = len(trainers["float32"].train_set)
    out = {}
    print(f"one epoch of recipes/bccd_tiny.yaml on {root} (416 px, multi-scale, batch 16, validation off)")
    for amp, seconds in best.items():
        steps = trainers[amp].steps_per_epoch
        out[amp] = {"seconds": seconds, "steps": steps, "images": images}
        print(f"  {amp:<9} {seconds:6.1f} s  ({steps} steps, {seconds / steps:.2f} s/step)"
              + (f"   {best['float32'] / seconds:.2f}x float32" if amp != "float32" else ""))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=320, help="input size in pixels")
    parser.add_argument("--batch-size", type=int, default=8, help="images per step")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before the first round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds alternating ours and GluonCV")
    parser.add_argument("--quick", action="store_true", help="3 steps, 1 warm-up step, 1 round")
    parser.add_argument("--only", choices=sorted(MODELS), help="one of our models only")
    parser.add_argument("--pipeline", action="store_true",
                        help="also time whole iterations with each side's data pipeline (darknet53)")
    parser.add_argument("--pipeline-only", action="store_true", help="only the --pipeline figures")
    parser.add_argument("--gluoncv-only", action="store_true", help="--pipeline-only, GluonCV's side alone")
    parser.add_argument("--workers", type=int, default=common.WORKERS,
                        help="--pipeline: DataLoader worker processes on each side")
    parser.add_argument("--root", type=Path, default=common.BCCD,
                        help="--pipeline: VOC folder (default: BCCD beside the checkout); synthetic if absent")
    parser.add_argument("--epoch-only", action="store_true",
                        help="only time one epoch of the tiny BCCD recipe, float32 against bfloat16 (--root)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup, args.rounds = 3, 1, 1
    if args.epoch_only:             # a process of its own: the darknet53 trainers above would share its memory
        out = {"epoch": epoch_seconds(args.root)}
        common.write_json(args.json, out)
        return out
    models = [args.only] if args.only else list(MODELS)
    print(f"mxnet {mx.__version__}, OMP threads {common.omp_threads()}")
    out = {}
    ceiling = None
    if not args.gluoncv_only:
        ceiling = out["ceiling"] = training_ceiling(args.size, args.batch_size)
        print(f"training ceiling: one 3x3 convolution (256 -> 512 channels, {args.size // 16}x{args.size // 16}, "
              f"batch {args.batch_size}), forward and both gradients: {ceiling['conv_gflops']:.0f} GFLOP/s; "
              f"darknet53 training step: {ceiling['gflop_per_image']:.1f} GFLOP of convolutions per image")
    if not (args.pipeline_only or args.gluoncv_only):
        out["step"] = run(models, args.size, args.batch_size, args.repeats, args.warmup, args.rounds, ceiling)
    if args.pipeline or args.pipeline_only or args.gluoncv_only:
        out["pipeline"] = run_pipeline(args.root, args.size, args.batch_size, args.workers, args.repeats,
                                       args.warmup, args.rounds, gluoncv_only=args.gluoncv_only, ceiling=ceiling)
    common.write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
