"""Shared building blocks: the normalisation factory and Darknet's conv + norm + LeakyReLU unit."""
from __future__ import annotations

from typing import Any, Mapping

import mxnet as mx
from mxnet import gluon
from mxnet.gluon import nn

from gluon_yolo3.models.precision import Conv2D
from gluon_yolo3.registry import closest

NORM_TYPES = ("batchnorm", "frozen", "syncbn")
NORM_DEFAULTS = {"type": "batchnorm", "momentum": 0.9, "eps": 1e-5, "num_devices": 1}


def round_channels(channels: int, width: float = 1.0) -> int:
    """`channels * width` rounded to the nearest multiple of 8, at least 8."""
    if width <= 0:
        raise ValueError(f"width must be positive, got {width!r}")
    return max(8, int(channels * width / 8.0 + 0.5) * 8)


def resolve_norm(norm: Mapping[str, Any] | None) -> dict:
    """`norm` merged over `NORM_DEFAULTS`, with unknown keys and types rejected (`model.norm.*`)."""
    if norm is None:
        norm = {}
    if not isinstance(norm, Mapping):
        raise ValueError(f"model.norm must be a mapping such as {NORM_DEFAULTS!r}, got {norm!r}")
    for key in norm:
        if key not in NORM_DEFAULTS:
            hint = closest(key, NORM_DEFAULTS)
            raise ValueError(
                f"model.norm.{key}: unknown key" + (f" (did you mean '{hint}'?)" if hint else "")
                + f"; valid keys: {', '.join(NORM_DEFAULTS)}")
    cfg = {**NORM_DEFAULTS, **norm}
    if cfg["type"] not in NORM_TYPES:
        hint = closest(cfg["type"], NORM_TYPES)
        raise ValueError(
            f"model.norm.type: unknown norm type {cfg['type']!r}"
            + (f" (did you mean '{hint}'?)" if hint else "")
            + f"; valid values: {', '.join(NORM_TYPES)}")
    if int(cfg["num_devices"]) < 1:
        raise ValueError(f"model.norm.num_devices must be >= 1, got {cfg['num_devices']!r}")
    return cfg


def make_norm(norm: Mapping[str, Any] | None = None, in_channels: int = 0,
              prefix: str | None = None) -> gluon.HybridBlock:
    """A new normalisation layer over axis 1 of `(B, C, H, W)` described by `norm`.

    `norm = {"type": "batchnorm" | "frozen" | "syncbn", "momentum": 0.9, "eps": 1e-5,
    "num_devices": 1}`; missing keys take these defaults, None means all defaults.
    `frozen` is BatchNorm with `use_global_stats=True`: the running statistics are used in training
    too and never updated. `syncbn` synchronises batch statistics over `num_devices` devices.
    `in_channels=0` defers the parameter shapes; `prefix` names the parameters (same for every type,
    so checkpoints move between norm types).
    """
    cfg = resolve_norm(norm)
    momentum, eps = float(cfg["momentum"]), float(cfg["eps"])
    if cfg["type"] == "batchnorm":
        return nn.BatchNorm(momentum=momentum, epsilon=eps, in_channels=in_channels,
                            prefix=prefix)
    if cfg["type"] == "frozen":
        return nn.BatchNorm(momentum=momentum, epsilon=eps, use_global_stats=True,
                            in_channels=in_channels, prefix=prefix)
    return mx.gluon.contrib.nn.SyncBatchNorm(in_channels=in_channels,
                                             num_devices=int(cfg["num_devices"]),
                                             momentum=momentum, epsilon=eps, prefix=prefix)


class ConvBNLeaky(gluon.HybridBlock):
    """Conv2D (no bias, padding kernel // 2) + norm + LeakyReLU(0.1), in the network's compute dtype
    (`precision.py`: float32, or bfloat16 with float32 parameters).

    `(B, in_channels, H, W) -> (B, channels, ceil(H / stride), ceil(W / stride))` for odd kernels.
    `in_channels=0` defers the weight shape to the first forward.
    """

    def __init__(self, channels: int, kernel: int = 3, stride: int = 1, norm=None,
                 in_channels: int = 0, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.conv = Conv2D(channels, kernel_size=kernel, strides=stride, padding=kernel // 2,
                               use_bias=False, in_channels=in_channels, prefix="conv_")
            self.bn = make_norm(norm, in_channels=channels, prefix="bn_")
            self.act = nn.LeakyReLU(0.1, prefix="leaky_")

    def hybrid_forward(self, F, x):
        return self.act(self.bn(self.conv(x)))
