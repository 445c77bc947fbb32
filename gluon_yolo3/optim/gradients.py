"""The summed gradient before an update: its global norm (which also tells whether it is finite) and clipping."""
from __future__ import annotations

from typing import Iterable, Sequence, Tuple

import mxnet as mx
import numpy as np


def sums_of_squares(grads: Sequence[mx.nd.NDArray]) -> Tuple[float, np.ndarray]:
    """(global norm, per-tensor sums of squares (N,) float64) of `grads`: one fused `multi_sum_sq` per 64 tensors
    and one wait. A tensor holding NaN or infinity (or whose squares overflow float32) makes its sum and the norm
    non-finite."""
    squares = mx.nd.concat(*[mx.nd.multi_sum_sq(*grads[i:i + 64], num_arrays=len(grads[i:i + 64]))
                             for i in range(0, len(grads), 64)], dim=0).asnumpy().astype(np.float64)
    return float(np.sqrt(squares.sum())), squares


def clip(grads: Iterable[mx.nd.NDArray], norm: float, max_norm: float):
    """Scale `grads` in place so that their global norm `norm` becomes `max_norm` (nothing when it is below:
    `grads` may be a generator, not even walked then)."""
    if norm > max_norm:
        scale = max_norm / (norm + 1e-6)
        for grad in grads:
            grad *= scale
