"""From dataset items to network batches: augmentation, resize, normalisation, targets (in workers).

Sample keys carry the epoch and the input size (`key = (epoch * num_sizes + size_index) * len(dataset) +
index`; with one size, `epoch * len(dataset) + index`), so that every augmentation draw is a pure function of
(seed, epoch, index): identical in any worker process, and exact across a resume. Multi-scale training
gives every key of a batch the same size index (`MultiScaleBatchSampler`), so every device's slice of a
batch has the same shape; `build_train_batches` wires samples, sampler and batches from a recipe.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np
from mxnet import gluon, nd
from mxnet.gluon.data.dataloader import default_batchify_fn, default_mp_batchify_fn

from ..postprocess.decode import per_scale
from ..registry import ASSIGNERS
from ..schema import RecipeError
from .feed import InputSpec
from .transforms import Compose, SampleContext


def pad_boxes(boxes: np.ndarray, count: int, fill: float = -1.0) -> np.ndarray:
    """`(N, k)` -> `(count, k)`: truncate or pad with `fill`."""
    boxes = np.asarray(boxes, dtype=np.float32)
    out = np.full((count, boxes.shape[1]), fill, dtype=np.float32)
    n = min(count, len(boxes))
    out[:n] = boxes[:n]
    return out


def trim_padding(gt_boxes: nd.NDArray, multiple: int = 32) -> nd.NDArray:
    """`(B, M, 4)` boxes padded with rows of -1 (`pad_boxes`) -> `(B, M', 4)`: the first M' columns, M' one
    past the last column any image of the batch fills, rounded up to `multiple` (a few shapes for the
    hybridized loss), at most M. The ignore mask's IoU against every predicted box costs in proportion to M,
    and padding rows never match (IoU 0), so the loss is the same with fewer of them."""
    filled = np.flatnonzero((gt_boxes.asnumpy() != -1).any(axis=-1).any(axis=0))          # columns in use
    used = int(filled[-1]) + 1 if filled.size else 0
    keep = min(gt_boxes.shape[1], max(1, -(-used // multiple)) * multiple)
    return gt_boxes if keep == gt_boxes.shape[1] else gt_boxes.slice_axis(axis=1, begin=0, end=keep)


class TrainSamples(gluon.data.Dataset):
    """`samples[key] -> (x (3, S, S) float32, target (T, 10 + C), gt_boxes (max_boxes, 4))`, after the
    augmentation chain, resized and normalised as `spec` (an InputSpec) says.

    sizes: the input sizes a key's size index picks from (default `[spec.input_size]`); epochs: the run's total epochs
    (for transforms that switch off late, e.g. mixup's off_last_epochs). Multi-sample transforms (mosaic,
    mixup) draw their other images from the dataset with the sample's own generator.
    """

    def __init__(self, dataset, transforms: Sequence[Mapping], spec: InputSpec, assigner, max_boxes: int,
                 seed: int, sizes: Sequence[int] = None, epochs: int = None):
        self.dataset = dataset
        self.augment = Compose(transforms)
        self.size = int(spec.input_size)
        self.sizes = tuple(int(s) for s in (sizes or [self.size]))
        self.resizers = {s: spec.resizer(s) for s in set(self.sizes)}
        self.resize = self.resizers.get(self.size) or spec.resizer()
        self.normalize = spec.normalizer()
        self.assigner = assigner
        self.max_boxes = int(max_boxes)
        self.seed = int(seed)
        self.epochs = None if epochs is None else int(epochs)

    def __len__(self):
        return len(self.dataset)

    def decode(self, key):
        """`key -> (epoch, size index, image index)`."""
        rest, index = divmod(int(key), len(self.dataset))
        epoch, size_index = divmod(rest, len(self.sizes))
        return epoch, size_index, index

    def _other(self, rng):
        return self.dataset[int(rng.integers(len(self.dataset)))]

    def __getitem__(self, key):
        epoch, size_index, index = self.decode(key)
        size = self.sizes[size_index]
        rng = np.random.default_rng([self.seed, epoch, index])
        image, label = self.dataset[index]
        context = SampleContext(self._other, epoch=epoch, epochs=self.epochs, size=size)
        image, label = self.augment(image, label, rng, context)
        image, label = self.resizers[size](image, label, rng)
        target = self.assigner(label[:, :4], label[:, 4], (size, size))
        return self.normalize(image), target, pad_boxes(label[:, :4], self.max_boxes)


class EvalSamples(gluon.data.Dataset):
    """`samples[i] -> (x (3, S, S), label (N, 6) original pixels, geometry (6,))`, fed as `spec` (an InputSpec)
    says; batch them with `PadLabels`. With `max_boxes`, labels are cut or padded with -1 to that many rows.

    geometry = (scale_x, scale_y, offset_x, offset_y, width, height): the resize and the image's size, so that
    original boxes are `(input_box - offset) / scale`, clipped to the image (`feed.to_original`).
    """

    def __init__(self, dataset, spec: InputSpec, max_boxes: Optional[int] = None):
        self.dataset = dataset
        self.spec = spec
        self.resize = spec.resizer()
        self.normalize = spec.normalizer()
        self.max_boxes = None if max_boxes is None else int(max_boxes)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        image, label = self.dataset[index]
        x, geometry = self.spec.prepare(image, self.resize, self.normalize)
        return x, (label if self.max_boxes is None else pad_boxes(label, self.max_boxes)), geometry


class PadLabels:
    """A DataLoader's `batchify_fn` for `EvalSamples`: images and geometries stacked as MXNet's default does, labels
    padded with -1 rows to the largest count of the batch, so that every annotated box reaches the metric.
    `workers`: the batches are made in DataLoader workers (shared memory, as MXNet's default there)."""

    def __init__(self, workers: bool = False):
        self.stack = default_mp_batchify_fn if workers else default_batchify_fn

    def __call__(self, items):
        xs, labels, geometry = zip(*items)
        rows = max([1] + [len(label) for label in labels])
        padded = [pad_boxes(np.asarray(label, np.float32).reshape(-1, 6), rows) for label in labels]
        return self.stack(list(xs)), self.stack(padded), self.stack(list(geometry))


class EpochSampler(gluon.data.Sampler):
    """Keys `epoch * n + index` in a seeded shuffle per epoch; `set_epoch` before each pass.

    With `num_shards > 1` (several workers in a distributed job) each shard takes every
    `num_shards`-th key of the same permutation, and all shards yield the same count.
    """

    def __init__(self, length: int, shuffle: bool = True, seed: int = 0, shard: int = 0,
                 num_shards: int = 1):
        self.length = int(length)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.shard = int(shard)
        self.num_shards = int(num_shards)
        self.epoch = 0

    def set_epoch(self, epoch: int):
        self.epoch = int(epoch)

    def __iter__(self):
        order = np.arange(self.length)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch, 7]).permutation(self.length)
        per_shard = self.length // self.num_shards
        order = order[self.shard::self.num_shards][:per_shard]
        return iter((self.epoch * self.length + order).tolist())

    def __len__(self):
        return self.length // self.num_shards


class MultiScaleBatchSampler(gluon.data.Sampler):
    """Batches of an `EpochSampler`'s keys, every batch at one input size, a new size every `every` batches.

    The size index of batch b is drawn uniformly from `num_sizes` by a generator seeded with
    (seed, epoch, b // every): the same in every process and across a resume. Keys are re-encoded as
    `(epoch * num_sizes + size_index) * n + index` (what `TrainSamples.decode` reads). The last incomplete
    batch is dropped (`last_batch="discard"`) or kept (`"keep"`).
    """

    def __init__(self, sampler: EpochSampler, batch_size: int, num_sizes: int, every: int = 10,
                 seed: int = 0, last_batch: str = "discard"):
        if batch_size < 1 or num_sizes < 1 or every < 1:
            raise ValueError(f"multi-scale: need batch_size, num_sizes and every >= 1, got "
                             f"{batch_size}, {num_sizes}, {every}")
        if last_batch not in ("discard", "keep"):
            raise ValueError(f"last_batch must be 'discard' or 'keep', got {last_batch!r}")
        self.sampler, self.batch_size, self.num_sizes = sampler, int(batch_size), int(num_sizes)
        self.every, self.seed, self.last_batch = int(every), int(seed), last_batch

    def size_index(self, epoch: int, batch: int) -> int:
        """The size index of batch number `batch` (0-based) of `epoch`."""
        if self.num_sizes == 1:
            return 0
        group = batch // self.every
        return int(np.random.default_rng([self.seed, epoch, group, 13]).integers(self.num_sizes))

    def __iter__(self):
        n, epoch = self.sampler.length, self.sampler.epoch
        keys = list(iter(self.sampler))
        for b in range(len(self)):
            chunk = keys[b * self.batch_size:(b + 1) * self.batch_size]
            s = self.size_index(epoch, b)
            yield [((k // n) * self.num_sizes + s) * n + k % n for k in chunk]

    def __len__(self):
        count = len(self.sampler)
        if self.last_batch == "keep":
            return (count + self.batch_size - 1) // self.batch_size
        return count // self.batch_size


def multi_scale_sizes(cfg: Mapping[str, Any], input_size: int, stride: int = 32):
    """Input sizes of `data.multi_scale` (`min_size`..`max_size`, multiples of `stride`); `[input_size]` when off."""
    lo, hi = cfg.get("min_size"), cfg.get("max_size")
    if lo is None and hi is None:
        return [int(input_size)]
    if lo is None or hi is None:
        raise ValueError("data.multi_scale needs both min_size and max_size (or neither)")
    lo, hi = int(lo), int(hi)
    if lo % stride or hi % stride or not 0 < lo <= hi:
        raise ValueError(f"data.multi_scale: min_size {lo} and max_size {hi} must be multiples of {stride} "
                         "with min_size <= max_size")
    return list(range(lo, hi + 1, stride))


def build_train_batches(recipe: Mapping[str, Any], dataset, assigner, batch_size: int, seed: int,
                        shard: int = 0, num_shards: int = 1):
    """`(samples, sampler, batch_sampler)` for training a recipe: TrainSamples with the recipe's transforms,
    multi-scale sizes and epochs, an `EpochSampler` (call `set_epoch` each epoch) and the batch sampler."""
    data = recipe["data"]
    size = int(recipe["model"]["input_size"])
    ms = data.get("multi_scale") or {}
    sizes = multi_scale_sizes(ms, size, stride=max(assigner.strides))
    samples = TrainSamples(dataset, data["transforms"], InputSpec.from_recipe(recipe), assigner, data["max_boxes"],
                           seed, sizes=sizes, epochs=recipe["train"]["epochs"])
    sampler = EpochSampler(len(samples), shuffle=True, seed=seed, shard=shard, num_shards=num_shards)
    batches = MultiScaleBatchSampler(sampler, batch_size, len(sizes), every=int(ms.get("every", 10)),
                                     seed=seed)
    return samples, sampler, batches


def build_assigner(recipe: Mapping[str, Any], anchors, strides, num_classes: int):
    """The recipe's assigner; RecipeError where its neighbour cells lie beyond what the decoder reaches."""
    assigner = ASSIGNERS.build(recipe["assigner"], anchors=anchors, strides=strides, num_classes=num_classes)
    reach = min(per_scale(recipe["model"].get("scale_x_y", 1.0), len(anchors)))
    if getattr(assigner, "neighbours", False) and reach < 2:
        raise RecipeError(f"assigner.neighbours: true trains centres up to half a cell outside each cell, which "
                          f"the decoder reaches only with model.scale_x_y >= 2 (got {recipe['model'].get('scale_x_y')})")
    return assigner
