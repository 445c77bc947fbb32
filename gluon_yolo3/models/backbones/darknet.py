"""Darknet backbones: Darknet-53 (yolov3.cfg) and the yolov3-tiny trunk (yolov3-tiny.cfg)."""
from __future__ import annotations

from mxnet import gluon
from mxnet.gluon import nn

from gluon_yolo3.models.layers import ConvBNLeaky, round_channels
from gluon_yolo3.models.precision import cast, float32
from gluon_yolo3.registry import BACKBONES

# (width, residual blocks) of the five stride-2 stages of Darknet-53
DARKNET53_STAGES = ((64, 1), (128, 2), (256, 8), (512, 8), (1024, 4))


class DarknetResidual(gluon.HybridBlock):
    """1x1 conv to `channels // 2`, 3x3 conv back to `channels`, plus the input.

    `(B, channels, H, W) -> (B, channels, H, W)`.
    """

    def __init__(self, channels: int, norm=None, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.reduce = ConvBNLeaky(channels // 2, 1, 1, norm, in_channels=channels,
                                      prefix="conv1_")
            self.expand = ConvBNLeaky(channels, 3, 1, norm, in_channels=channels // 2,
                                      prefix="conv2_")

    def hybrid_forward(self, F, x):
        return x + self.expand(self.reduce(x))


@BACKBONES.register("darknet53")
class Darknet53(gluon.HybridBlock):
    """Darknet-53 as in Darknet's yolov3.cfg, without the classifier.

    `(B, 3, H, W) -> (C3 (B, 256, H/8, W/8), C4 (B, 512, H/16, W/16), C5 (B, 1024, H/32, W/32))`,
    finest first; H and W should be multiples of 32.
    """

    channels = (256, 512, 1024)
    strides = (8, 16, 32)

    def __init__(self, norm=None, *, prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        with self.name_scope():
            self.stem = ConvBNLeaky(32, 3, 1, norm, in_channels=3, prefix="stem_")
            self.stages = nn.HybridSequential(prefix="")
            in_ch = 32
            for i, (width, repeats) in enumerate(DARKNET53_STAGES, start=1):
                stage = nn.HybridSequential(prefix=f"stage{i}_")
                with stage.name_scope():
                    stage.add(ConvBNLeaky(width, 3, 2, norm, in_channels=in_ch, prefix="down_"))
                    for j in range(repeats):
                        stage.add(DarknetResidual(width, norm, prefix=f"block{j}_"))
                self.stages.add(stage)
                in_ch = width

    def hybrid_forward(self, F, x):
        x = self.stem(x)
        outputs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i >= 2:  # after the 256, 512 and 1024 stages
                outputs.append(x)
        return tuple(outputs)


class DarknetPadPool(gluon.HybridBlock):
    """Darknet's maxpool size 2 stride 1: pad one row/column at the right/bottom, then pool.

    `(B, C, H, W) -> (B, C, H, W)`; the padding repeats the edge, which equals Darknet's maximum over
    the in-image part of the window.
    """

    compute_dtype = None        # precision.py: the padding runs in float32 (no bfloat16 Pad in MXNet 1.9.1)

    def hybrid_forward(self, F, x):
        x = F.pad(float32(F, x, self.compute_dtype), mode="edge", pad_width=(0, 0, 0, 0, 0, 1, 0, 1))
        return F.Pooling(cast(F, x, self.compute_dtype), kernel=(2, 2), stride=(1, 1), pool_type="max")


@BACKBONES.register("darknet_tiny")
class DarknetTiny(gluon.HybridBlock):
    """The yolov3-tiny trunk (yolov3-tiny.cfg up to the 1024-channel conv).

    `(B, 3, H, W) -> (C4 (B, 256w, H/16, W/16), C5 (B, 1024w, H/32, W/32))`, finest first, where `w` is
    `width` (channel counts rounded to multiples of 8, at least 8); width=1.0 is exactly yolov3-tiny.
    """

    strides = (16, 32)

    def __init__(self, norm=None, width: float = 1.0, *, prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        ch = [round_channels(c, width) for c in (16, 32, 64, 128, 256, 512, 1024)]
        self.channels = (ch[4], ch[6])
        with self.name_scope():
            # conv 16..128, each followed by a 2x2/2 maxpool; then the conv whose output is C4
            self.body16 = nn.HybridSequential(prefix="")
            in_ch = 3
            for i, c in enumerate(ch[:5]):
                if i > 0:
                    self.body16.add(nn.MaxPool2D(2, 2, ceil_mode=True, prefix=f"pool{i - 1}_"))
                self.body16.add(ConvBNLeaky(c, 3, 1, norm, in_channels=in_ch, prefix=f"conv{i}_"))
                in_ch = c
            self.body32 = nn.HybridSequential(prefix="")
            self.body32.add(nn.MaxPool2D(2, 2, ceil_mode=True, prefix="pool4_"))
            self.body32.add(ConvBNLeaky(ch[5], 3, 1, norm, in_channels=ch[4], prefix="conv5_"))
            self.body32.add(DarknetPadPool(prefix="pool5_"))
            self.body32.add(ConvBNLeaky(ch[6], 3, 1, norm, in_channels=ch[5], prefix="conv6_"))

    def hybrid_forward(self, F, x):
        c4 = self.body16(x)
        c5 = self.body32(c4)
        return c4, c5
