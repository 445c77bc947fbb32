"""Synthetic shapes: the embedded default dataset, drawn on the fly.

Each image is a smooth random background (colour gradient + low-frequency blobs), optional clutter
(thin lines and small specks that belong to no class), then 1..max_objects filled shapes: ellipses
("circle"), axis-aligned rectangles ("square") and triangles of random shape. Colours are random, so
only the shape tells the class. Every label box is the tight box of the object's visible pixels.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import cv2
import numpy as np

from ..registry import DATASETS
from .base import DetectionDataset, empty_label

SPLITS = {"train": 0, "val": 1, "test": 2}
SHAPES = ("circle", "square", "triangle")
MIN_VISIBLE = 0.6      # an earlier object must keep this fraction of its pixels visible
MIN_CONTRAST = 80.0    # RGB distance between an object and what lies under it
PLACEMENT_TRIALS = 20
ASPECT_RANGE = (0.6, 1.6)


def _hw(size) -> Tuple[int, int]:
    if np.isscalar(size):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """`(H, W, 3)` float32: a linear gradient between two colours plus smooth blobs."""
    c0, c1 = rng.uniform(0, 255, (2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = np.cos(angle) * xx / max(w - 1, 1) + np.sin(angle) * yy / max(h - 1, 1)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = c0 + (c1 - c0) * t[..., None]
    blobs = rng.normal(0, 18, (4, 4, 3)).astype(np.float32)
    img += cv2.resize(blobs, (w, h), interpolation=cv2.INTER_CUBIC)
    return img.astype(np.float32)


def _clutter(rng: np.random.Generator, img: np.ndarray) -> None:
    """Draw thin lines and small specks (no class) onto `img` `(H, W, 3)` float32, in place."""
    h, w = img.shape[:2]
    side = min(h, w)
    for _ in range(rng.integers(0, 4)):
        p0 = tuple(int(v) for v in rng.integers(0, (w, h)))
        p1 = tuple(int(v) for v in rng.integers(0, (w, h)))
        cv2.line(img, p0, p1, rng.uniform(0, 255, 3).tolist(), 1, cv2.LINE_AA)
    for _ in range(rng.integers(0, 8)):
        centre = tuple(int(v) for v in rng.integers(0, (w, h)))
        radius = int(rng.integers(1, max(2, side // 48) + 1))
        cv2.circle(img, centre, radius, rng.uniform(0, 255, 3).tolist(), -1, cv2.LINE_AA)


def _shape_mask(rng: np.random.Generator, shape: str, h: int, w: int,
                x0: int, y0: int, bw: int, bh: int) -> np.ndarray:
    """`(H, W)` bool mask of a filled shape inscribed in the box at (x0, y0), size bw x bh."""
    canvas = np.zeros((h, w), np.uint8)
    x1, y1 = x0 + bw - 1, y0 + bh - 1  # last pixel column / row
    if shape == "square":
        canvas[y0:y1 + 1, x0:x1 + 1] = 1
    elif shape == "circle":
        shift = 4  # sub-pixel centre and axes, so even sizes stay centred
        s = 1 << shift
        centre = (int(round((x0 + x1) / 2 * s)), int(round((y0 + y1) / 2 * s)))
        axes = (int(round((bw - 1) / 2 * s)), int(round((bh - 1) / 2 * s)))
        cv2.ellipse(canvas, centre, axes, 0, 0, 360, 1, -1, cv2.LINE_8, shift)
    else:  # triangle: base along one side of the box, apex anywhere on the opposite side
        t = rng.uniform(0, 1)
        side = rng.integers(4)
        corners = {0: [(x0, y1), (x1, y1), (x0 + t * (bw - 1), y0)],   # apex on top
                   1: [(x0, y0), (x1, y0), (x0 + t * (bw - 1), y1)],   # apex at bottom
                   2: [(x1, y0), (x1, y1), (x0, y0 + t * (bh - 1))],   # apex on the left
                   3: [(x0, y0), (x0, y1), (x1, y0 + t * (bh - 1))]}[int(side)]
        pts = np.round(np.array(corners)).astype(np.int32)
        cv2.fillPoly(canvas, [pts], 1, cv2.LINE_8)
    return canvas.astype(bool)


def _pick_colour(rng: np.random.Generator, ring: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """An RGB colour `(3,)` that stands out from what surrounds the object.

    ring: `(K, 3)` colours just outside the object's edge; neighbours: `(M, 3)` colours of the objects it
    overlaps. Wanted: 90% of the ring and every neighbour at least MIN_CONTRAST away (RGB distance);
    otherwise the best of a few draws.
    """
    best, best_score = None, -1.0
    for _ in range(30):
        colour = rng.uniform(0, 255, 3)
        score = float(np.quantile(np.linalg.norm(ring - colour, axis=1), 0.1)) if len(ring) else 255.0
        if len(neighbours):
            score = min(score, float(np.linalg.norm(neighbours - colour, axis=1).min()))
        if score >= MIN_CONTRAST:
            return colour
        if score > best_score:
            best, best_score = colour, score
    return best


def _ring(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator, k: int = 64) -> np.ndarray:
    """Up to `k` colours `(k, 3)` of `img` in a 2-pixel ring around `mask` `(H, W)` bool."""
    grown = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=2).astype(bool)
    pixels = img[grown & ~mask]
    if len(pixels) > k:
        pixels = pixels[rng.choice(len(pixels), k, replace=False)]
    return pixels


def _tight_box(mask: np.ndarray) -> np.ndarray:
    """Pixel-edge box `(4,)` x1, y1, x2, y2 of a non-empty `(H, W)` bool mask."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    return np.array([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], np.float32)


@DATASETS.register("synthetic")
class SyntheticShapes(DetectionDataset):
    """Random shapes on smooth backgrounds, deterministic per (seed, split, index).

    num_images: length; image_size: int or [h, w]; classes: names, a subset of
    ("circle", "square", "triangle") in any order (the order gives the class ids);
    min_size, max_size: object size (geometric mean of width and height) as a fraction of the shorter
    image side, drawn log-uniformly; max_objects: at most this many objects (at least one);
    seed, split: "train", "val" and "test" use disjoint random streams; clutter: draw distractors.
    """

    def __init__(self, num_images: int = 1000, image_size=128, classes: Sequence[str] = SHAPES,
                 min_size: float = 0.1, max_size: float = 0.7, max_objects: int = 5, seed: int = 0,
                 split: str = "train", clutter: bool = True):
        super().__init__()
        unknown = [c for c in classes if c not in SHAPES]
        if unknown or not classes or len(set(classes)) != len(classes):
            raise ValueError(f"synthetic: classes must be distinct names among {SHAPES}, got {classes}")
        if split not in SPLITS:
            raise ValueError(f"synthetic: split must be one of {tuple(SPLITS)}, got {split!r}")
        if not 0 < min_size <= max_size <= 1:
            raise ValueError(f"synthetic: need 0 < min_size <= max_size <= 1, got {min_size}, {max_size}")
        if max_objects < 1 or num_images < 0:
            raise ValueError("synthetic: need max_objects >= 1 and num_images >= 0")
        self.classes = tuple(classes)
        self.num_images = int(num_images)
        self.height, self.width = _hw(image_size)
        self.min_size, self.max_size = float(min_size), float(max_size)
        self.max_objects = int(max_objects)
        self.seed, self.split, self.clutter = int(seed), split, bool(clutter)

    def __len__(self) -> int:
        return self.num_images

    def image_id(self, i: int) -> str:
        return f"{self.split}_{self._index(i):06d}"

    def __getitem__(self, i: int):
        image, label, _ = self.sample_with_masks(i)
        return image, label

    def rng(self, i: int) -> np.random.Generator:
        """The generator of image `i`: one stream per (seed, split, index)."""
        return np.random.default_rng([self.seed, SPLITS[self.split], self._index(i)])

    def sample_with_masks(self, i: int):
        """Image `i` as `(image (H, W, 3) uint8, label (N, 6) float32, masks (N, H, W) bool)`.

        masks are the visible pixels of each object; label row k is the tight box of masks[k].
        """
        rng = self.rng(i)
        h, w = self.height, self.width
        img = _background(rng, h, w)
        if self.clutter:
            _clutter(rng, img)
        masks, full, colours, classes = [], [], [], []
        for _ in range(rng.integers(1, self.max_objects + 1)):
            cls = int(rng.integers(len(self.classes)))
            mask = self._place(rng, self.classes[cls], masks, full)
            if mask is None:
                continue
            touched = [c for m, c in zip(masks, colours) if (m & mask).any()]
            colour = _pick_colour(rng, _ring(img, mask, rng), np.array(touched).reshape(-1, 3))
            img[mask] = colour
            masks = [m & ~mask for m in masks]
            masks.append(mask)
            full.append(int(mask.sum()))
            colours.append(colour)
            classes.append(cls)
        img += rng.normal(0, 4, img.shape).astype(np.float32)  # mild sensor noise, objects included
        image = np.clip(np.round(img), 0, 255).astype(np.uint8)
        if not masks:
            return image, empty_label(), np.zeros((0, h, w), bool)
        boxes = np.stack([_tight_box(m) for m in masks])
        label = np.zeros((len(masks), 6), np.float32)
        label[:, :4] = boxes
        label[:, 4] = classes
        return image, label, np.stack(masks)

    def _place(self, rng: np.random.Generator, shape: str, masks, full):
        """Mask `(H, W)` bool of a new object, or None after PLACEMENT_TRIALS failures.

        masks: visible masks of the earlier objects, full: their drawn areas; a placement is rejected
        when it would leave an earlier object with less than MIN_VISIBLE of its drawn area visible.
        """
        h, w = self.height, self.width
        side = min(h, w)
        for _ in range(PLACEMENT_TRIALS):
            size = np.exp(rng.uniform(np.log(self.min_size), np.log(self.max_size))) * side
            aspect = np.exp(rng.uniform(*np.log(ASPECT_RANGE)))  # width / height
            bw = int(np.clip(round(size * np.sqrt(aspect)), 2, w))
            bh = int(np.clip(round(size / np.sqrt(aspect)), 2, h))
            x0 = int(rng.integers(0, w - bw + 1))
            y0 = int(rng.integers(0, h - bh + 1))
            mask = _shape_mask(rng, shape, h, w, x0, y0, bw, bh)
            if all((m & ~mask).sum() >= MIN_VISIBLE * a for m, a in zip(masks, full)):
                return mask
        return None
