"""Data pipeline throughput at 416: ours against GluonCV's YOLO3DefaultTrainTransform, same run.

    python benchmarks/data_pipeline.py                      # BCCD if found, else synthetic images at 416
    python benchmarks/data_pipeline.py --workers 2 --batches 30 --root /path/to/VOC

Both pipelines read the same images (the BCCD VOC folder; else synthetic shapes at 416, drawn once and
kept in memory), do the same augmentation (colour jitter, random expand, IoU-constrained random crop,
resize to 416, horizontal flip), normalise, and encode YOLOv3 training targets for Darknet-53's three
scales and the COCO anchors, in the same number of DataLoader worker processes, with the same batch size.
Ours: `TrainSamples` (vectorised numpy targets, OpenCV image ops); GluonCV's: `YOLO3DefaultTrainTransform`
with a `yolo3_darknet53_custom` net (random weights, nothing downloaded) for its target generator, batched
as its train_yolo3.py script does. Throughput is images per second over `--batches` batches after a
warm-up, in `--rounds` rounds that alternate the two pipelines (other load on the machine hits both);
the ratio is ours / GluonCV's. A third line times ours with mosaic and mixup added (not in the ratio).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional

import numpy as np

import common  # first: gluon_yolo3 before MXNet (its thread count, see common.py)
import mxnet as mx
from mxnet import gluon

from gluon_yolo3.data.feed import InputSpec
from gluon_yolo3.data.pipeline import EpochSampler, TrainSamples
from gluon_yolo3.data.synthetic import SyntheticShapes
from gluon_yolo3.data.voc import VOCDetection
from gluon_yolo3.recipe import DEFAULTS
from gluon_yolo3.targets.assigner import BestAnchorAssigner

OURS = [{"type": "color_jitter"}, {"type": "random_expand", "p": 0.5}, {"type": "random_crop", "p": 1.0},
        {"type": "random_flip"}]
OURS_MIX = [{"type": "mosaic", "p": 0.5}, {"type": "mixup", "p": 0.5}] + OURS
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class InMemory:
    """Items of a dataset drawn once and kept (synthetic images cost more to draw than to decode)."""

    def __init__(self, dataset):
        self.classes = dataset.classes
        self.items = [dataset[i] for i in range(len(dataset))]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        image, label = self.items[i]
        return image.copy(), label.copy()


def load_images(root: Optional[Path], size: int, count: int):
    """The BCCD VOC dataset when present, else `count` synthetic images of `size` x `size`, in memory."""
    if root is not None and (root / "Annotations").is_dir():
        return VOCDetection(root, splits=("trainval",)), f"BCCD ({root})"
    why = "--synthetic" if root is None else f"no dataset at {root}"
    return (InMemory(SyntheticShapes(num_images=count, image_size=size, seed=0)),
            f"synthetic shapes at {size}, drawn once and kept in memory ({why})")


class Decoded(gluon.data.Dataset):
    """GluonCV's side of the same dataset: `(image NDArray (H, W, 3) uint8, label (N, 6) float32)`."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        image, label = self.dataset[i]
        return mx.nd.array(image, dtype="uint8"), label


def gluoncv_net(classes):
    """GluonCV's `yolo3_darknet53_custom` for `classes` (random weights, nothing downloaded)."""
    return common.gluoncv_model("yolo3_darknet53_custom", classes=list(classes), pretrained_base=False)


def gluoncv_loader(dataset, size, batch_size, workers, net=None):
    """GluonCV's training loader as its train_yolo3.py builds it; `net` gives the anchors of its targets."""
    from gluoncv.data.batchify import Pad, Stack, Tuple
    from gluoncv.data.transforms.presets.yolo import YOLO3DefaultTrainTransform
    net = net if net is not None else gluoncv_net(dataset.classes)
    transform = YOLO3DefaultTrainTransform(size, size, net, mean=MEAN, std=STD)
    batchify = Tuple(*([Stack() for _ in range(6)] + [Pad(axis=0, pad_val=-1) for _ in range(1)]))
    return gluon.data.DataLoader(Decoded(dataset).transform(transform), batch_size, shuffle=True,
                                 batchify_fn=batchify, last_batch="rollover", num_workers=workers)


def our_loader(dataset, size, batch_size, workers, transforms):
    anchors = DEFAULTS["model"]["anchors"]
    assigner = BestAnchorAssigner(anchors, (8, 16, 32), len(dataset.classes))
    samples = TrainSamples(dataset, transforms, InputSpec(size, "resize", MEAN, STD), assigner, max_boxes=100,
                           seed=0)
    sampler = EpochSampler(len(samples), shuffle=True, seed=0)
    batches = gluon.data.BatchSampler(sampler, batch_size, last_batch="discard")
    return gluon.data.DataLoader(samples, batch_sampler=batches, num_workers=workers), sampler


def cpu_ms_per_image(get, count: int) -> float:
    """CPU milliseconds (this process and its threads, MXNet's engine included) per item of `get(i)`."""
    get(0)
    mx.nd.waitall()
    start = time.process_time()
    for i in range(1, count + 1):
        get(i)
    mx.nd.waitall()
    return (time.process_time() - start) * 1000 / count


def throughput(make_iter, batch_size: int, batches: int, warmup: int) -> float:
    """Images per second over `batches` batches after `warmup` batches (worker start-up excluded)."""
    seen, start, done = 0, None, 0
    while done < batches + warmup:
        for batch in make_iter():
            mx.nd.waitall()
            done += 1
            if done == warmup:
                start = time.perf_counter()
            elif done > warmup:
                seen += batch[0].shape[0]
            if done >= batches + warmup:
                break
    return seen / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=common.BCCD,
                        help="VOC folder (default: BCCD beside the checkout); synthetic images when absent")
    parser.add_argument("--size", type=int, default=416, help="network input size")
    parser.add_argument("--workers", type=int, default=common.WORKERS,
                        help="DataLoader worker processes, the same for both pipelines")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per pipeline")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timings of the two pipelines")
    parser.add_argument("--synthetic", action="store_true", help="use synthetic images even if --root exists")
    args = parser.parse_args(argv)

    count = 128                                           # synthetic images, reused across epochs
    root = None if args.synthetic else args.root
    dataset, what = load_images(root, args.size, count)
    print(f"data: {what}, {len(dataset)} images; input {args.size}; batch {args.batch_size}; "
          f"workers {args.workers}; {args.batches} timed batches after {args.warmup}")

    ours, sampler = our_loader(dataset, args.size, args.batch_size, args.workers, OURS)
    gcv = gluoncv_loader(dataset, args.size, args.batch_size, args.workers)
    # CPU cost per image in this process: insensitive to other load on the machine
    n = min(len(dataset) - 1, 60)
    ours_cpu = cpu_ms_per_image(lambda i: ours._dataset[i], n)
    gcv_cpu = cpu_ms_per_image(lambda i: gcv._dataset[i], n)
    mixed, mixed_sampler = our_loader(dataset, args.size, args.batch_size, args.workers, OURS_MIX)
    epoch = iter(range(10 ** 6))

    def epochs_of(loader, epoch_sampler):
        def make_iter():
            if epoch_sampler is not None:
                epoch_sampler.set_epoch(next(epoch))
            return iter(loader)
        return make_iter

    # rounds alternate the pipelines, so that other load on the machine hits both alike
    ours_ips, gcv_ips = [], []
    for r in range(args.rounds):
        ours_ips.append(throughput(epochs_of(ours, sampler), args.batch_size, args.batches, args.warmup))
        gcv_ips.append(throughput(epochs_of(gcv, None), args.batch_size, args.batches, args.warmup))
        print(f"round {r + 1}: ours {ours_ips[-1]:.1f} images/s, GluonCV {gcv_ips[-1]:.1f} images/s, "
              f"ratio {ours_ips[-1] / gcv_ips[-1]:.2f}x")
    mixed_ips = throughput(epochs_of(mixed, mixed_sampler), args.batch_size, args.batches, args.warmup)
    ours_med, gcv_med = float(np.median(ours_ips)), float(np.median(gcv_ips))
    print(f"{'pipeline (median over rounds)':<58} {'images/s':>9}")
    print(f"{'gluon-yolo3 TrainSamples (same augmentation + targets)':<58} {ours_med:9.1f}")
    print(f"{'GluonCV YOLO3DefaultTrainTransform (+ targets)':<58} {gcv_med:9.1f}")
    print(f"{'gluon-yolo3 with mosaic (p 0.5) and mixup (p 0.5) added':<58} {mixed_ips:9.1f}")
    print(f"CPU per image, one process (augmentation + targets): ours {ours_cpu:.1f} ms, GluonCV "
          f"{gcv_cpu:.1f} ms ({gcv_cpu / ours_cpu:.1f}x less CPU)")
    ratio = float(np.median(np.array(ours_ips) / np.array(gcv_ips)))
    print(f"ratio ours / GluonCV: {ratio:.2f}x (median of the rounds' ratios; target >= 3x)")
    return ratio


if __name__ == "__main__":
    main()
