"""From dataset items to network batches: augmentation, resize, normalisation, targets (in workers).

Sample keys carry the epoch (`key = epoch * len(dataset) + index`), so that every augmentation draw is
a pure function of (seed, epoch, index): identical in any worker process, and exact across a resume.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from mxnet import gluon

from ..registry import ASSIGNERS, TRANSFORMS
from .transforms import Compose


def build_resize(mode: str, size: int):
    """The transform that brings every image to `size x size` (`letterbox` or `resize`)."""
    if mode not in ("letterbox", "resize"):
        raise ValueError(f"data.resize must be 'letterbox' or 'resize', got {mode!r}")
    return TRANSFORMS.build({"type": mode, "size": size})


class ImageNormalizer:
    """`(H, W, 3) uint8 RGB` -> `(3, H, W) float32`, (x / 255 - mean) / std."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        x = image.transpose(2, 0, 1).astype(np.float32) / 255.0
        return (x - self.mean) / self.std


def pad_boxes(boxes: np.ndarray, count: int, fill: float = -1.0) -> np.ndarray:
    """`(N, k)` -> `(count, k)`: truncate or pad with `fill`."""
    boxes = np.asarray(boxes, dtype=np.float32)
    out = np.full((count, boxes.shape[1]), fill, dtype=np.float32)
    n = min(count, len(boxes))
    out[:n] = boxes[:n]
    return out


class TrainSamples(gluon.data.Dataset):
    """`samples[key] -> (x (3, S, S) float32, target (T, 10 + C), gt_boxes (max_boxes, 4))`."""

    def __init__(self, dataset, transforms: Sequence[Mapping], resize: str, size: int,
                 mean, std, assigner, max_boxes: int, seed: int):
        self.dataset = dataset
        self.augment = Compose(transforms)
        self.resize = build_resize(resize, size)
        self.normalize = ImageNormalizer(mean, std)
        self.assigner = assigner
        self.size = int(size)
        self.max_boxes = int(max_boxes)
        self.seed = int(seed)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = divmod(int(key), len(self.dataset))
        rng = np.random.default_rng([self.seed, epoch, index])
        image, label = self.dataset[index]
        image, label = self.augment(image, label, rng)
        image, label = self.resize(image, label, rng)
        target = self.assigner(label[:, :4], label[:, 4], (self.size, self.size))
        return self.normalize(image), target, pad_boxes(label[:, :4], self.max_boxes)


class EvalSamples(gluon.data.Dataset):
    """`samples[i] -> (x (3, S, S), label (max_boxes, 6) original pixels padded -1, geometry (4,))`.

    geometry = (scale_x, scale_y, offset_x, offset_y) of the resize, so that original boxes are
    `(input_box - offset) / scale`.
    """

    def __init__(self, dataset, resize: str, size: int, mean, std, max_boxes: int):
        self.dataset = dataset
        self.resize = build_resize(resize, size)
        self.normalize = ImageNormalizer(mean, std)
        self.max_boxes = int(max_boxes)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        image, label = self.dataset[index]
        resized, geometry = resize_with_geometry(self.resize, image)
        return self.normalize(resized), pad_boxes(label, self.max_boxes), geometry


def resize_with_geometry(resize, image: np.ndarray):
    """Apply a deterministic resize transform and measure its mapping on the full-image box."""
    h, w = image.shape[:2]
    probe = np.array([[0, 0, w, h, 0, 0]], dtype=np.float32)
    resized, moved = resize(image, probe, np.random.default_rng(0))
    x1, y1, x2, y2 = moved[0, :4]
    geometry = np.array([(x2 - x1) / w, (y2 - y1) / h, x1, y1], dtype=np.float32)
    return resized, geometry


def to_original(boxes: np.ndarray, geometry: np.ndarray) -> np.ndarray:
    """Input-pixel boxes `(K, 4)` -> original-image pixels, given `geometry (4,)`."""
    sx, sy, ox, oy = geometry
    out = np.asarray(boxes, dtype=np.float32).copy()
    out[:, [0, 2]] = (out[:, [0, 2]] - ox) / sx
    out[:, [1, 3]] = (out[:, [1, 3]] - oy) / sy
    return out


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


def build_assigner(recipe: Mapping[str, Any], anchors, strides, num_classes: int):
    return ASSIGNERS.build(recipe["assigner"], anchors=anchors, strides=strides, num_classes=num_classes)
