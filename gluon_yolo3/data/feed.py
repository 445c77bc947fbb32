"""How an image is fed to a network and how its outputs are read: one value for training, evaluation,
prediction, export, quantization and the runtimes of exported models.

    spec = InputSpec.from_recipe(recipe, classes)      # or InputSpec.from_info(deploy_json)
    x, geometry = spec.prepare(image)                  # (3, S, S) float32, (6,) resize geometry
    spec.info()                                        # the JSON an export carries

An `InputSpec` holds the input size, the resize mode (letterbox or plain resize), the per-channel mean and
std of `(x / 255 - mean) / std`, the class list in id order and the NMS settings. A model's detections only
mean what they say when it is fed exactly as it was trained: `differences` names any field two specs
disagree on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..registry import TRANSFORMS

FEED_KEYS = ("input_size", "resize", "mean", "std")      # what decides the network's input tensor


@dataclass(frozen=True)
class InputSpec:
    """input_size: side of the square network input (pixels); resize: `letterbox` or `resize`; mean, std:
    per channel, of x / 255; classes: names in id order; nms: the NMS component config."""

    input_size: int
    resize: str
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    classes: Tuple[str, ...] = ()
    nms: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_recipe(cls, recipe: Mapping[str, Any], classes: Sequence[str] = ()) -> "InputSpec":
        """The spec a recipe describes (`model.input_size`, `data.resize`, `data.mean`, `data.std`,
        `model.nms`), with the run's class list `classes`."""
        data, model = recipe["data"], recipe["model"]
        return cls(int(model["input_size"]), str(data["resize"]), _floats(data["mean"]), _floats(data["std"]),
                   tuple(str(c) for c in classes), dict(model["nms"]))

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> "InputSpec":
        """The spec an exported model carries (`deploy.json`, ONNX metadata): the keys of `info()`."""
        missing = [k for k in FEED_KEYS + ("classes", "nms") if k not in info]
        if missing:
            raise ValueError(f"an exported model's info lacks {', '.join(missing)} (written by another tool?)")
        return cls(int(info["input_size"]), str(info["resize"]), _floats(info["mean"]), _floats(info["std"]),
                   tuple(str(c) for c in info["classes"]), dict(info["nms"]))

    def info(self) -> Dict[str, Any]:
        """JSON-able: input_size, resize, mean, std, classes, nms."""
        return {"input_size": self.input_size, "resize": self.resize, "mean": list(self.mean),
                "std": list(self.std), "classes": list(self.classes), "nms": dict(self.nms)}

    def differences(self, other: "InputSpec", keys: Sequence[str] = FEED_KEYS) -> List[Tuple[str, Any, Any]]:
        """`[(key, mine, other's)]` for the fields of `keys` where the two specs differ."""
        return [(k, getattr(self, k), getattr(other, k)) for k in keys if getattr(self, k) != getattr(other, k)]

    def resizer(self, size: Optional[int] = None):
        """The transform that brings an image to `size` (default: input_size) square, as this spec says."""
        return build_resize(self.resize, int(size or self.input_size))

    def normalizer(self) -> ImageNormalizer:
        return ImageNormalizer(self.mean, self.std)

    def prepare(self, image: np.ndarray, resizer=None, normalizer=None):
        """`(x (3, S, S) float32, geometry (6,))` of an `(H, W, 3) uint8 RGB` image; geometry maps input
        pixels back to the image's (`to_original`). Pass a built resizer / normalizer to reuse them."""
        resized, geometry = resize_with_geometry(resizer or self.resizer(), image)
        return (normalizer or self.normalizer())(resized), geometry


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
        self._scale = (1.0 / (255.0 * self.std.ravel())).astype(np.float32)
        self._shift = (-self.mean.ravel() / self.std.ravel()).astype(np.float32)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        out = np.empty((3,) + image.shape[:2], np.float32)
        for c in range(3):            # plane by plane, in place: a few times faster than whole-array numpy
            out[c] = image[:, :, c]
            out[c] *= self._scale[c]
            out[c] += self._shift[c]
        return out


def resize_with_geometry(resize, image: np.ndarray):
    """`(resized, geometry (6,))`: a deterministic resize transform applied, and its mapping measured on the
    full-image box: `(scale_x, scale_y, offset_x, offset_y, width, height)`, the last two the image's own."""
    h, w = image.shape[:2]
    probe = np.array([[0, 0, w, h, 0, 0]], dtype=np.float32)
    resized, moved = resize(image, probe, np.random.default_rng(0))
    x1, y1, x2, y2 = moved[0, :4]
    geometry = np.array([(x2 - x1) / w, (y2 - y1) / h, x1, y1, w, h], dtype=np.float32)
    return resized, geometry


def to_original(boxes: np.ndarray, geometry: np.ndarray) -> np.ndarray:
    """Input-pixel boxes `(K, 4)` x1y1x2y2 -> original-image pixels, clipped to the image, given `geometry (6,)`
    (a box the network draws past the image's edge ends at the edge, as every box a person labels does)."""
    sx, sy, ox, oy, w, h = geometry
    out = np.asarray(boxes, dtype=np.float32).copy()
    out[:, [0, 2]] = np.clip((out[:, [0, 2]] - ox) / sx, 0.0, w)
    out[:, [1, 3]] = np.clip((out[:, [1, 3]] - oy) / sy, 0.0, h)
    return out


def _floats(values) -> Tuple[float, ...]:
    return tuple(float(v) for v in values)
