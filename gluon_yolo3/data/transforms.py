"""Registered image + label transforms, and `Compose` to chain them from recipe dicts.

Every transform is built from keyword arguments and called `t(image, label, rng) -> (image, label)`:
image `(H, W, 3)` uint8 RGB, label `(N, 6)` float32 x1, y1, x2, y2 (pixels), class, difficult;
rng a `numpy.random.Generator`. Boxes narrower or shorter than 1 pixel after a transform are dropped.

Multi-sample transforms (mosaic, mixup in `mix.py`) set `multi_sample = True` and are called
`t(image, label, rng, draw, context)`: `draw(rng) -> (image, label)` gives another training image passed
through the transforms listed before this one, and `context` is the `SampleContext` of the sample.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence, Tuple

import cv2
import numpy as np

from ..boxes import box_iou
from ..registry import TRANSFORMS
from .base import check_label

INTERPOLATION = {"nearest": cv2.INTER_NEAREST_EXACT, "linear": cv2.INTER_LINEAR,
                 "cubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA}
MIN_SIDE = 1.0


def _hw(size) -> Tuple[int, int]:
    """int or [h, w] -> (h, w), both positive."""
    h, w = (size, size) if np.isscalar(size) else size
    if int(h) <= 0 or int(w) <= 0:
        raise ValueError(f"size must be positive, got {size}")
    return int(h), int(w)


def _interp(name: str) -> int:
    if name not in INTERPOLATION:
        raise ValueError(f"interp must be one of {sorted(INTERPOLATION)}, got {name!r}")
    return INTERPOLATION[name]


def _fill(fill) -> Tuple[int, int, int]:
    fill = np.broadcast_to(np.asarray(fill, dtype=np.int64), (3,))
    return tuple(int(v) for v in np.clip(fill, 0, 255))


def _check_p(p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    return float(p)


def clip_and_filter(label: np.ndarray, width: int, height: int) -> np.ndarray:
    """Clip boxes of `label (N, 6)` to the image and drop those with a side below 1 pixel."""
    label = label.copy()
    label[:, [0, 2]] = np.clip(label[:, [0, 2]], 0, width)
    label[:, [1, 3]] = np.clip(label[:, [1, 3]], 0, height)
    wh = label[:, 2:4] - label[:, 0:2]
    return label[(wh >= MIN_SIDE).all(axis=1)]


def _affine(label: np.ndarray, sx: float, sy: float, dx: float, dy: float) -> np.ndarray:
    """Scale boxes by (sx, sy) then shift by (dx, dy); other columns unchanged."""
    out = label.copy()
    out[:, [0, 2]] = label[:, [0, 2]] * sx + dx
    out[:, [1, 3]] = label[:, [1, 3]] * sy + dy
    return out


@TRANSFORMS.register("resize")
class Resize:
    """Plain resize to `size` (int or [h, w]), ignoring the aspect ratio; boxes scaled."""

    def __init__(self, size, interp: str = "linear"):
        self.size, self.interp = _hw(size), _interp(interp)

    def __call__(self, image, label, rng=None):
        label = check_label(label)
        (h, w), (th, tw) = image.shape[:2], self.size
        image = cv2.resize(image, (tw, th), interpolation=self.interp)
        return image, clip_and_filter(_affine(label, tw / w, th / h, 0, 0), tw, th)


def letterbox_params(src_hw, dst_hw) -> Tuple[float, float, int, int, int, int]:
    """Geometry of a letterbox from `src_hw` (h, w) into `dst_hw` (h, w).

    Returns `(scale_x, scale_y, pad_x, pad_y, new_w, new_h)`: the image is resized to new_w x new_h
    and pasted at (pad_x, pad_y); a source point (x, y) lands on (x * scale_x + pad_x, y * scale_y + pad_y).
    Map detections back with `(x - pad_x) / scale_x`.
    """
    (h, w), (th, tw) = src_hw, dst_hw
    r = min(th / h, tw / w)
    nw, nh = min(tw, max(1, int(round(w * r)))), min(th, max(1, int(round(h * r))))
    px, py = (tw - nw) // 2, (th - nh) // 2
    return nw / w, nh / h, px, py, nw, nh


@TRANSFORMS.register("letterbox")
class Letterbox:
    """Resize keeping the aspect ratio to fit `size` (int or [h, w]); pad centred with `fill`."""

    def __init__(self, size, fill=114, interp: str = "linear"):
        self.size, self.fill, self.interp = _hw(size), _fill(fill), _interp(interp)

    def __call__(self, image, label, rng=None):
        label = check_label(label)
        th, tw = self.size
        sx, sy, px, py, nw, nh = letterbox_params(image.shape[:2], self.size)
        canvas = np.empty((th, tw, 3), np.uint8)
        canvas[:] = self.fill
        canvas[py:py + nh, px:px + nw] = cv2.resize(image, (nw, nh), interpolation=self.interp)
        return canvas, clip_and_filter(_affine(label, sx, sy, px, py), tw, th)


@TRANSFORMS.register("random_flip")
class RandomFlip:
    """Horizontal flip with probability `p`."""

    def __init__(self, p: float = 0.5):
        self.p = _check_p(p)

    def __call__(self, image, label, rng):
        label = check_label(label)
        if rng.random() >= self.p:
            return image, label
        w = image.shape[1]
        out = label.copy()
        out[:, 0], out[:, 2] = w - label[:, 2], w - label[:, 0]
        return cv2.flip(image, 1), out


@TRANSFORMS.register("random_crop")
class RandomCrop:
    """SSD-style crop with probability `p`, constrained by IoU with the boxes.

    A constraint is drawn from `min_ious`; up to `max_trials` windows with sides in
    [min_scale, 1] of the image and aspect ratio in [1/2, 2] are tried. A window is accepted when
    some box keeps its centre inside it and that box has IoU >= the constraint with the window
    (any window, for an image without boxes). Boxes whose centre leaves the window are dropped,
    the others clipped. No accepted window: the sample is returned unchanged.
    """

    def __init__(self, p: float = 0.5, min_ious: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
                 max_trials: int = 50, min_scale: float = 0.3):
        if not 0 < min_scale <= 1:
            raise ValueError(f"min_scale must be in (0, 1], got {min_scale}")
        if not len(min_ious):
            raise ValueError("min_ious must not be empty")
        self.p, self.min_ious = _check_p(p), tuple(float(v) for v in min_ious)
        self.max_trials, self.min_scale = int(max_trials), float(min_scale)

    def window(self, rng, h: int, w: int, boxes: np.ndarray):
        """An accepted window `(4,)` int x1, y1, x2, y2, or None."""
        min_iou = self.min_ious[rng.integers(len(self.min_ious))]
        # all trials at once: sizes, then positions; the first acceptable window wins
        sides = rng.uniform(self.min_scale, 1, (self.max_trials, 2))
        cw = (sides[:, 0] * w).astype(np.int64)
        ch = (sides[:, 1] * h).astype(np.int64)
        x1 = rng.integers(0, np.maximum(w - cw, 0) + 1)
        y1 = rng.integers(0, np.maximum(h - ch, 0) + 1)
        wins = np.stack([x1, y1, x1 + cw, y1 + ch], axis=1)
        ok = (cw >= 1) & (ch >= 1)
        ok &= (cw >= 0.5 * ch) & (cw <= 2 * ch)
        if len(boxes) and ok.any():
            centres = (boxes[:, 0:2] + boxes[:, 2:4]) / 2
            inside = ((centres[None, :, 0] > wins[:, None, 0]) & (centres[None, :, 0] < wins[:, None, 2])
                      & (centres[None, :, 1] > wins[:, None, 1]) & (centres[None, :, 1] < wins[:, None, 3]))
            iou = box_iou(wins.astype(np.float64), boxes.astype(np.float64))       # (trials, N)
            ok &= (inside & (iou >= min_iou)).any(axis=1)
        hits = np.flatnonzero(ok)
        return wins[hits[0]] if len(hits) else None

    def __call__(self, image, label, rng):
        label = check_label(label)
        if rng.random() >= self.p:
            return image, label
        h, w = image.shape[:2]
        win = self.window(rng, h, w, label[:, :4])
        if win is None:
            return image, label
        x1, y1, x2, y2 = (int(v) for v in win)
        centres = (label[:, 0:2] + label[:, 2:4]) / 2
        kept = _affine(label[_centres_inside(centres, win)], 1, 1, -x1, -y1)
        return image[y1:y2, x1:x2].copy(), clip_and_filter(kept, x2 - x1, y2 - y1)


def _centres_inside(centres: np.ndarray, win: np.ndarray) -> np.ndarray:
    """`(N,)` bool: centres `(N, 2)` strictly inside the window x1, y1, x2, y2."""
    return ((centres[:, 0] > win[0]) & (centres[:, 0] < win[2])
            & (centres[:, 1] > win[1]) & (centres[:, 1] < win[3]))


@TRANSFORMS.register("random_expand")
class RandomExpand:
    """Zoom out with probability `p`: paste the image at a random place on a canvas `ratio` times
    larger (ratio uniform in [1, max_ratio]) filled with `fill` (RGB)."""

    def __init__(self, p: float = 0.5, max_ratio: float = 3.0, fill=(124, 116, 104)):
        if max_ratio < 1:
            raise ValueError(f"max_ratio must be >= 1, got {max_ratio}")
        self.p, self.max_ratio, self.fill = _check_p(p), float(max_ratio), _fill(fill)

    def __call__(self, image, label, rng):
        label = check_label(label)
        if rng.random() >= self.p:
            return image, label
        h, w = image.shape[:2]
        ratio = rng.uniform(1, self.max_ratio)
        ch, cw = int(h * ratio), int(w * ratio)
        x0, y0 = int(rng.integers(0, cw - w + 1)), int(rng.integers(0, ch - h + 1))
        canvas = cv2.copyMakeBorder(image, y0, ch - h - y0, x0, cw - w - x0, cv2.BORDER_CONSTANT,
                                    value=self.fill)
        return canvas, _affine(label, 1, 1, x0, y0)


@TRANSFORMS.register("color_jitter")
class ColorJitter:
    """Random HSV gains with probability `p` (Darknet / Ultralytics style).

    hue: shift by up to +-hue of the hue circle; saturation, value: multiply by a gain drawn
    uniformly in [1 - saturation, 1 + saturation] and [1 - value, 1 + value]. Labels unchanged.
    """

    def __init__(self, hue: float = 0.015, saturation: float = 0.7, value: float = 0.4, p: float = 1.0):
        self.hue, self.saturation, self.value, self.p = float(hue), float(saturation), float(value), _check_p(p)

    def __call__(self, image, label, rng):
        label = check_label(label)
        if rng.random() >= self.p:
            return image, label
        dh, gs, gv = rng.uniform(-1, 1, 3) * (self.hue, self.saturation, self.value) + (0, 1, 1)
        x = np.arange(256, dtype=np.float32)
        lut_h = np.mod(x + dh * 180, 180).astype(np.uint8)  # OpenCV's uint8 hue spans 0..179
        lut_s = np.clip(x * gs, 0, 255).astype(np.uint8)
        lut_v = np.clip(x * gv, 0, 255).astype(np.uint8)
        hue, sat, val = cv2.split(cv2.cvtColor(image, cv2.COLOR_RGB2HSV))
        hsv = cv2.merge((cv2.LUT(hue, lut_h), cv2.LUT(sat, lut_s), cv2.LUT(val, lut_v)))
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), label


class SampleContext:
    """What multi-sample transforms see besides the sample itself.

    source: `source(rng) -> (image, label)`, a random other item of the dataset (None: unavailable);
    epoch: 0-based epoch of the sample; epochs: the run's total epochs (None when unknown);
    size: `(h, w)` network input size of this sample's batch.
    """

    def __init__(self, source=None, epoch: int = 0, epochs=None, size=None):
        self.source, self.epoch, self.epochs = source, int(epoch), epochs
        self.size = None if size is None else _hw(size)


class Compose:
    """Build transforms from recipe dicts (`{"type": "letterbox", "size": 416}`, a bare type name,
    or an already built callable) with `TRANSFORMS.build`, and apply them in order.

    `compose(image, label, rng, context)`; `context` (a `SampleContext`) is needed only by multi-sample
    transforms, whose extra images run through the transforms before them (so mixup after mosaic mixes
    two mosaics).
    """

    def __init__(self, cfgs: Iterable[Mapping[str, Any] | str | Any]):
        self.transforms = [c if callable(c) else TRANSFORMS.build(c) for c in cfgs]

    @property
    def multi_sample(self) -> bool:
        """True when some transform needs other images (a `SampleContext` with a source)."""
        return any(getattr(t, "multi_sample", False) for t in self.transforms)

    def __call__(self, image, label, rng=None, context: SampleContext = None):
        rng = np.random.default_rng() if rng is None else rng
        return self._run(len(self.transforms), image, check_label(label), rng, context)

    def _run(self, end: int, image, label, rng, context):
        for k, t in enumerate(self.transforms[:end]):
            if getattr(t, "multi_sample", False):
                if context is None or context.source is None:
                    raise ValueError(f"transform '{type(t).__name__}' mixes several images: it needs a "
                                     "SampleContext with a source (use it through TrainSamples)")
                draw = self._drawer(k, context)
                image, label = t(image, label, rng, draw, context)
            else:
                image, label = t(image, label, rng)
        return image, label

    def _drawer(self, k: int, context: SampleContext):
        def draw(rng):
            image, label = context.source(rng)
            return self._run(k, image, check_label(label), rng, context)
        return draw

    def __repr__(self):
        return f"Compose({[type(t).__name__ for t in self.transforms]})"
