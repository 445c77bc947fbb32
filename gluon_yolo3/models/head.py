"""The YOLOv3 output head: one linear 1x1 conv per scale, reshaped to `(B, H, W, A, 5 + C)`."""
from __future__ import annotations

from typing import Sequence

from mxnet import gluon
from mxnet.gluon import nn

from gluon_yolo3.models.precision import float32
from gluon_yolo3.registry import HEADS


class HeadConv(nn.Conv2D):
    """The head's 1x1 Conv2D, optionally computed with zero output channels appended.

    `(B, C_in, H, W) -> (B, channels, H, W)`, the same values and parameters either way. With
    `pad_to` > 1 the weight and bias get zero rows up to a multiple of `pad_to` channels and the extra
    outputs are sliced off. Why: oneDNN (MXNet 1.9.1, CPU) answers a conv whose output channels are
    8 mod 16 (24 = 3 anchors x (5 + 3 classes)) with an 8-channel-blocked input gradient, and the
    BatchNorm backward before it then runs about 100x slower (80 ms instead of 0.9 ms for a 1024-channel
    tip at batch 8): 0.5 s of a 7 s Darknet-53 step. Off by default, so exported and quantized graphs hold
    a plain Convolution; the Trainer switches it on for CPU training (`YOLOHead.pad_outputs`).
    """

    compute_dtype = None        # the network's: the head itself computes in float32 (precision.py)

    def __init__(self, channels: int, **kwargs):
        super().__init__(channels, **kwargs)
        self.pad_to = 0

    def hybrid_forward(self, F, x, weight, bias=None):
        x = float32(F, x, self.compute_dtype)
        extra = (-self._channels) % self.pad_to if self.pad_to > 1 else 0
        if not extra or bias is None:
            return super().hybrid_forward(F, x, weight, bias)
        pad_w = F.repeat(F.zeros_like(F.slice_axis(weight, axis=0, begin=0, end=1)), repeats=extra,
                         axis=0)                                        # (extra, C_in, 1, 1) zeros
        pad_b = F.repeat(F.zeros_like(F.slice_axis(bias, axis=0, begin=0, end=1)), repeats=extra, axis=0)
        kwargs = dict(self._kwargs, num_filter=self._channels + extra, no_bias=False)
        out = F.Convolution(x, F.concat(weight, pad_w, dim=0), F.concat(bias, pad_b, dim=0), **kwargs)
        return F.slice_axis(out, axis=1, begin=0, end=self._channels)


@HEADS.register("yolov3")
class YOLOHead(gluon.HybridBlock):
    """Per scale a 1x1 Conv2D with bias and `A * (5 + C)` outputs, no activation.

    Inputs: tips finest first, tip s `(B, in_channels[s], H_s, W_s)`. Outputs finest first, scale s
    `(B, H_s, W_s, A_s, 5 + C)` (tx, ty, tw, th, objectness, C class logits), where conv channel
    `a * (5 + C) + k` at `(h, w)` lands in `out[:, h, w, a, k]` (Darknet's anchor-major layout).
    """

    def __init__(self, in_channels: Sequence[int], num_anchors: Sequence[int], num_classes: int, *,
                 prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        in_channels = [int(c) for c in in_channels]
        num_anchors = [int(a) for a in num_anchors]
        if len(in_channels) != len(num_anchors):
            raise ValueError(f"YOLOHead: {len(in_channels)} input scales (in_channels={in_channels}) "
                             f"but num_anchors has {len(num_anchors)} entries ({num_anchors})")
        if int(num_classes) < 1 or min(num_anchors, default=0) < 1:
            raise ValueError(f"YOLOHead: num_classes and every num_anchors entry must be >= 1, got "
                             f"num_classes={num_classes}, num_anchors={num_anchors}")
        self.num_anchors = tuple(num_anchors)
        self.num_classes = int(num_classes)
        with self.name_scope():
            self.outputs = nn.HybridSequential(prefix="")
            for s, (c, a) in enumerate(zip(in_channels, num_anchors)):
                self.outputs.add(HeadConv(a * (5 + self.num_classes), kernel_size=1, use_bias=True,
                                          in_channels=c, prefix=f"out{s}_"))

    def pad_outputs(self, on: bool = True):
        """Compute the output convs with 8 mod 16 channels padded to a multiple of 16 (off: plain).

        Same outputs and parameters, a faster backward on oneDNN CPUs (see `HeadConv`); call before
        hybridize.
        """
        for conv in self.outputs:
            conv.pad_to = 16 if on and conv._channels % 16 == 8 else 0

    def hybrid_forward(self, F, *tips):
        if len(tips) != len(self.num_anchors):
            raise ValueError(f"YOLOHead built for {len(self.num_anchors)} scales, got {len(tips)}")
        outs = []
        for conv, a, x in zip(self.outputs, self.num_anchors, tips):
            y = F.transpose(conv(x), axes=(0, 2, 3, 1))  # (B, H, W, A * (5 + C))
            outs.append(F.reshape(y, shape=(0, 0, 0, a, -1)))  # (B, H, W, A, 5 + C)
        return tuple(outs)
