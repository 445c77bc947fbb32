"""YOLOv3 necks: the top-down detection blocks of yolov3.cfg and the two-scale yolov3-tiny neck."""
from __future__ import annotations

from typing import Sequence

from mxnet import gluon
from mxnet.gluon import nn

from gluon_yolo3.models.layers import ConvBNLeaky, round_channels
from gluon_yolo3.models.precision import cast, float32
from gluon_yolo3.registry import NECKS


class DetectionBlock(gluon.HybridBlock):
    """Five convs 1x1 c, 3x3 2c, 1x1 c, 3x3 2c, 1x1 c, then the 3x3 2c "tip".

    `(B, in_channels, H, W) -> (route (B, c, H, W), tip (B, 2c, H, W))`.
    """

    def __init__(self, channels: int, in_channels: int, norm=None, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.body = nn.HybridSequential(prefix="")
            in_ch = in_channels
            for i in range(5):
                out_ch = channels if i % 2 == 0 else 2 * channels
                kernel = 1 if i % 2 == 0 else 3
                self.body.add(ConvBNLeaky(out_ch, kernel, 1, norm, in_channels=in_ch,
                                          prefix=f"conv{i}_"))
                in_ch = out_ch
            self.tip = ConvBNLeaky(2 * channels, 3, 1, norm, in_channels=channels, prefix="tip_")

    def hybrid_forward(self, F, x):
        route = self.body(x)
        return route, self.tip(route)


def upsample2(F, x, dtype=None):
    """Nearest-neighbour x2: `(B, C, H, W) -> (B, C, 2H, 2W)`, in float32 (MXNet 1.9.1 has no bfloat16
    UpSampling on the CPU) and back in the compute `dtype`."""
    return cast(F, F.UpSampling(float32(F, x, dtype), scale=2, sample_type="nearest", num_args=1), dtype)


@NECKS.register("yolov3")
class YOLOv3Neck(gluon.HybridBlock):
    """yolov3.cfg's top-down neck over any number of scales.

    Inputs: backbone features finest first, feature s `(B, in_channels[s], H_s, W_s)` with
    `H_s = 2 * H_{s+1}`. Output: tips finest first, tip s `(B, channels[s], H_s, W_s)`, where
    `channels[s] = 2 * c_s`, `c_coarsest = in_channels[-1] // 2` and c halves at each finer scale
    (1024, 512, 256 tip channels for Darknet-53), unless `widths` gives every c_s (finest first).
    """

    compute_dtype = None        # precision.py: the upsampling and the concatenation follow it

    def __init__(self, in_channels: Sequence[int], norm=None, *, widths: Sequence[int] | None = None,
                 prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        in_channels = [int(c) for c in in_channels]
        name = type(self).__name__
        if not in_channels:
            raise ValueError(f"{name} needs at least one input feature (in_channels is empty)")
        n = len(in_channels)
        if widths is None:   # block widths c per scale, finest first: halving from the coarsest
            widths = [max(1, (in_channels[-1] // 2) >> (n - 1 - s)) for s in range(n)]
        widths = [int(w) for w in widths]
        if len(widths) != n or min(widths) < 1:
            raise ValueError(f"{name}: widths {widths} must give one positive width per backbone scale "
                             f"({n} scales, in_channels={in_channels})")
        self.widths = tuple(widths)
        self.channels = tuple(2 * c for c in widths)
        with self.name_scope():
            self.blocks = nn.HybridSequential(prefix="")   # coarsest first
            self.reduces = nn.HybridSequential(prefix="")  # route 1x1 before upsampling, coarsest first
            block_in = in_channels[-1]
            for s in reversed(range(n)):
                self.blocks.add(self.detection_block(s == n - 1, widths[s], block_in, norm,
                                                     prefix=f"block{s}_"))
                if s > 0:   # the transition has the finer block's width (c / 2 when halving)
                    reduced = widths[s - 1]
                    self.reduces.add(ConvBNLeaky(reduced, 1, 1, norm, in_channels=widths[s],
                                                 prefix=f"reduce{s}_"))
                    block_in = reduced + in_channels[s - 1]

    def detection_block(self, coarsest: bool, channels: int, in_channels: int, norm, prefix: str):
        """The block of one scale (a variant may give the coarsest scale another, e.g. with SPP)."""
        return DetectionBlock(channels, in_channels, norm, prefix=prefix)

    def hybrid_forward(self, F, *features):
        if len(features) != len(self.channels):
            raise ValueError(f"{type(self).__name__} built for {len(self.channels)} features, "
                             f"got {len(features)}")
        tips = []
        x = features[-1]
        for k in range(len(features)):
            route, tip = self.blocks[k](x)
            tips.append(tip)
            if k < len(features) - 1:
                up = upsample2(F, self.reduces[k](route), self.compute_dtype)
                x = F.concat(up, cast(F, features[-2 - k], self.compute_dtype), dim=1)
        return tuple(reversed(tips))


@NECKS.register("yolov3_tiny")
class YOLOv3TinyNeck(gluon.HybridBlock):
    """yolov3-tiny.cfg's neck on (C4, C5) from `darknet_tiny`.

    `(C4 (B, in_channels[0], 2h, 2w), C5 (B, in_channels[1], h, w))` ->
    `(tip16 (B, 256w, 2h, 2w), tip32 (B, 512w, h, w))`, channel counts times `width`.
    """

    compute_dtype = None        # precision.py: the upsampling and the concatenation follow it

    def __init__(self, in_channels: Sequence[int], norm=None, width: float = 1.0, *,
                 prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        in_channels = [int(c) for c in in_channels]
        if len(in_channels) != 2:
            raise ValueError(f"YOLOv3TinyNeck needs two input features (strides 16, 32), "
                             f"got in_channels={in_channels}")
        c128, c256, c512 = (round_channels(c, width) for c in (128, 256, 512))
        self.channels = (c256, c512)
        with self.name_scope():
            self.route32 = ConvBNLeaky(c256, 1, 1, norm, in_channels=in_channels[1], prefix="route32_")
            self.tip32 = ConvBNLeaky(c512, 3, 1, norm, in_channels=c256, prefix="tip32_")
            self.reduce = ConvBNLeaky(c128, 1, 1, norm, in_channels=c256, prefix="reduce_")
            self.tip16 = ConvBNLeaky(c256, 3, 1, norm, in_channels=c128 + in_channels[0],
                                     prefix="tip16_")

    def hybrid_forward(self, F, c4, c5):
        route = self.route32(c5)
        tip32 = self.tip32(route)
        up = upsample2(F, self.reduce(route), self.compute_dtype)
        tip16 = self.tip16(F.concat(up, cast(F, c4, self.compute_dtype), dim=1))
        return tip16, tip32
