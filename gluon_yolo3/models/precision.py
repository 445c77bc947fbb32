"""bfloat16 compute for the convolutions, float32 for everything that keeps state or decides.

    set_compute_dtype(net, "bfloat16")    # then (re-)hybridize: the graph is traced again
    set_compute_dtype(net, None)          # back to float32

With "bfloat16", every convolution of the Darknet blocks (`ConvBNLeaky`: conv, BatchNorm, LeakyReLU) casts its
input and its float32 weight to bfloat16 and computes in bfloat16, as do what runs between them (residual
additions, pooling, concatenation); BatchNorm keeps its parameters and running statistics in float32. The
head's output convolutions, decoding, NMS and the loss stay float32, and so do the weights, their gradients
(the casts' backward returns float32), the gradient sum, clipping, the update and the EMA. Operators MXNet 1.9.1
has no bfloat16 kernel for on the CPU (UpSampling, Pad) run in float32 between two casts. A backbone made of
other blocks (GluonCV's MobileNet) computes in float32 and feeds the bfloat16 neck through a cast.

On CPUs with AMX (`amx_bf16`) oneDNN runs bfloat16 convolutions on the matrix tiles (`amx.py` grants them);
with AVX512-BF16 only, on vector units. The blocks that take part carry a `compute_dtype` attribute.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from mxnet.gluon import nn

from gluon_yolo3.amx import require_bf16

BFLOAT16 = np.dtype([("bfloat16", np.uint16)])      # how MXNet 1.9 spells bfloat16
COMPUTE_DTYPES = ("bfloat16",)


def cast(F, x, dtype: Optional[str]):
    """`x` in the compute dtype (`amp_cast`: its gradient is cast back); unchanged for float32 (None)."""
    return x if dtype is None else F.amp_cast(x, dtype=BFLOAT16)


def float32(F, x, dtype: Optional[str]):
    """`x` back in float32 when the network computes in another dtype."""
    return x if dtype is None else F.amp_cast(x, dtype="float32")


def inference_dtype(precision: Optional[str]) -> Optional[str]:
    """`--precision` -> the compute dtype: None for float32 (or None), "bfloat16" on a CPU that runs it fast; a
    clear error otherwise."""
    if precision in (None, "float32"):
        return None
    if precision not in COMPUTE_DTYPES:
        raise ValueError(f"--precision must be float32 or bfloat16, got {precision!r}")
    require_bf16("--precision bfloat16", "Use float32 (or int8: gluon-yolo3 quantize).")
    return precision


def set_compute_dtype(net, dtype: Optional[str]):
    """Make every block of `net` that takes part (a `compute_dtype` attribute) compute in `dtype` (None: float32)."""
    if dtype is not None and dtype not in COMPUTE_DTYPES:
        raise ValueError(f"compute dtype must be one of {', '.join(COMPUTE_DTYPES)} or None (float32), got {dtype!r}")
    stack = [net]
    while stack:
        block = stack.pop()
        if hasattr(block, "compute_dtype"):
            block.compute_dtype = dtype
        stack.extend(block._children.values())
    net._clear_cached_op()


class Conv2D(nn.Conv2D):
    """Gluon's Conv2D computing in `compute_dtype` (input, weight and bias cast; the parameters stay float32).

    `(B, C_in, H, W) -> (B, channels, H', W')`, in the compute dtype."""

    compute_dtype: Optional[str] = None

    def hybrid_forward(self, F, x, weight, bias=None):
        dtype = self.compute_dtype
        return super().hybrid_forward(F, cast(F, x, dtype), cast(F, weight, dtype),
                                      None if bias is None else cast(F, bias, dtype))
