"""Speed of a recipe on this machine: training throughput (data pipeline included) and inference latency.

`gluon-yolo3 benchmark RECIPE` prints both; `benchmarks/` compares against GluonCV side by side. Figures are
wall-clock medians after warm-up, so they move with other load on the machine.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import mxnet as mx
from mxnet import autograd
import numpy as np

from ..engine.trainer import Trainer
from ..inference.decoded import NumpyNMSDetector
from ..inference.deployed import deployed_label, load_deployed
from ..inference.detector import class_names, load_detector
from ..models.detector import build_detector


def conv_gflop(net, size: int, training: bool = False) -> float:
    """GFLOP (2 x multiply-adds, as Darknet counts) of every convolution of `net` for one `size`^2 image.

    `training`: a training step's convolutions, forward and backward: the forward, the weight gradient
    (as many multiply-adds), and the input gradient (as many again) of every convolution except those that
    read the image itself, which needs no gradient."""
    sym = net(mx.sym.var("data"))
    sym = mx.sym.Group(list(sym)) if isinstance(sym, (list, tuple)) else sym
    internals = sym.get_internals()
    _, shapes, _ = internals.infer_shape(data=(1, 3, size, size))
    out_shape = dict(zip(internals.list_outputs(), shapes))
    arg_shape = dict(zip(sym.list_arguments(), sym.infer_shape(data=(1, 3, size, size))[0]))
    nodes = json.loads(sym.tojson())["nodes"]
    total = 0.0
    for node in nodes:
        if node["op"] == "Convolution":
            weight = arg_shape[nodes[node["inputs"][1][0]]["name"]]
            out = out_shape[node["name"] + "_output"]
            forward = 2.0 * float(np.prod(weight)) * out[2] * out[3]
            if training:
                reads_image = nodes[node["inputs"][0][0]]["name"] == "data"
                forward *= 2 if reads_image else 3
            total += forward
    return total / 1e9


def median_seconds(call: Callable[[], Any], runs: int, warmup: int = 2) -> float:
    """Median wall time of `call()` over `runs` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def conv_ceiling(batch: int, side: int, backward: bool = False, runs: int = 10) -> float:
    """GFLOP/s of one large 3x3 convolution alone, darknet53's 256 -> 512 channels on a `side` x `side` map
    (its stage-4 shape: 26 at 416 px, 20 at 320), batch `batch`, hybridized as the detectors are: roughly what
    fp32 convolutions reach on this machine at best. `backward`: forward, input gradient and weight gradient
    together (3x the forward's FLOPs), as in a training step."""

    conv = mx.gluon.nn.Conv2D(512, 3, padding=1, in_channels=256, use_bias=False)
    conv.initialize()
    conv.hybridize(static_alloc=True, static_shape=True)
    x = mx.nd.random.normal(shape=(batch, 256, side, side))
    if backward:
        x.attach_grad()
        head_grad = mx.nd.random.normal(shape=(batch, 512, side, side))

        def call():
            with autograd.record():
                y = conv(x)
            y.backward(head_grad)
            mx.nd.waitall()
    else:
        def call():
            conv(x).wait_to_read()
    seconds = median_seconds(call, runs, warmup=3)
    return (3 if backward else 1) * 2 * batch * side * side * 512 * 256 * 9 / seconds / 1e9


def batch_latency(detector, size: int, batch_sizes: Sequence[int], runs: int, ctx=None,
                  gflop_per_image: Optional[float] = None) -> Dict[int, Dict[str, float]]:
    """Median latency of `detector(x)` with its outputs copied to numpy, x `(B, 3, size, size)` random
    float32 for each B: an NDArray on `ctx`, or numpy without one. -> {B: {"ms", "img_s"[, "gflops"]}}."""
    rng = np.random.default_rng(0)
    rows: Dict[int, Dict[str, float]] = {}
    for batch in batch_sizes:
        x = rng.normal(0, 1, (batch, 3, size, size)).astype(np.float32)
        x = x if ctx is None else mx.nd.array(x, ctx=ctx)
        seconds = median_seconds(lambda: [o.asnumpy() if hasattr(o, "asnumpy") else np.asarray(o)
                                          for o in detector(x)], runs)
        row = rows[int(batch)] = {"ms": seconds * 1000, "img_s": batch / seconds}
        if gflop_per_image:
            row["gflops"] = gflop_per_image * batch / seconds
    return rows


def deployed_latency(path, batch_sizes: Sequence[int] = (1, 8), runs: int = 10, ctx=None,
                     size: Optional[int] = None, gflop_per_image: Optional[float] = None) -> Dict[str, Any]:
    """Latency of an exported or quantized model (`inference.deployed.load_deployed`: an int8 folder, an MXNet or
    OpenVINO export folder, an .onnx file), NMS included, outputs copied to numpy, at its input size (ValueError if
    `size` is given and differs). onnxruntime and OpenVINO get numpy input; an ONNX model exported at a fixed batch
    runs larger batches chunk by chunk.
    -> {"model" (deployed_label), "size", "batches": {B: {"ms", "img_s"[, "gflops"]}}}."""
    detector = load_deployed(path, ctx)
    if size is not None and int(detector.info["input_size"]) != int(size):
        raise ValueError(f"'{path}' was exported at {detector.info['input_size']} px, not {size}: time it with "
                         f"the recipe it was exported from")
    size = int(detector.info["input_size"])
    as_numpy = isinstance(detector, NumpyNMSDetector)
    return {"model": deployed_label(detector.info), "size": size,
            "batches": batch_latency(detector, size, batch_sizes, runs, None if as_numpy else (ctx or mx.cpu()),
                                     gflop_per_image)}


def inference_latency(recipe: Mapping[str, Any], weights=None, batch_sizes: Sequence[int] = (1, 8),
                      runs: int = 10, fuse: Optional[bool] = None, contexts=None,
                      precision: Optional[str] = None) -> Dict[str, Any]:
    """Latency of the hybridized detector (NMS included, outputs copied to numpy) at the recipe's input size,
    fused or not as `load_detector(fuse=...)` decides.

    Without `weights` the network has random weights (latency does not depend on their values).
    -> {"gflop_per_image", "size", "fused", "batches": {B: {"ms", "img_s", "gflops"}}}."""
    classes = class_names(recipe, weights)
    size = int(recipe["model"]["input_size"])
    contexts = contexts or [mx.cpu()]
    with tempfile.TemporaryDirectory() as tmp:
        if weights is None:
            net = build_detector(recipe, len(classes))
            net.initialize(mx.init.Xavier(magnitude=2.0), ctx=contexts)
            net(mx.nd.zeros((1, 3, size, size), ctx=contexts[0]))
            weights = Path(tmp) / "random.params"
            net.save_parameters(str(weights))
        detector = load_detector(recipe, weights, contexts=contexts, classes=classes, fuse=fuse, precision=precision)
    gflop = conv_gflop(build_detector(recipe, len(classes)), size)
    return {"gflop_per_image": gflop, "size": size, "fused": detector.fused, "precision": precision or "float32",
            "batches": batch_latency(detector, size, batch_sizes, runs, contexts[0], gflop)}


def training_throughput(recipe: Mapping[str, Any], steps: int = 10, warmup: int = 3, devices=None,
                        folder: Optional[Path] = None) -> Dict[str, Any]:
    """Images per second of the recipe's training iterations: its own loader (workers, augmentation,
    targets), forward, loss, backward and update, as `train` runs them, over `steps` iterations after
    `warmup`. -> {"img_s", "s_per_step", "data_wait_s" (per step, time blocked on the loader), ...}."""
    warmup = max(2, int(warmup))            # the first two steps build the forward and backward graphs
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(recipe, Path(folder or tmp) / "benchmark", devices=devices, progress=False,
                          log=lambda *_: None)
        trainer.setup()
        done, epoch, waited, start = 0, 0, 0.0, None
        while done < warmup + steps:
            trainer.sampler.set_epoch(epoch)
            epoch += 1
            batches = iter(trainer.loader)
            while done < warmup + steps:
                before = time.perf_counter()
                item = next(batches, None)
                if item is None:
                    break
                if start is not None:
                    waited += time.perf_counter() - before
                trainer.train_step(*item)       # returns once the loss is known; backward and update may run on
                done += 1
                if done == warmup:
                    mx.nd.waitall()                 # so the clock starts and stops on an idle engine
                    start = time.perf_counter()
        mx.nd.waitall()
        seconds = time.perf_counter() - start
    batch = trainer.global_batch
    return {"img_s": steps * batch / seconds, "s_per_step": seconds / steps, "data_wait_s": waited / steps,
            "batch_size": batch, "steps": steps, "devices": [str(c) for c in trainer.contexts],
            "workers": int(recipe["data"]["num_workers"])}
