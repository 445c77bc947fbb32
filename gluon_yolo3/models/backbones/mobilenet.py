"""GluonCV's MobileNet v1 feature extractors, cut where GluonCV's `yolo3_mobilenet*` cuts them.

The layers come from GluonCV's own model definition (`gluoncv.model_zoo.mobilenet.get_mobilenet`, never
with pretrained weights): its `features` sequence of 83 layers (conv, BN, ReLU triples) is split like
`yolo3_mobilenet1.0_voc` does, `features[:33]` (stride 8), `features[33:69]` (stride 16) and
`features[69:-2]` (stride 32, without the global pooling and flatten). The three pieces are kept as
`stages.0`, `stages.1`, `stages.2`, so parameter names match GluonCV's `yolo3_mobilenet*` `stages.*`.
"""
from __future__ import annotations

from mxnet import gluon
from mxnet.gluon import nn

from gluon_yolo3.models.layers import make_norm
from gluon_yolo3.registry import BACKBONES

# GluonCV's yolo3_mobilenet* cut points in MobileNet's `features`
STAGE_CUTS = ((0, 33), (33, 69), (69, -2))


def _norm_layer(norm):
    """A `norm_layer` for GluonCV's model definitions that builds our normalisation (`make_norm`)."""

    def build(scale=True, **_):   # GluonCV passes scale=True and its norm_kwargs; ours come from `norm`
        return make_norm(norm)

    return build


class MobileNetFeatures(gluon.HybridBlock):
    """GluonCV's MobileNet v1 with width `multiplier`, cut into three stages as GluonCV's YOLOv3 does.

    `(B, 3, H, W) -> (C3 (B, 256m, H/8, W/8), C4 (B, 512m, H/16, W/16), C5 (B, 1024m, H/32, W/32))`,
    finest first, m = multiplier (channel counts truncated as GluonCV does: int(c * m)).
    """

    strides = (8, 16, 32)

    def __init__(self, multiplier: float = 1.0, norm=None, *, prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        from gluoncv.model_zoo.mobilenet import get_mobilenet   # GluonCV's definition, no weights
        if not multiplier > 0:
            raise ValueError(f"MobileNet multiplier must be positive, got {multiplier!r}")
        self.multiplier = float(multiplier)
        self.channels = tuple(int(c * self.multiplier) for c in (256, 512, 1024))
        with self.name_scope():
            base = get_mobilenet(multiplier=self.multiplier, pretrained=False,
                                 norm_layer=_norm_layer(norm), prefix="mobilenet_")
            self.stages = nn.HybridSequential(prefix="")
            for begin, end in STAGE_CUTS:
                self.stages.add(base.features[begin:end])

    def hybrid_forward(self, F, x):
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return tuple(outputs)


@BACKBONES.register("mobilenet1.0")
class MobileNet1_0(MobileNetFeatures):
    """GluonCV's mobilenet1.0 cut as yolo3_mobilenet1.0 uses it: 256, 512, 1024 channels at strides 8, 16, 32."""

    def __init__(self, norm=None, *, prefix=None, params=None):
        super().__init__(1.0, norm, prefix=prefix, params=params)


@BACKBONES.register("mobilenet0.25")
class MobileNet0_25(MobileNetFeatures):
    """GluonCV's mobilenet0.25 cut as yolo3_mobilenet0.25 uses it: 64, 128, 256 channels at strides 8, 16, 32."""

    def __init__(self, norm=None, *, prefix=None, params=None):
        super().__init__(0.25, norm, prefix=prefix, params=params)
