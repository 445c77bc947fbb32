"""GluonCV's YOLOv3 neck: the yolov3 top-down detection blocks with explicitly given widths.

GluonCV builds its neck from `filters` (block widths, coarsest first): `[512, 256, 128]` for darknet53 and
mobilenet1.0, where it equals our `yolov3` neck, but `[256, 128, 128]` for mobilenet0.25, which the
`yolov3` neck's halving rule cannot express. GluonCV's transition (1x1 conv before upsampling) from one
scale to the next finer has the finer block's width. Parameter structure equals `yolov3`'s (`blocks.k`
coarsest first, `reduces.k`), so converters and checkpoints treat both alike.
"""
from __future__ import annotations

from typing import Sequence

from mxnet import gluon
from mxnet.gluon import nn

from gluon_yolo3.models.layers import ConvBNLeaky
from gluon_yolo3.models.neck import DetectionBlock, YOLOv3Neck
from gluon_yolo3.registry import NECKS


@NECKS.register("yolov3_gluoncv")
class YOLOv3WidthsNeck(YOLOv3Neck):
    """GluonCV's YOLOv3 neck: yolov3 detection blocks with block widths `widths` given per scale.

    Inputs: backbone features finest first, feature s `(B, in_channels[s], H_s, W_s)`, `H_s = 2 H_{s+1}`.
    Output: tips finest first, tip s `(B, 2 * widths[s], H_s, W_s)`. `widths` is finest first (GluonCV's
    `filters` reversed: [128, 256, 512] for darknet53 and mobilenet1.0, [128, 128, 256] for
    mobilenet0.25); the 1x1 transition from scale s to s - 1 has `widths[s - 1]` channels.
    """

    def __init__(self, in_channels: Sequence[int], widths: Sequence[int], norm=None, *, prefix=None,
                 params=None):
        gluon.HybridBlock.__init__(self, prefix=prefix, params=params)
        in_channels = [int(c) for c in in_channels]
        widths = [int(w) for w in widths]
        if not in_channels:
            raise ValueError("yolov3_gluoncv neck needs at least one input feature (in_channels is empty)")
        if len(widths) != len(in_channels) or min(widths) < 1:
            raise ValueError(f"yolov3_gluoncv neck: widths {widths} must give one positive width per "
                             f"backbone scale ({len(in_channels)} scales, in_channels={in_channels})")
        n = len(in_channels)
        self.widths = tuple(widths)
        self.channels = tuple(2 * c for c in widths)
        with self.name_scope():
            self.blocks = nn.HybridSequential(prefix="")   # coarsest first
            self.reduces = nn.HybridSequential(prefix="")  # transitions, coarsest first
            block_in = in_channels[-1]
            for s in reversed(range(n)):
                c = widths[s]
                self.blocks.add(DetectionBlock(c, block_in, norm, prefix=f"block{s}_"))
                if s > 0:
                    reduced = widths[s - 1]
                    self.reduces.add(ConvBNLeaky(reduced, 1, 1, norm, in_channels=c,
                                                 prefix=f"reduce{s}_"))
                    block_in = reduced + in_channels[s - 1]
