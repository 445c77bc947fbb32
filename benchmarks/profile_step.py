"""Where a training step's time goes: MXNet's profiler, aggregated by operator, ours vs GluonCV.

    python benchmarks/profile_step.py --model darknet53 --steps 2     # batch 8, 320 px, as train_step.py
    python benchmarks/profile_step.py --inference --steps 5           # batch-1 fp32 inference at 416

Prints, for each side, the operators with the largest total time over `--steps` profiled steps (after
warm-up), and the share of the step spent outside operators (Python, host syncs, idle).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# one operator per profiler row: no bulking of operators into segments (set before MXNet loads)
os.environ.setdefault("MXNET_EXEC_BULK_EXEC_TRAIN", "0")
os.environ.setdefault("MXNET_EXEC_BULK_EXEC_INFERENCE", "0")

import gluon_yolo3  # noqa: E402,F401  (before MXNet: its thread count, see gluon_yolo3/threads.py)
import mxnet as mx  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
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
        recipe = api.load(inf.REPO / "recipes/demo_tiny.yaml", inf.MODELS["darknet53"][1] + [
            "data.train.num_images=16", "data.val.num_images=4", "data.num_workers=0"])
        classes = api.class_names(recipe)
        net = api.build(recipe, len(classes))
        net.initialize(mx.init.Xavier(magnitude=2.0))
        net(mx.nd.zeros((1, 3, 416, 416)))
        weights = Path(tmp) / "w.params"
        net.save_parameters(str(weights))
        x = mx.nd.random.normal(shape=(1, 3, 416, 416))
        ours = inf.mx_call(api.load_detector(recipe, weights, classes=classes, fuse=False))
        profile(lambda: ours(x), calls, top, "ours darknet53 fp32 inference, batch 1, 416")
        if not skip_gluoncv:
            ref = inf.mx_call(inf.gluoncv_reference("darknet53", len(classes)))
            profile(lambda: ref(x), calls, top, "GluonCV darknet53 fp32 inference, batch 1, 416")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="darknet53", choices=sorted(ts.MODELS))
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--skip-gluoncv", action="store_true", help="profile ours only")
    parser.add_argument("--inference", action="store_true",
                        help="profile batch-1 fp32 inference of darknet53 at 416 (NMS included) instead")
    args = parser.parse_args()
    if args.inference:
        return profile_inference(args.steps, args.top, args.skip_gluoncv)
    with tempfile.TemporaryDirectory() as tmp:
        ours, images = ts.our_step(args.model, 320, 8, Path(tmp))
        profile(ours, args.steps, args.top, f"ours {args.model}")
        if not args.skip_gluoncv:
            profile(ts.gluoncv_step(images), args.steps, args.top, "GluonCV yolo3_darknet53_voc")


if __name__ == "__main__":
    main()
