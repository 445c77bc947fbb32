"""The YOLOv3 output head: one linear 1x1 conv per scale, reshaped to `(B, H, W, A, 5 + C)`."""
from __future__ import annotations

from typing import Sequence

from mxnet import gluon
from mxnet.gluon import nn

from gluon_yolo3.registry import HEADS


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
                self.outputs.add(nn.Conv2D(a * (5 + self.num_classes), kernel_size=1, use_bias=True,
                                           in_channels=c, prefix=f"out{s}_"))

    def hybrid_forward(self, F, *tips):
        if len(tips) != len(self.num_anchors):
            raise ValueError(f"YOLOHead built for {len(self.num_anchors)} scales, got {len(tips)}")
        outs = []
        for conv, a, x in zip(self.outputs, self.num_anchors, tips):
            y = F.transpose(conv(x), axes=(0, 2, 3, 1))  # (B, H, W, A * (5 + C))
            outs.append(F.reshape(y, shape=(0, 0, 0, a, -1)))  # (B, H, W, A, 5 + C)
        return tuple(outs)
