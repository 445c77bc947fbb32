"""Optimizers, registered so that recipes can name them (`train.optimizer: {type: sgd, ...}`)."""
from __future__ import annotations

import mxnet as mx

from ..registry import OPTIMIZERS


@OPTIMIZERS.register("sgd")
def sgd(lr: float, lr_scheduler=None, momentum: float = 0.9, wd: float = 5e-4,
        clip_gradient: float | None = None):
    """SGD with momentum and weight decay (Darknet's and GluonCV's choice for YOLOv3)."""
    kwargs = dict(learning_rate=lr, momentum=momentum, wd=wd, lr_scheduler=lr_scheduler)
    if clip_gradient:
        kwargs["clip_gradient"] = float(clip_gradient)
    return mx.optimizer.SGD(**kwargs)


@OPTIMIZERS.register("adam")
def adam(lr: float, lr_scheduler=None, wd: float = 0.0, beta1: float = 0.9, beta2: float = 0.999,
         clip_gradient: float | None = None):
    """Adam (MXNet's), with optional L2 weight decay."""
    kwargs = dict(learning_rate=lr, wd=wd, beta1=beta1, beta2=beta2, lr_scheduler=lr_scheduler)
    if clip_gradient:
        kwargs["clip_gradient"] = float(clip_gradient)
    return mx.optimizer.Adam(**kwargs)
