"""An exponential moving average (EMA) of a network's weights, for validation and the saved weights.

    ema = WeightEMA(net, decay=0.9998, warmup_steps=2000)
    ... after every optimizer step: ema.update()
    with ema.swapped_in():          # the net computes with the averaged weights
        evaluate(net, ...)
    ema.save_parameters(path)       # same file format as net.save_parameters: load it into the net

After `n` updates with weights `w_n`: `shadow_n = d_n * shadow_{n-1} + (1 - d_n) * w_n`, `shadow_0` = the
weights at creation, and `d_n = decay * (1 - exp(-n / warmup_steps))` (the ramp of YOLOv5's ModelEMA, so
that the random initial weights fade out quickly), or `d_n = decay` when `warmup_steps` is 0. Every
parameter is averaged, BatchNorm running statistics included, on the network's first context.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Dict, Mapping, Optional

import mxnet as mx

EMA_KEYS = ("decay", "warmup_steps")


def ema_config(value: Any) -> Optional[Dict[str, float]]:
    """`train.ema` -> None (off) or `{"decay": d, "warmup_steps": n}`; a clear error otherwise.

    Accepts null/false (off), true (the defaults), a mapping `{decay: 0.9998, warmup_steps: 2000}` (both optional), or a
    bare number taken as the decay.
    """
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    if isinstance(value, (int, float)):
        value = {"decay": float(value)}
    if not isinstance(value, Mapping):
        raise ValueError(f"train.ema must be null (off) or a mapping like {{decay: 0.9998}}, got {value!r}")
    for key in value:
        if key not in EMA_KEYS:
            raise ValueError(f"unknown key 'train.ema.{key}'; valid keys: {', '.join(EMA_KEYS)}")
    cfg = {"decay": float(value.get("decay", 0.9998)), "warmup_steps": float(value.get("warmup_steps", 2000))}
    if not 0.0 < cfg["decay"] < 1.0:
        raise ValueError(f"train.ema.decay must be in (0, 1), got {cfg['decay']}")
    if cfg["warmup_steps"] < 0:
        raise ValueError(f"train.ema.warmup_steps must be >= 0, got {cfg['warmup_steps']}")
    return cfg


class WeightEMA:
    """The moving average of every parameter of `net` (structural names, as `net.save_parameters`)."""

    def __init__(self, net: mx.gluon.Block, decay: float = 0.9998, warmup_steps: float = 2000):
        self.decay = float(decay)
        self.warmup_steps = float(warmup_steps)
        self.params = net._collect_params_with_prefix()
        self.context = next(iter(self.params.values())).list_ctx()[0]
        self.shadow = {name: p.data(self.context).copy() for name, p in self.params.items()}
        self.updates = 0

    def decay_at(self, updates: int) -> float:
        """The decay `d_n` used by the `updates`-th update."""
        if self.warmup_steps <= 0:
            return self.decay
        return self.decay * (1.0 - math.exp(-updates / self.warmup_steps))

    def update(self):
        """Fold the network's current weights into the average (call once after every applied step)."""
        self.updates += 1
        d = self.decay_at(self.updates)
        for name, p in self.params.items():
            s = self.shadow[name]
            s *= d
            s += (1.0 - d) * p.data(self.context)

    def reset(self, updates: int = 0):
        """Restart the average from the network's current weights."""
        for name, p in self.params.items():
            self.shadow[name][:] = p.data(self.context)
        self.updates = int(updates)

    @contextmanager
    def swapped_in(self):
        """Inside the block the network holds the averaged weights; its own come back afterwards."""
        mx.nd.waitall()
        backup = {name: p.data(self.context).copy() for name, p in self.params.items()}
        try:
            for name, p in self.params.items():
                p.set_data(self.shadow[name])
            yield self
        finally:
            mx.nd.waitall()
            for name, p in self.params.items():
                p.set_data(backup[name])

    def save_parameters(self, path: str):
        """Write the averaged weights in the format of `Block.save_parameters` (load with `load_parameters`)."""
        mx.nd.save(str(path), {name: s.as_in_context(mx.cpu()) for name, s in self.shadow.items()})

    def load_parameters(self, path: str, updates: int):
        """Read averaged weights written by `save_parameters` (or by `net.save_parameters`)."""
        loaded = mx.nd.load(str(path))
        missing = sorted(set(self.shadow) - set(loaded))
        if missing:
            raise ValueError(f"EMA weights '{path}' lack {len(missing)} parameters, e.g. {missing[0]}")
        for name, s in self.shadow.items():
            if loaded[name].shape != s.shape:
                raise ValueError(f"EMA weights '{path}': '{name}' has shape {loaded[name].shape}, "
                                 f"the network {s.shape}")
            s[:] = loaded[name].as_in_context(self.context)
        self.updates = int(updates)
