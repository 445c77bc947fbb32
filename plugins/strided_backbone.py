"""An example backbone plugin: a plain stack of 3x3 convolutions that halves the image with strided convolutions
(no max-pool), with two outputs at strides 16 and 32, so it fits the `yolov3_tiny` neck and two-scale anchors.

Use it from a recipe (or with `--set "plugins=[plugins/strided_backbone.py]"` from the checkout):

    plugins: [../plugins/strided_backbone.py]      # relative to the recipe
    model:
      backbone: {type: strided_tiny, width: 0.5}
      neck: {type: yolov3_tiny, width: 0.5}

A backbone is a HybridBlock registered in `BACKBONES` that takes `norm` (the recipe's model.norm, passed by the
builder) and returns its feature maps finest first, with the attributes `channels` (one per output) and
`strides`. Built from `ConvBNLeaky`, it takes part in bfloat16 training and oneDNN fusion with no extra code.
Copy this file to start your own.
"""
from mxnet import gluon
from mxnet.gluon import nn

from gluon_yolo3.models.layers import ConvBNLeaky, round_channels
from gluon_yolo3.registry import BACKBONES


@BACKBONES.register("strided_tiny")
class StridedTiny(gluon.HybridBlock):
    """Plain 3x3 convolutions, each stage halving the image with a stride-2 convolution.

    `(B, 3, H, W) -> (C4 (B, 256w, H/16, W/16), C5 (B, 512w, H/32, W/32))`, finest first, `w` being `width`
    (channels rounded to multiples of 8, at least 8); H and W multiples of 32.
    """

    strides = (16, 32)

    def __init__(self, norm=None, width: float = 1.0, *, prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        widths = [round_channels(c, width) for c in (16, 32, 64, 128, 256, 512)]
        self.channels = (widths[4], widths[5])
        with self.name_scope():
            self.body16 = nn.HybridSequential(prefix="")     # strides 2, 4, 8, 16
            in_ch = 3
            for i, c in enumerate(widths[:5]):
                self.body16.add(ConvBNLeaky(c, 3, 2 if i > 0 else 1, norm, in_channels=in_ch, prefix=f"conv{i}_"))
                in_ch = c
            self.body32 = ConvBNLeaky(widths[5], 3, 2, norm, in_channels=in_ch, prefix="conv5_")

    def hybrid_forward(self, F, x):
        c4 = self.body16(x)
        return c4, self.body32(c4)
