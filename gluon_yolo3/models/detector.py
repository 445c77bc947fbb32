"""The YOLOv3 detector: backbone -> neck -> head, plus decoding and NMS for inference."""
from __future__ import annotations

import math
import warnings
from typing import Any, Mapping

from mxnet import autograd, gluon

from ..postprocess.decode import YOLODecoder, decode, detection_scores
from ..schema import RecipeError
from ..registry import BACKBONES, HEADS, NECKS, NMS


class YOLOv3(gluon.HybridBlock):
    """`net(x)`, x `(B, 3, H, W)` (H, W multiples of the largest stride).

    Under `autograd.record()` (train mode): the raw outputs per scale, finest first, each
    `(B, H/s, W/s, A, 5 + C)`. Otherwise: detections after NMS, ids `(B, K, 1)`, scores `(B, K, 1)`,
    boxes `(B, K, 4)` x1y1x2y2 input pixels, padded with -1.
    """

    def __init__(self, backbone, neck, head, anchors, num_classes: int, nms, scale_x_y=1.0, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.anchors = [[list(map(float, a)) for a in group] for group in anchors]
        self.strides = tuple(backbone.strides)
        self._traced_training = None
        self.fused = False          # api.load_detector(fuse=...): oneDNN's fused inference graph
        with self.name_scope():
            self.backbone = backbone
            self.neck = neck
            self.head = head
            self.decoder = YOLODecoder(self.anchors, self.strides, scale_x_y)
            self.nms = nms

    def hybrid_forward(self, F, x):
        raw = self.head(*self.neck(*self.backbone(x)))
        if autograd.is_training():
            return tuple(raw)
        boxes, scores = self.boxes_and_scores(F, raw)
        return self.nms(boxes, scores)

    def boxes_and_scores(self, F, raw):
        """Decoded boxes `(B, T, 4)` and per-class scores `(B, T, C)` = objectness x class probability."""
        boxes, objectness, class_probs = decode(F, self.decoder, raw)
        return boxes, detection_scores(F, objectness, class_probs)

    def forward(self, x, *args):
        # A hybridized graph is traced for one mode; re-trace when switching train <-> inference.
        training = autograd.is_training()
        if self._active and self._traced_training is not None and self._traced_training != training:
            self._clear_cached_op()
        self._traced_training = training
        with warnings.catch_warnings():
            # the anchors serve only the inference graph; the training graph leaves them out on purpose
            warnings.filterwarnings("ignore", message=".*anchors.* is not used by any computation")
            return super().forward(x, *args)

    def init_head_bias(self, input_size: int, objects_per_image: float = 8.0):
        """Start objectness near the prior rate of objects per prediction and class logits near 1/C.

        Training from scratch otherwise begins with half of all predictions claiming an object, and the
        background loss swamps the rest for the first epochs.
        """
        for s, conv in enumerate(self.head.outputs):
            bias = conv.bias.data()
            num_anchors = len(self.anchors[s])
            values = bias.asnumpy().reshape(num_anchors, 5 + self.num_classes)
            # about `objects_per_image` objects per image, spread over this scale's cells
            cells = (input_size / self.strides[s]) ** 2
            values[:, 4] = math.log(objects_per_image / cells / num_anchors)
            values[:, 5:] = math.log(0.6 / max(self.num_classes - 0.99, 0.01))
            conv.bias.set_data(values.reshape(-1))


def build_detector(recipe: Mapping[str, Any], num_classes: int, num_devices: int = 1) -> YOLOv3:
    """Build the detector a recipe describes (`recipe['model']`), with `num_classes` classes."""
    model = recipe["model"]
    norm = dict(model.get("norm") or {})
    if norm.get("type") == "syncbn":
        norm.setdefault("num_devices", num_devices)
    backbone = BACKBONES.build(model["backbone"], where="model.backbone", norm=norm)
    check_backbone_fit(model, backbone.strides)
    anchors = model["anchors"]
    neck = NECKS.build(model["neck"], where="model.neck", in_channels=list(backbone.channels), norm=norm)
    head = HEADS.build(model["head"], where="model.head", in_channels=list(neck.channels),
                       num_anchors=[len(a) for a in anchors], num_classes=num_classes)
    nms = NMS.build(model["nms"], where="model.nms")
    return YOLOv3(backbone, neck, head, anchors, num_classes, nms, model.get("scale_x_y", 1.0), prefix="yolov3_")


def check_backbone_fit(model: Mapping[str, Any], strides):
    """RecipeError unless `model.anchors` has one group per backbone scale and `model.input_size` is a
    multiple of the largest stride (else the neck's upsampled maps do not meet their skip connections)."""
    name = component_type(model["backbone"])
    anchors = model["anchors"]
    if len(anchors) != len(strides):
        raise RecipeError(
            f"model.anchors has {len(anchors)} scales but backbone '{name}' "
            f"gives {len(strides)} (strides {', '.join(map(str, strides))})")
    size, stride = model["input_size"], max(strides)
    if size % stride:
        raise RecipeError(f"model.input_size {size} is not a multiple of the backbone's largest stride "
                          f"{stride} ({name})")


def component_type(cfg: Mapping[str, Any] | str) -> str:
    """The `type` of a component config (a bare string is its type)."""
    return cfg if isinstance(cfg, str) else cfg["type"]
