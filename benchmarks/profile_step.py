"""Where a training step's time goes: MXNet's profiler, aggregated by operator, ours vs GluonCV.

    python benchmarks/profile_step.py --model darknet53 --steps 2     # batch 8, 320 px, as train_step.py
    python benchmarks/profile_step.py --inference --steps 5           # batch-1 fp32 inference at 416
    python benchmarks/profile_step.py --onednn --steps 2              # our training step, per oneDNN primitive
    python benchmarks/profile_step.py --onednn --amp bfloat16         # the same step in bfloat16 (train.amp)
    python benchmarks/profile_step.py --onednn --inference --batch 8  # the fused fp32 graph, per oneDNN primitive
    python benchmarks/profile_step.py --onednn --inference --int8     # the MXNet int8 graph, per oneDNN primitive

Prints, for each side, the operators with the largest total time over `--steps` profiled steps (after
warm-up), and the share of the step spent outside operators (Python, host syncs, idle).

`--onednn` times our training step (batch 8, 320 px), or with `--inference` our fused fp32 detector (what
`eval` and `predict` run; `--int8`: the MXNet int8 one) at 416, through oneDNN's own log (`DNNL_VERBOSE=1`):
each primitive's execution time, the convolutions grouped by direction and shape with their GFLOP/s, the
reorders between memory formats, beside one large 3x3 convolution alone (`conv_ceiling`, darknet53's 256 ->
512 channels at its stage-4 map, forward and both gradients for training): how close the network's
convolutions come to what this machine's fp32 convolutions reach, and what is left outside them.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import os
import re
import sys
import tempfile
import time
from pathlib import Path

# one operator per profiler row: no bulking of operators into segments (set before MXNet loads)
os.environ.setdefault("MXNET_EXEC_BULK_EXEC_TRAIN", "0")
os.environ.setdefault("MXNET_EXEC_BULK_EXEC_INFERENCE", "0")
if "--onednn" in sys.argv:
    os.environ["DNNL_VERBOSE"] = "1"            # read once, when oneDNN runs its first primitive

import common  # noqa: E402  (after the variables above; gluon_yolo3 before MXNet, see common.py)
import mxnet as mx  # noqa: E402

import train_step as ts  # noqa: E402


def profile(step, steps: int, top: int, title: str):
    step()
    step()
    mx.profiler.set_config(profile_all=True, aggregate_stats=True, filename="/tmp/gluon_yolo3_profile.json")
    mx.profiler.set_state("run")
    start = time.perf_counter()
    for _ in range(steps):
        step()
    wall = time.perf_counter() - start
    mx.profiler.set_state("stop")
    text = mx.profiler.dumps(reset=True, format="table", sort_by="total", ascending=False)
    print(f"\n== {title}: {wall / steps:.2f} s per step (profiled)")
    rows = [line for line in text.splitlines() if line.strip()]
    ops = rows[rows.index("operator"):]
    print("\n".join(ops[:top + 3]))


def profile_inference(calls: int, top: int, skip_gluoncv: bool):
    import inference as inf
    from gluon_yolo3 import api
    with tempfile.TemporaryDirectory() as tmp:
        recipe, classes, weights = inf.random_model("darknet53", Path(tmp))
        x = mx.nd.random.normal(shape=(1, 3, 416, 416))
        ours = common.mx_call(api.load_detector(recipe, weights, classes=classes, fuse=False))
        profile(lambda: ours(x), calls, top, "ours darknet53 fp32 inference, batch 1, 416")
        if not skip_gluoncv:
            ref = common.mx_call(inf.gluoncv_reference(len(classes)))
            profile(lambda: ref(x), calls, top, "GluonCV darknet53 fp32 inference, batch 1, 416")


@contextlib.contextmanager
def captured_stdout():
    """Collect what C code (oneDNN's log) writes to file descriptor 1 meanwhile: yields a list, filled on exit."""
    lines = []
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+") as log:
        os.dup2(log.fileno(), 1)
        try:
            yield lines
        finally:
            ctypes.CDLL(None).fflush(None)
            os.dup2(saved, 1)
            os.close(saved)
            log.seek(0)
            lines.extend(log.read().splitlines())


CONV_SHAPE = re.compile(r"(?:g(\d+))?mb(\d+)_?ic(\d+)oc(\d+)_.*oh(\d+)kh(\d+)sh(\d+).*ow(\d+)kw(\d+)")
REORDER_FORMATS = re.compile(r"(?:src|dst)_f32:\w*:blocked:(\w+):")


def primitive_key(fields) -> tuple:
    """-> (row name, GFLOP) of one `dnnl_verbose,exec,cpu,...` line: convolutions by direction and shape,
    reorders by formats (weights or activations), other primitives by kind and direction."""
    kind, impl, direction, desc = fields[3], fields[4], fields[5], fields[-2]
    shape = CONV_SHAPE.search(desc) if kind == "convolution" else None
    if shape:
        groups, mb, ic, oc, oh, kh, stride, ow, kw = (int(v or 1) for v in shape.groups())
        grouped = f" in {groups} groups" if groups > 1 else ""
        return (f"convolution {direction} {kh}x{kw}/{stride} {ic}->{oc}{grouped} at {oh}x{ow} ({impl})",
                2 * mb * ic * oc // groups * oh * ow * kh * kw / 1e9)
    if kind == "reorder":
        dims = desc.split("x")      # weights O x I x k x k with k <= 3; activations here are 10x10 and up
        what = "weights" if len(dims) == 4 and dims[2] == dims[3] and int(dims[3]) <= 3 else "activations"
        return f"reorder {what} {' -> '.join(REORDER_FORMATS.findall(fields[6]))}", 0.0
    return f"{kind} {direction}".replace(" undef", ""), 0.0


def onednn_table(call, calls: int, top: int, title: str, ceiling: float):
    """Run `call` `calls` times with oneDNN's log captured; print time per call by primitive (DNNL_VERBOSE=1)."""
    with captured_stdout() as log:
        start = time.perf_counter()
        for _ in range(calls):
            call()
        wall = (time.perf_counter() - start) / calls
    times, gflop, counts = collections.Counter(), collections.Counter(), collections.Counter()
    for line in log:
        fields = line.split(",")
        if line.startswith("dnnl_verbose,exec,cpu,") and len(fields) >= 7:
            key, work = primitive_key(fields)
            times[key] += float(fields[-1]) / calls
            gflop[key] += work / calls
            counts[key] += 1
    groups = collections.Counter()
    for key, ms in times.items():
        groups[" ".join(key.split()[:2]) if key.startswith(("convolution", "reorder")) else key] += ms
    conv_ms = sum(ms for key, ms in times.items() if key.startswith("convolution"))
    print(f"\n== {title}: {wall * 1e3:.1f} ms per call (with oneDNN's log on); oneDNN primitives "
          f"{sum(times.values()):.1f} ms, of which convolutions {conv_ms:.1f} ms at "
          f"{sum(gflop.values()) / conv_ms * 1e3:.0f} GFLOP/s; one large fp32 3x3 convolution alone: {ceiling:.0f} "
          "GFLOP/s")
    print("  by kind: " + ", ".join(f"{key} {ms:.1f} ms" for key, ms in groups.most_common()))
    for key, ms in times.most_common(top):
        rate = f"{gflop[key] / ms * 1e3:6.0f} GFLOP/s" if gflop[key] else " " * 14
        print(f"  {ms:8.2f} ms  {counts[key] // calls:3d}x  {rate}  {key}")


def onednn_layers(calls: int, top: int, batch: int, inference: bool, model: str, int8: bool = False,
                  amp: str = "float32"):
    """Our fused fp32 darknet53 detector at 416 (`inference`; `int8`: quantized by `quantize_detector` on 16
    synthetic images), or our training step of `model` at 320 in `amp` (float32 or bfloat16), timed per oneDNN
    primitive over `calls` calls."""
    import inference as inf
    from gluon_yolo3 import api
    from gluon_yolo3.deploy.quantize import quantize_detector
    from gluon_yolo3.inference.deployed import load_quantized
    from gluon_yolo3.speed.timing import conv_ceiling
    with tempfile.TemporaryDirectory() as tmp:
        with captured_stdout():
            if inference:
                recipe, classes, weights = inf.random_model("darknet53", Path(tmp))
                if int8:
                    quantize_detector(recipe, weights, Path(tmp) / "int8", calib=16)
                    detector = common.mx_call(load_quantized(Path(tmp) / "int8"))
                else:
                    detector = common.mx_call(api.load_detector(recipe, weights, classes=classes))   # fused: default
                x = mx.nd.random.normal(shape=(batch, 3, 416, 416))
                call = lambda: detector(x)                                                        # noqa: E731
                title = f"ours darknet53 {'int8' if int8 else 'fused fp32'} inference, batch {batch}, 416"
                ceiling = conv_ceiling(batch, 26, runs=10)
            else:
                call, _ = ts.our_step(model, 320, batch, Path(tmp), amp=amp)
                title = f"ours {model} {amp} training step, batch {batch}, 320"
                ceiling = conv_ceiling(batch, 20, backward=True, runs=10)
            for _ in range(3):
                call()
        onednn_table(call, calls, top, title, ceiling)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="darknet53", choices=sorted(ts.MODELS))
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--skip-gluoncv", action="store_true", help="profile ours only")
    parser.add_argument("--inference", action="store_true",
                        help="profile batch-1 fp32 inference of darknet53 at 416 (NMS included) instead")
    parser.add_argument("--onednn", action="store_true",
                        help="time ours per oneDNN primitive (DNNL_VERBOSE): the training step, or with --inference "
                             "the fused fp32 detector")
    parser.add_argument("--batch", type=int, help="--onednn: batch size (default 8 for training, 1 for inference)")
    parser.add_argument("--int8", action="store_true", help="--onednn --inference: the MXNet int8 detector")
    parser.add_argument("--amp", default="float32", choices=ts.precisions(),
                        help="training: our step's precision (train.amp); bfloat16 on CPUs that have it")
    args = parser.parse_args()
    if args.onednn:
        batch = args.batch or (1 if args.inference else 8)
        return onednn_layers(args.steps, args.top, batch, args.inference, args.model, args.int8, args.amp)
    if args.inference:
        return profile_inference(args.steps, args.top, args.skip_gluoncv)
    with tempfile.TemporaryDirectory() as tmp:
        ours, images = ts.our_step(args.model, 320, 8, Path(tmp), amp=args.amp)
        profile(ours, args.steps, args.top, f"ours {args.model} {args.amp}")
        if not args.skip_gluoncv:
            profile(ts.gluoncv_step(images), args.steps, args.top, "GluonCV yolo3_darknet53_voc")


if __name__ == "__main__":
    main()
