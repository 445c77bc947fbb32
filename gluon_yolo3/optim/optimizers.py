"""Optimizers, registered so that recipes can name them (`train.optimizer: {type: sgd, ...}`)."""
from __future__ import annotations

import mxnet as mx
import numpy as np

from ..registry import OPTIMIZERS


class SGD(mx.optimizer.SGD):
    """MXNet's SGD (same arguments, state and update rule), applied one tensor at a time.

    MXNet 1.9.1 groups tensors into one `multi_sgd_mom_update` per four, a kernel much slower on a CPU than
    one `sgd_mom_update` per tensor: darknet53's 61.6 M weights in 70 to 80 ms against 130 to 150 alone
    (`python benchmarks/optimizer_update.py`), about 120 ms against 360 ms inside a bf16 training step
    (`python benchmarks/profile_step.py --amp bfloat16`). Both compute
    `mom = momentum * mom - lr * (rescale * clip(grad) + wd * weight); weight += mom`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.aggregate_num = 0          # the updater then hands over one tensor per call

    def update(self, index, weight, grad, state):
        """`weight`, `grad`, `state` (momentum or None): NDArrays of one parameter's shape, updated in place."""
        self._update_count(index)
        kwargs = {"lr": self._get_lr(index), "wd": self._get_wd(index), "rescale_grad": self.rescale_grad}
        if self.clip_gradient:
            kwargs["clip_gradient"] = self.clip_gradient
        if state is None:
            mx.nd.sgd_update(weight, grad, out=weight, lazy_update=self.lazy_update, **kwargs)
        else:
            mx.nd.sgd_mom_update(weight, grad, state, out=weight, lazy_update=self.lazy_update,
                                 momentum=self.momentum, **kwargs)

    def update_multi_precision(self, index, weight, grad, state):
        if self.multi_precision and weight.dtype == np.float16:    # float16 weights, float32 master copy
            return super().update_multi_precision(index, weight, grad, state)
        return self.update(index, weight, grad, state)


@OPTIMIZERS.register("sgd")
def sgd(lr: float, lr_scheduler=None, momentum: float = 0.9, wd: float = 5e-4,
        clip_gradient: float | None = None):
    """SGD with momentum and weight decay (Darknet's and GluonCV's choice for YOLOv3)."""
    kwargs = dict(learning_rate=lr, momentum=momentum, wd=wd, lr_scheduler=lr_scheduler)
    if clip_gradient:
        kwargs["clip_gradient"] = float(clip_gradient)
    return SGD(**kwargs)


@OPTIMIZERS.register("adam")
def adam(lr: float, lr_scheduler=None, wd: float = 0.0, beta1: float = 0.9, beta2: float = 0.999,
         clip_gradient: float | None = None):
    """Adam (MXNet's), with optional L2 weight decay."""
    kwargs = dict(learning_rate=lr, wd=wd, beta1=beta1, beta2=beta2, lr_scheduler=lr_scheduler)
    if clip_gradient:
        kwargs["clip_gradient"] = float(clip_gradient)
    return mx.optimizer.Adam(**kwargs)
