"""Frames per second of predicting on a video, decoding included: darknet53 YOLOv3 at 416 px on a generated
416 x 416 H.264 video, ours against GluonCV's YOLOv3 in the same loop.

    python benchmarks/video.py                          # 64 frames, 2 rounds
    python benchmarks/video.py --frames 16 --rounds 1 --json out.json

Every variant decodes the same file with the same reader (PyAV, `inference/video.py`) and ends with the
detections in numpy; weights are random (speed does not depend on them). Ours: `Predictor.stream`, which decodes
and prepares the next batch in a worker thread while the network runs batches of `--batch-size` (what
`predict` does), with the fused fp32 graph (the default of `predict`) and with the MXNet int8 model (`quantize`,
16 calibration images); and, to show what the loop adds, the fused graph frame by frame in one thread (read,
`predict_one`). GluonCV: its YOLO3 (`yolo3_darknet53_custom`) frame by frame, as its video demos run it
(`presets.yolo.transform_test`, then the network, one frame at a time), and the same network passed to our
stream as a runtime (`Predictor(spec, net)`), which shows how much of the gain is the loop's. The figure is the
best of `--rounds` rounds, the variants alternating within a round.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import common  # first: gluon_yolo3 before MXNet (its thread count, see common.py)
import mxnet as mx

from inference import gluoncv_reference, random_model
from gluon_yolo3 import api
from gluon_yolo3.data.feed import InputSpec
from gluon_yolo3.deploy.quantize import quantize_detector
from gluon_yolo3.inference.deployed import deployed_predictor
from gluon_yolo3.inference.predictor import Predictor
from gluon_yolo3.inference.sources import Sources, read_frames
from gluon_yolo3.inference.video import VideoWriter

SIZE = 416
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))   # GluonCV's transform_test normalisation


def write_video(path: Path, frames: int, size: int = SIZE, fps: int = 25) -> Path:
    """A `size` x `size` H.264 video: a colour gradient with three squares moving across it."""
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx * 255 // size, yy * 255 // size, np.full_like(xx, 128)], -1).astype(np.uint8)
    with VideoWriter(path, fps, (size, size)) as out:
        for i in range(frames):
            image = base.copy()
            for k, colour in enumerate(((255, 255, 255), (20, 20, 20), (250, 40, 40))):
                x = (40 + i * (3 + k) + 120 * k) % (size - 90)
                image[60 + 110 * k:140 + 110 * k, x:x + 80] = colour
            out.write(image)
    return path


def streamed(predictor, video: Path, batch: int):
    def run():
        return sum(1 for _ in predictor.stream([video], batch_size=batch))
    return run


def frame_by_frame(predictor, video: Path):
    def run():
        return sum(1 for frame in read_frames(Sources([video]).items) if predictor.predict_one(frame.image))
    return run


def gluoncv_loop(net, video: Path):
    """GluonCV's own way: each frame through presets.yolo.transform_test and the network, one at a time."""
    from gluoncv.data.transforms.presets.yolo import transform_test

    def run():
        count = 0
        for frame in read_frames(Sources([video]).items):
            x, _ = transform_test(mx.nd.array(frame.image), short=SIZE)
            ids, scores, boxes = [o.asnumpy() for o in net(x)]
            count += 1
        return count
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64, help="frames in the generated video")
    parser.add_argument("--rounds", type=int, default=2, help="rounds alternating the variants")
    parser.add_argument("--batch-size", type=int, default=8, help="our stream's batch size")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = write_video(tmp / "video.mp4", args.frames)
        recipe, classes, weights = random_model("darknet53", tmp)
        quantize_detector(recipe, weights, tmp / "int8", calib=16)
        # one network per variant: a static-shape graph fed batches of 1 and 8 in turn would re-plan each time
        gcv_spec = InputSpec(SIZE, "resize", *IMAGENET, tuple(classes))
        variants = {
            "ours fused fp32, stream": streamed(api.Predictor(recipe, weights, classes=classes), video, args.batch_size),
            "ours int8, stream": streamed(deployed_predictor(tmp / "int8", recipe), video, args.batch_size),
            "ours fused fp32, frame by frame": frame_by_frame(api.Predictor(recipe, weights, classes=classes), video),
            "gluoncv fp32, frame by frame": gluoncv_loop(gluoncv_reference(len(classes)), video),
            "gluoncv fp32 in our stream": streamed(Predictor(gcv_spec, gluoncv_reference(len(classes))),
                                                   video, args.batch_size),
        }
        for run in variants.values():     # warm-up: graphs planned for both batch shapes
            run()
        seconds = {k: [] for k in variants}
        for _ in range(args.rounds):
            for key, run in variants.items():
                start = time.perf_counter()
                assert run() == args.frames
                seconds[key].append(time.perf_counter() - start)
    fps = {k: args.frames / min(v) for k, v in seconds.items()}
    reference = fps["gluoncv fp32, frame by frame"]
    print(f"\nvideo, darknet53 YOLOv3 at {SIZE} px, {args.frames} frames of {SIZE}x{SIZE} H.264, decoding included "
          f"(batch {args.batch_size} in the streams; best of {args.rounds} round(s)); OMP threads "
          f"{common.omp_threads()}")
    for key, value in fps.items():
        print(f"  {key:<34} {value:7.2f} frames/s   / GluonCV frame by frame {value / reference:5.2f}x")
    common.write_json(args.json, {"frames": args.frames, "size": SIZE, "batch_size": args.batch_size,
                                  "fps": fps, "vs_gluoncv": {k: v / reference for k, v in fps.items()}})


if __name__ == "__main__":
    main()
