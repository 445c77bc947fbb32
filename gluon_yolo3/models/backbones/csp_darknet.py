"""The yolov4-tiny trunk, CSPDarknet53-tiny (yolov4-tiny.cfg up to its 512-channel conv).

Its cross-stage-partial block is Darknet's `[route] layers=-1 groups=2 group_id=1`: a route that passes on the
second half of its input's channels (`group_id` 1 of 2 groups).
"""
from __future__ import annotations

from mxnet import gluon
from mxnet.gluon import nn

from gluon_yolo3.models.layers import ConvBNLeaky, round_channels
from gluon_yolo3.registry import BACKBONES


def route_group(F, x, channels: int, groups: int = 2, group_id: int = 1):
    """Darknet's `[route] groups=g group_id=k` on one layer: channels `[k * C / g, (k + 1) * C / g)` of `x`.

    `(B, channels, H, W) -> (B, channels / groups, H, W)`."""
    size = channels // groups
    return F.slice_axis(x, axis=1, begin=group_id * size, end=(group_id + 1) * size)


class CSPTinyBlock(gluon.HybridBlock):
    """One stage of yolov4-tiny: 3x3 conv to c, its second half through two 3x3 convs (c/2 each), their
    outputs concatenated (last first) and mixed by a 1x1 conv to c, then that beside the first conv's output,
    max-pooled 2x2/2.

    `(B, in_channels, H, W) -> (pooled (B, 2c, H/2, W/2), partial (B, c, H, W))`, `partial` being the 1x1
    conv's output (the feature yolov4-tiny's neck takes from the last stage).
    """

    def __init__(self, channels: int, in_channels: int, norm=None, **kwargs):
        super().__init__(**kwargs)
        half = channels // 2
        self.channels = channels
        with self.name_scope():
            self.conv_in = ConvBNLeaky(channels, 3, 1, norm, in_channels=in_channels, prefix="in_")
            self.conv1 = ConvBNLeaky(half, 3, 1, norm, in_channels=half, prefix="conv1_")
            self.conv2 = ConvBNLeaky(half, 3, 1, norm, in_channels=half, prefix="conv2_")
            self.mix = ConvBNLeaky(channels, 1, 1, norm, in_channels=channels, prefix="mix_")
            self.pool = nn.MaxPool2D(2, 2, ceil_mode=True, prefix="pool_")

    def hybrid_forward(self, F, x):
        x = self.conv_in(x)
        a = self.conv1(route_group(F, x, self.channels))
        b = self.conv2(a)
        partial = self.mix(F.concat(b, a, dim=1))               # [route] layers=-1,-2
        return self.pool(F.concat(x, partial, dim=1)), partial   # [route] layers=-6,-1; [maxpool]


@BACKBONES.register("csp_darknet_tiny")
class CSPDarknetTiny(gluon.HybridBlock):
    """CSPDarknet53-tiny, yolov4-tiny's trunk: two 3x3 stride-2 convs (32, 64), three CSP stages (64, 128,
    256, each ending in a 2x2/2 max-pool), a 3x3 conv to 512.

    `(B, 3, H, W) -> (C4 (B, 256w, H/16, W/16), C5 (B, 512w, H/32, W/32))`, finest first, C4 being the last
    stage's partial output before its pool; `w` is `width` (channels rounded to multiples of 8, at least 8).
    width=1.0 is exactly yolov4-tiny; its neck is yolov3-tiny's (`neck: {type: yolov3_tiny}`).
    """

    strides = (16, 32)

    def __init__(self, norm=None, width: float = 1.0, *, prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        c32, c64, c128, c256, c512 = (round_channels(c, width) for c in (32, 64, 128, 256, 512))
        self.channels = (c256, c512)
        with self.name_scope():
            self.stem = nn.HybridSequential(prefix="")
            self.stem.add(ConvBNLeaky(c32, 3, 2, norm, in_channels=3, prefix="stem0_"))
            self.stem.add(ConvBNLeaky(c64, 3, 2, norm, in_channels=c32, prefix="stem1_"))
            self.stages = nn.HybridSequential(prefix="")
            in_ch = c64
            for i, c in enumerate((c64, c128, c256)):
                self.stages.add(CSPTinyBlock(c, in_ch, norm, prefix=f"stage{i}_"))
                in_ch = 2 * c
            self.conv_out = ConvBNLeaky(c512, 3, 1, norm, in_channels=in_ch, prefix="out_")

    def hybrid_forward(self, F, x):
        x = self.stem(x)
        partial = None
        for stage in self.stages:
            x, partial = stage(x)
        return partial, self.conv_out(x)
