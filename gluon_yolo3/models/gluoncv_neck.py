"""GluonCV's YOLOv3 neck: the yolov3 top-down detection blocks with explicitly given widths.

GluonCV builds its neck from `filters` (block widths, coarsest first): `[512, 256, 128]` for darknet53 and
mobilenet1.0, where it equals our `yolov3` neck, but `[256, 128, 128]` for mobilenet0.25, which the
`yolov3` neck's halving rule cannot express. GluonCV's transition (1x1 conv before upsampling) from one
scale to the next finer has the finer block's width. Parameter structure equals `yolov3`'s (`blocks.k`
coarsest first, `reduces.k`), so converters and checkpoints treat both alike.
"""
from __future__ import annotations

from typing import Sequence

from gluon_yolo3.models.neck import YOLOv3Neck
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
        super().__init__(in_channels, norm, widths=widths, prefix=prefix, params=params)
