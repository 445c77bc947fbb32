"""Multi-sample transforms: mosaic (four images, as Darknet and Ultralytics) and mixup (two images blended).

Both are registered TRANSFORMS listed in `data.transforms` like any other; they are called
`t(image, label, rng, draw, context)` (see `transforms.py`): `draw(rng)` gives another training image that
went through the transforms listed before this one, and `context.size` / `context.epoch` tell the
network input size and epoch of the sample.

Mixup and labels: GluonCV's MixupDetection appends a per-box weight column (lambda, 1 - lambda) for the
loss. Our label layout has no such column (targets carry no per-box weight), so mixup keeps both images'
boxes at full weight, the standard YOLO practice (Ultralytics): a faint object is still an object.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from ..registry import TRANSFORMS
from .base import check_label
from .transforms import MIN_SIDE, _check_p, _fill, _hw, _interp, clip_and_filter


def _keep_visible(before: np.ndarray, after: np.ndarray, min_visible: float) -> np.ndarray:
    """Rows of `after` (the clipped `before`) keeping at least `min_visible` of their area and 1 pixel a side."""
    area0 = (before[:, 2] - before[:, 0]) * (before[:, 3] - before[:, 1])
    wh = after[:, 2:4] - after[:, 0:2]
    area1 = wh[:, 0] * wh[:, 1]
    keep = (wh >= MIN_SIDE).all(axis=1) & (area1 >= min_visible * np.maximum(area0, 1e-9))
    return after[keep]


def _clip_to(label: np.ndarray, x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    out = label.copy()
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], x1, x2)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], y1, y2)
    return out


@TRANSFORMS.register("mosaic")
class Mosaic:
    """Four images around a random centre, with probability `p` (Darknet / Ultralytics mosaic).

    The sample and three drawn images are scaled to fit an S_h x S_w tile (`size`, default: the network
    input of the batch) and placed top-left, top-right, bottom-left and bottom-right of a centre drawn
    uniformly in `center` x the tile size on a 2S_h x 2S_w canvas filled with `fill`; each image is cut
    at the centre lines. With `crop` (default) the output is the S_h x S_w window at the canvas centre
    (Ultralytics' border crop; it always holds the mosaic centre), else the whole canvas. Boxes are
    clipped to what stays visible and dropped below `min_visible` of their area or 1 pixel a side.
    """

    multi_sample = True

    def __init__(self, p: float = 1.0, size=None, center: Sequence[float] = (0.5, 1.5), crop: bool = True,
                 fill=114, interp: str = "linear", min_visible: float = 0.1):
        lo, hi = (float(v) for v in center)
        if not 0 <= lo <= hi <= 2:
            raise ValueError(f"mosaic: center must be [lo, hi] with 0 <= lo <= hi <= 2, got {center}")
        self.p, self.size, self.center = _check_p(p), None if size is None else _hw(size), (lo, hi)
        self.crop, self.fill, self.interp = bool(crop), _fill(fill), _interp(interp)
        self.min_visible = float(min_visible)

    def tile_size(self, image, context) -> Tuple[int, int]:
        if self.size is not None:
            return self.size
        if context is not None and context.size is not None:
            return context.size
        return image.shape[:2]

    def __call__(self, image, label, rng, draw, context=None):
        label = check_label(label)
        if rng.random() >= self.p:
            return image, label
        sh, sw = self.tile_size(image, context)
        samples = [(image, label)] + [draw(rng) for _ in range(3)]
        xc = int(rng.uniform(self.center[0] * sw, self.center[1] * sw))
        yc = int(rng.uniform(self.center[0] * sh, self.center[1] * sh))
        canvas = np.empty((2 * sh, 2 * sw, 3), np.uint8)
        canvas[:] = self.fill
        labels = []
        for k, (img, lab) in enumerate(samples):
            lab = check_label(lab)
            h0, w0 = img.shape[:2]
            r = min(sh / h0, sw / w0)
            w, h = max(1, int(round(w0 * r))), max(1, int(round(h0 * r)))
            img = cv2.resize(img, (w, h), interpolation=self.interp) if (w, h) != (w0, h0) else img
            # canvas window (x1a..x2a, y1a..y2a) and the image part that fills it (x1b.., y1b..)
            if k == 0:
                x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
                x1b, y1b = w - (x2a - x1a), h - (y2a - y1a)
            elif k == 1:
                x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, 2 * sw), yc
                x1b, y1b = 0, h - (y2a - y1a)
            elif k == 2:
                x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(yc + h, 2 * sh)
                x1b, y1b = w - (x2a - x1a), 0
            else:
                x1a, y1a, x2a, y2a = xc, yc, min(xc + w, 2 * sw), min(yc + h, 2 * sh)
                x1b, y1b = 0, 0
            if x2a <= x1a or y2a <= y1a:
                continue
            canvas[y1a:y2a, x1a:x2a] = img[y1b:y1b + (y2a - y1a), x1b:x1b + (x2a - x1a)]
            moved = lab.copy()
            moved[:, [0, 2]] = lab[:, [0, 2]] * (w / w0) + (x1a - x1b)
            moved[:, [1, 3]] = lab[:, [1, 3]] * (h / h0) + (y1a - y1b)
            labels.append(_keep_visible(moved, _clip_to(moved, x1a, y1a, x2a, y2a), self.min_visible))
        out = np.concatenate(labels) if labels else np.zeros((0, 6), np.float32)
        if not self.crop:
            return canvas, out.astype(np.float32)
        x0, y0 = sw // 2, sh // 2
        window = canvas[y0:y0 + sh, x0:x0 + sw].copy()
        shifted = out.copy()
        shifted[:, [0, 2]] -= x0
        shifted[:, [1, 3]] -= y0
        return window, _keep_visible(shifted, _clip_to(shifted, 0, 0, sw, sh), self.min_visible)


@TRANSFORMS.register("mixup")
class MixUp:
    """Blend the sample with a drawn image, with probability `p`: GluonCV's mixup.

    lambda ~ Beta(alpha, beta) (GluonCV: 1.5, 1.5); both images are placed at the top-left of a canvas of
    their largest height and width, filled with `fill`, and blended lambda : 1 - lambda; the labels are
    both images' boxes (full weight: see the module docstring). Switched off from epoch `until_epoch`
    on (0-based), and for the run's last `off_last_epochs` epochs (GluonCV's --no-mixup-epochs; needs the
    total epochs in the sample context).
    """

    multi_sample = True

    def __init__(self, p: float = 1.0, alpha: float = 1.5, beta: float = 1.5, off_last_epochs: int = 0,
                 until_epoch: Optional[int] = None, fill=0):
        if alpha <= 0 or beta <= 0:
            raise ValueError(f"mixup: alpha and beta must be positive, got {alpha}, {beta}")
        if off_last_epochs < 0:
            raise ValueError(f"mixup: off_last_epochs must be >= 0, got {off_last_epochs}")
        self.p, self.alpha, self.beta = _check_p(p), float(alpha), float(beta)
        self.off_last_epochs = int(off_last_epochs)
        self.until_epoch = None if until_epoch is None else int(until_epoch)
        self.fill = _fill(fill)

    def active(self, context) -> bool:
        """Whether mixup applies at the context's epoch."""
        epoch = 0 if context is None else context.epoch
        if self.until_epoch is not None and epoch >= self.until_epoch:
            return False
        if self.off_last_epochs:
            epochs = None if context is None else context.epochs
            if epochs is None:
                raise ValueError("mixup: off_last_epochs needs the run's total epochs in the sample context "
                                 "(TrainSamples(..., epochs=...)); use until_epoch instead")
            return epoch < epochs - self.off_last_epochs
        return True

    def __call__(self, image, label, rng, draw, context=None):
        label = check_label(label)
        if not self.active(context) or rng.random() >= self.p:
            return image, label
        lam = float(np.clip(rng.beta(self.alpha, self.beta), 0.0, 1.0))
        other, other_label = draw(rng)
        if lam >= 1.0:
            return image, label
        h = max(image.shape[0], other.shape[0])
        w = max(image.shape[1], other.shape[1])
        canvas = np.empty((h, w, 3), np.float32)
        canvas[:] = self.fill
        a = canvas.copy()
        a[:image.shape[0], :image.shape[1]] = image
        b = canvas
        b[:other.shape[0], :other.shape[1]] = other
        mixed = cv2.addWeighted(a, lam, b, 1.0 - lam, 0.0)
        out = np.clip(np.round(mixed), 0, 255).astype(np.uint8)
        return out, clip_and_filter(np.concatenate([label, check_label(other_label)]), w, h)
