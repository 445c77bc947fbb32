"""Inference latency, batch 1 and 8: MXNet fp32, bf16 and int8 (oneDNN), onnxruntime fp32 and int8, OpenVINO fp32,
bf16 and int8, GluonCV fp32 beside.

    python benchmarks/inference.py                    # the demo (128 px), yolov3-tiny and yolov3 / darknet53 at 416
    python benchmarks/inference.py --runs 50 --only demo --batch-sizes 1
    python benchmarks/inference.py --json out.json    # the figures as JSON too

Every model is called end to end on a preprocessed `(B, 3, S, S)` input, NMS included, outputs copied to numpy:
MXNet fp32 (the hybridized YOLOv3 block, `api.load_detector(..., fuse=False)`; "fused": oneDNN's conv + BN +
LeakyReLU fusion, what `eval`, `predict` and `load_detector` run by default on one CPU), MXNet bf16
(`load_detector(..., precision="bfloat16")`: convolutions in bfloat16 on AMX, no calibration; on CPUs with
bfloat16 only), MXNet int8
(`gluon-yolo3 quantize`: int8 trunk, fp32 decode + NMS; calibrated on 16 synthetic images), onnxruntime fp32
(`gluon-yolo3 export --format onnx --no-dynamic --batch-size B`, then the numpy NMS),
onnxruntime int8 (`gluon-yolo3 quantize --runtime onnxruntime --batch-size B`, 16 images, then the numpy NMS),
OpenVINO fp32 and bf16 (`gluon-yolo3 export --format openvino [--precision bfloat16]`: one IR for any shape,
compiled for the input's shape at its first call, then the numpy NMS) and int8 (`gluon-yolo3 quantize --runtime
openvino`, 16 images), and GluonCV's darknet53 YOLO3 in fp32 (random weights, nothing downloaded) as the outside
reference (GluonCV has no yolov3-tiny). MXNet runs with gluon_yolo3's OpenMP settings (threads.py: one thread per
core, spinning briefly before sleeping); onnxruntime's idle threads do not spin, or they would take the cores from
MXNet in the same process (alone in a process, with spinning, it may be a little faster); OpenVINO runs one stream
on one thread per core (PERFORMANCE_HINT LATENCY). Latency is the median over `--runs` calls after warm-up, in
`--rounds` rounds that alternate the runtimes (other load on the machine hits all of them); ratios are fp32 /
other. "load + first call": the seconds from loading the model (its files written beforehand) to the end of its
first call at that batch size, in this process (graph building, compilation, planning). Weights are random
(latency does not depend on their values); the NMS sees few candidates above its score threshold with random
weights, as with a trained model on most images.

For darknet53 GluonCV is timed twice: plain hybridized, and fused by oneDNN (`optimize_for(x,
backend='MKLDNN')`). GFLOP/s achieved = (GFLOP per image x batch) / latency, the GFLOP counted from our
network's convolution shapes (2 x multiply-adds; GluonCV's darknet53 YOLOv3 is quoted at 65.9 per 416
image), the same count for every runtime of a model. Beside it, the GFLOP/s of one large 3x3 convolution
alone (`speed.timing.conv_ceiling`): roughly what fp32 convolutions reach on the machine at best.
"""
from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from pathlib import Path

import numpy as np

import common  # first: gluon_yolo3 before MXNet (its thread count, see common.py)
import mxnet as mx

from common import REPO, mx_call
from gluon_yolo3 import amx, api
from gluon_yolo3.deploy.export import export_onnx
from gluon_yolo3.deploy.onnx_int8 import quantize_onnx
from gluon_yolo3.deploy.openvino_ir import export_openvino, quantize_openvino
from gluon_yolo3.deploy.quantize import quantize_detector
from gluon_yolo3.inference.deployed import OnnxDetector, load_deployed, load_quantized
from gluon_yolo3.speed.timing import conv_ceiling, conv_gflop, median_seconds

NUMPY_INPUT = ("onnxruntime", "openvino")      # runtimes fed numpy arrays; MXNet gets an NDArray

COCO_ANCHORS = "[[[10, 13], [16, 30], [33, 23]], [[30, 61], [62, 45], [59, 119]], [[116, 90], [156, 198], [373, 326]]]"
TINY_ANCHORS = "[[[10, 14], [23, 27], [37, 58]], [[81, 82], [135, 169], [344, 319]]]"
MODELS = {
    "demo": ("demo recipe (thin yolov3-tiny, 128 px)", []),
    "yolov3_tiny": ("yolov3-tiny, 416 px", [
        "model.backbone={type: darknet_tiny, width: 1.0}", "model.neck={type: yolov3_tiny, width: 1.0}",
        f"model.anchors={TINY_ANCHORS}", "model.input_size=416", "data.train.image_size=416",
        "data.val.image_size=416"]),
    "darknet53": ("yolov3 / darknet53, 416 px", [
        "model.backbone={type: darknet53}", "model.neck={type: yolov3}", f"model.anchors={COCO_ANCHORS}",
        "model.input_size=416", "data.train.image_size=416", "data.val.image_size=416"]),
}


def gluoncv_reference(num_classes: int):
    """GluonCV's YOLO3 of darknet53 (it has no tiny model)."""
    net = common.gluoncv_model("yolo3_darknet53_custom", classes=[str(i) for i in range(num_classes)],
                               pretrained_base=False)
    net.hybridize(static_alloc=True, static_shape=True)
    return net


def gluoncv_fused(num_classes: int, x):
    """GluonCV's darknet53 YOLO3 with its graph partitioned and fused by oneDNN (`optimize_for`)."""
    net = gluoncv_reference(num_classes)
    net.optimize_for(x, backend="MKLDNN", static_alloc=True, static_shape=True)
    return net


def random_model(name: str, folder: Path):
    """The recipe of MODELS[name] and random weights for it (seed 0) saved in `folder`: -> (recipe, classes,
    weights path)."""
    recipe = api.load(REPO / "recipes/demo_tiny.yaml", MODELS[name][1] + [
        "data.train.num_images=16", "data.val.num_images=4", "data.num_workers=0"])
    classes = api.class_names(recipe)
    size = int(recipe["model"]["input_size"])
    net = api.build(recipe, len(classes))
    mx.random.seed(0)
    net.initialize(mx.init.Xavier(magnitude=2.0))
    net(mx.nd.zeros((1, 3, size, size)))
    weights = Path(folder) / f"{name}.params"
    net.save_parameters(str(weights))
    return recipe, classes, weights


def our_runtimes(name: str, recipe, classes, weights, folder: Path, batch: int):
    """{label: load()} of every runtime of ours for MODELS[name] at `batch`; load() -> call(x) (numpy x for
    onnxruntime and OpenVINO, an NDArray otherwise). Writes the files they read into `folder` (once per model;
    the ONNX files once per batch size: a fixed shape, as onnxruntime's int8 needs)."""
    bf16 = amx.cpu_bf16() is not None
    if not (folder / f"{name}_int8").is_dir():
        quantize_detector(recipe, weights, folder / f"{name}_int8", calib=16)
        export_openvino(recipe, weights, folder / f"{name}_ov")
        quantize_openvino(recipe, weights, folder / f"{name}_ov_int8", calib=16)
        if bf16:
            export_openvino(recipe, weights, folder / f"{name}_ov_bf16", precision="bfloat16")
    onnx_path = export_onnx(recipe, weights, folder / f"{name}_onnx{batch}", batch_size=batch, dynamic=False)["onnx"]
    int8_path = quantize_onnx(recipe, weights, folder / f"{name}_onnx_int8_{batch}", calib=16, batch_size=batch)["onnx"]
    loads = {
        "mxnet fp32": lambda: mx_call(api.load_detector(recipe, weights, classes=classes, fuse=False)),
        "mxnet fp32 fused": lambda: mx_call(api.load_detector(recipe, weights, classes=classes, fuse=True)),
        "mxnet int8": lambda: mx_call(load_quantized(folder / f"{name}_int8")),
        "mxnet bf16": lambda: mx_call(api.load_detector(recipe, weights, classes=classes, precision="bfloat16")),
        "onnxruntime": lambda: OnnxDetector(onnx_path, spinning=False),
        "onnxruntime int8": lambda: OnnxDetector(int8_path, spinning=False),
        "openvino": lambda: load_deployed(folder / f"{name}_ov"),
        "openvino bf16": lambda: load_deployed(folder / f"{name}_ov_bf16"),
        "openvino int8": lambda: load_deployed(folder / f"{name}_ov_int8"),
    }
    return {k: v for k, v in loads.items() if bf16 or not k.endswith("bf16")}


def bench(name: str, runs: int, rounds: int, folder: Path, batch_sizes=(1,), gluoncv_only: bool = False):
    title = MODELS[name][0]
    recipe, classes, weights = random_model(name, folder)
    size = int(recipe["model"]["input_size"])
    gflop = conv_gflop(api.build(recipe, len(classes)), size)
    out = {"title": title, "gflop_per_image": gflop, "batches": {}, "conv_ceiling_gflops": {}}
    for batch in batch_sizes:
        x = mx.nd.array(np.random.default_rng(0).normal(0, 1, (batch, 3, size, size)).astype(np.float32))
        xn = x.asnumpy()
        loads = {} if gluoncv_only else our_runtimes(name, recipe, classes, weights, folder, batch)
        if name == "darknet53":
            loads["gluoncv fp32"] = lambda: mx_call(gluoncv_reference(len(classes)))
            loads["gluoncv fused"] = lambda: mx_call(gluoncv_fused(len(classes), x))
        runtimes, first = {}, {}
        for key, load in loads.items():        # load and first call: graph building, compilation, planning
            arg = xn if key.startswith(NUMPY_INPUT) else x
            start = time.perf_counter()
            runtimes[key] = load()
            runtimes[key](arg)
            first[key] = time.perf_counter() - start
        results = {k: [] for k in runtimes}
        for _ in range(rounds):
            for key, call in runtimes.items():
                arg = xn if key.startswith(NUMPY_INPUT) else x
                results[key].append(median_seconds(lambda: call(arg), runs, warmup=3))
        latency = {k: min(v) for k, v in results.items()}
        ceiling = out["conv_ceiling_gflops"][str(batch)] = conv_ceiling(batch, 26)  # darknet53 stage 4, 416 px
        print(f"\n{title}, batch {batch} ({runs} runs x {rounds} rounds, median per round, best round); "
              f"{gflop:.3g} GFLOP per image; one large 3x3 convolution alone: {ceiling:.0f} GFLOP/s")
        base = latency["mxnet fp32"] if "mxnet fp32" in latency else latency["gluoncv fp32"]
        gcv = latency.get("gluoncv fp32")
        rows = {}
        for key, value in latency.items():
            rows[key] = {"ms": value * 1000, "gflops": gflop * batch / value, "first_call_s": first[key],
                         "vs_gluoncv_fp32": (gcv / value) if gcv else None}
            print(f"  {key:<17} {value * 1000:9.2f} ms   {gflop * batch / value:6.1f} GFLOP/s   "
                  f"fp32/this {base / value:5.2f}x" + (f"   GluonCV fp32/this {gcv / value:5.2f}x" if gcv else "")
                  + f"   load + first call {first[key]:6.2f} s")
        out["batches"][str(batch)] = rows
        runtimes = loads = call = load = None       # the last loop values hold a model too
        gc.collect()        # Gluon blocks hold reference cycles: free this batch's models before the next ones load
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed calls per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds alternating the runtimes")
    parser.add_argument("--only", choices=sorted(MODELS), help="benchmark one model only")
    parser.add_argument("--batch-sizes", default="1,8", help="comma-separated batch sizes (default 1,8)")
    parser.add_argument("--gluoncv-only", action="store_true",
                        help="GluonCV's darknet53 alone (run_all.py: GluonCV at MXNet's default thread count)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    print(f"mxnet {mx.__version__}, oneDNN {mx.runtime.Features().is_enabled('MKLDNN')}, "
          f"OMP threads {common.omp_threads()}, "
          f"oneDNN ISA cap {os.environ.get('DNNL_MAX_CPU_ISA', 'default')} (AMX for int8: gluon_yolo3/amx.py)")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    out = {}
    names = ["darknet53"] if args.gluoncv_only else [args.only] if args.only else list(MODELS)
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            out[name] = bench(name, args.runs, args.rounds, Path(tmp), batch_sizes, args.gluoncv_only)
    common.write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
