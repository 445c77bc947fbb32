"""yolov3-spp.cfg's neck: the YOLOv3 top-down neck whose coarsest detection block holds an SPP block."""
from __future__ import annotations

from typing import Sequence

from mxnet import gluon
from mxnet.gluon import nn

from gluon_yolo3.models.layers import ConvBNLeaky
from gluon_yolo3.models.neck import YOLOv3Neck
from gluon_yolo3.registry import NECKS

SPP_POOLS = (5, 9, 13)


class SPP(gluon.HybridBlock):
    """Spatial pyramid pooling as in yolov3-spp.cfg: max-pools of size k, stride 1, padding k // 2.

    `(B, C, H, W) -> (B, (len(pools) + 1) * C, H, W)`, concatenated largest pool first and the input
    last (Darknet's `[route] layers=-1,-3,-5,-6` after pools 5, 9, 13). Darknet ignores the cells
    outside the image in a max-pool window, and so does MXNet's max pooling with padding.
    """

    def __init__(self, pools: Sequence[int] = SPP_POOLS, **kwargs):
        super().__init__(**kwargs)
        self.pools = tuple(int(k) for k in pools)
        for k in self.pools:
            if k < 1 or k % 2 == 0:
                raise ValueError(f"SPP pool sizes must be odd and >= 1 (to keep H, W), got {k}")

    def hybrid_forward(self, F, x):
        pooled = [F.Pooling(x, kernel=(k, k), stride=(1, 1), pad=(k // 2, k // 2), pool_type="max")
                  for k in reversed(self.pools)]
        return F.concat(*pooled, x, dim=1)


class SPPDetectionBlock(gluon.HybridBlock):
    """yolov3-spp's coarsest detection block: 1x1 c, 3x3 2c, 1x1 c, SPP, 1x1 c, 3x3 2c, 1x1 c, then the
    3x3 2c tip.

    `(B, in_channels, H, W) -> (route (B, c, H, W), tip (B, 2c, H, W))`.
    """

    def __init__(self, channels: int, in_channels: int, norm=None, pools: Sequence[int] = SPP_POOLS,
                 **kwargs):
        super().__init__(**kwargs)
        c = int(channels)
        with self.name_scope():
            self.pre = nn.HybridSequential(prefix="")
            self.pre.add(ConvBNLeaky(c, 1, 1, norm, in_channels=in_channels, prefix="conv0_"))
            self.pre.add(ConvBNLeaky(2 * c, 3, 1, norm, in_channels=c, prefix="conv1_"))
            self.pre.add(ConvBNLeaky(c, 1, 1, norm, in_channels=2 * c, prefix="conv2_"))
            self.spp = SPP(pools, prefix="spp_")
            self.post = nn.HybridSequential(prefix="")
            self.post.add(ConvBNLeaky(c, 1, 1, norm, in_channels=(len(pools) + 1) * c, prefix="conv3_"))
            self.post.add(ConvBNLeaky(2 * c, 3, 1, norm, in_channels=c, prefix="conv4_"))
            self.post.add(ConvBNLeaky(c, 1, 1, norm, in_channels=2 * c, prefix="conv5_"))
            self.tip = ConvBNLeaky(2 * c, 3, 1, norm, in_channels=c, prefix="tip_")

    def hybrid_forward(self, F, x):
        route = self.post(self.spp(self.pre(x)))
        return route, self.tip(route)


@NECKS.register("yolov3_spp")
class YOLOv3SPPNeck(YOLOv3Neck):
    """yolov3-spp.cfg's neck: the `yolov3` neck with SPP in the coarsest detection block.

    Inputs: backbone features finest first, feature s `(B, in_channels[s], H_s, W_s)`, `H_s = 2 H_{s+1}`.
    Output: tips finest first, tip s `(B, channels[s], H_s, W_s)`, channels as in the `yolov3` neck
    (1024, 512, 256 tip channels for Darknet-53).
    """

    def __init__(self, in_channels: Sequence[int], norm=None, pools: Sequence[int] = SPP_POOLS, *,
                 prefix=None, params=None):
        self.pools = tuple(pools)
        super().__init__(in_channels, norm, prefix=prefix, params=params)

    def detection_block(self, coarsest, channels, in_channels, norm, prefix):
        if coarsest:
            return SPPDetectionBlock(channels, in_channels, norm, self.pools, prefix=prefix)
        return super().detection_block(coarsest, channels, in_channels, norm, prefix)
