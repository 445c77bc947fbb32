"""gluon-yolo3's networks (darknet53 + yolov3 or yolov3_spp neck, darknet_tiny or csp_darknet_tiny + yolov3_tiny) as Darknet
layers in cfg order, checked against a cfg layer by layer, and their parameters read from / written as the
floats of a `.weights` file. BatchNorm variances absorb the difference between the network's epsilon and
Darknet's 1e-6; a recipe's mean/std becomes an input normalisation layer (a linear 1x1 convolution).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import mxnet as mx
import numpy as np
from mxnet.gluon import nn

from ...models.backbones.csp_darknet import CSPDarknetTiny
from ...models.backbones.darknet import Darknet53, DarknetTiny
from ...models.head import YOLOHead
from ...models.layers import ConvBNLeaky
from ...models.neck import DetectionBlock, YOLOv3Neck, YOLOv3TinyNeck
from ...models.spp import SPPDetectionBlock, YOLOv3SPPNeck
from .cfg import DARKNET_BN_EPS, INPUT_CHANNELS, DarknetError, Section


@dataclass
class Layout:
    """A network written as Darknet layers: the sections (cfg order, without [net]) and, per
    convolution, its layer index and block (a ConvBNLeaky, the head's linear Conv2D, or None for the
    input normalisation layer)."""

    arch: str
    sections: List[Section]
    convs: List[Tuple[int, Any]]

    @property
    def floats(self) -> int:
        return sum(conv_floats(block) for _, block in self.convs)


def conv_floats(block) -> int:
    if block is None:                      # the input normalisation: bias (3) + weights (3, 3, 1, 1)
        return INPUT_CHANNELS + INPUT_CHANNELS ** 2
    conv, bn = _conv_and_bn(block)
    return int(np.prod(conv.weight.shape)) + (4 if bn is not None else 1) * conv.weight.shape[0]


def _conv_and_bn(block):
    if isinstance(block, ConvBNLeaky):
        return block.conv, block.bn
    return block, None


class _Writer:
    def __init__(self):
        self.sections: List[Section] = []
        self.convs: List[Tuple[int, Any]] = []

    def add(self, kind: str, **options) -> int:
        self.sections.append(Section(kind, {k: str(v) for k, v in options.items()}))
        return len(self.sections) - 1

    def conv(self, block) -> int:
        conv, bn = _conv_and_bn(block)
        shape = conv.weight.shape
        if 0 in shape:
            raise DarknetError(f"{conv.name}: weight shape {shape} is not known; build layers with in_channels")
        kernel, stride = conv._kwargs["kernel"], conv._kwargs["stride"]
        options = {}
        if bn is not None:
            options["batch_normalize"] = 1
        options.update(filters=shape[0], size=kernel[0], stride=stride[0], pad=1,
                       activation="leaky" if bn is not None else "linear")
        index = self.add("convolutional", **options)
        self.convs.append((index, block))
        return index

    def normalisation(self):
        index = self.add("convolutional", filters=INPUT_CHANNELS, size=1, stride=1, pad=1, activation="linear")
        self.convs.append((index, None))

    def yolo(self, net, scale: int):
        flat = [a for group in net.anchors for a in group]
        start = sum(len(g) for g in net.anchors[:scale])
        mask = ",".join(str(start + i) for i in range(len(net.anchors[scale])))
        anchors = ",  ".join(f"{_fmt(w)},{_fmt(h)}" for w, h in flat)
        options = dict(mask=mask, anchors=anchors, classes=net.num_classes, num=len(flat), jitter=".3")
        scale_x_y = net.decoder.scale_x_y[scale]
        if scale_x_y != 1:
            options["scale_x_y"] = _fmt(scale_x_y)
        self.add("yolo", **options, ignore_thresh=".7", truth_thresh=1, random=1)

    def tiny_neck(self, net, c4: int):
        """yolov3-tiny's neck and head after its trunk, `c4` being the layer index of the stride-16 feature."""
        neck, head = net.neck, net.head
        self.conv(neck.route32)
        self.conv(neck.tip32)
        self.conv(head.outputs[1])
        self.yolo(net, 1)
        self.add("route", layers=-4)
        self.conv(neck.reduce)
        self.add("upsample", stride=2)
        self.add("route", layers=f"-1, {c4}")
        self.conv(neck.tip16)
        self.conv(head.outputs[0])
        self.yolo(net, 0)


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def darknet_layout(net, normalise: bool = False) -> Layout:
    """`net` (a YOLOv3 of darknet53 + yolov3 or yolov3_spp neck, or darknet_tiny or csp_darknet_tiny +
    yolov3_tiny) as Darknet layers in cfg order; `normalise` puts the input normalisation layer first."""
    backbone, neck, head = net.backbone, net.neck, net.head
    if not isinstance(head, YOLOHead):
        raise DarknetError(f"Darknet layout: head {type(head).__name__} is not the yolov3 head")
    w = _Writer()
    if normalise:
        w.normalisation()
    if isinstance(backbone, Darknet53) and isinstance(neck, (YOLOv3Neck, YOLOv3SPPNeck)):
        arch = "yolov3_spp" if isinstance(neck, YOLOv3SPPNeck) else "yolov3"
        w.conv(backbone.stem)
        outputs = []
        for stage in backbone.stages:
            w.conv(stage[0])
            last = None
            for block in list(stage)[1:]:
                w.conv(block.reduce)
                w.conv(block.expand)
                last = w.add("shortcut", **{"from": -3, "activation": "linear"})
            outputs.append(last)
        features = outputs[2:]                      # the C3, C4, C5 layer indices
        n = len(features)
        for k, block in enumerate(neck.blocks):     # coarsest first
            if type(block) not in (DetectionBlock, SPPDetectionBlock):
                raise DarknetError(f"Darknet layout: neck {type(neck).__name__} has a {type(block).__name__} "
                                   f"block, which has no Darknet layers here")
            if k > 0:
                w.add("route", layers=-4)
                w.conv(neck.reduces[k - 1])
                w.add("upsample", stride=2)
                w.add("route", layers=f"-1, {features[n - 1 - k]}")
            if isinstance(block, SPPDetectionBlock):
                for conv in block.pre:
                    w.conv(conv)
                for j, size in enumerate(block.spp.pools):
                    if j > 0:
                        w.add("route", layers=-2 * j)
                    w.add("maxpool", stride=1, size=size)
                count = len(block.spp.pools)    # the route takes the largest pool first, the input last
                refs = [-1 - 2 * j for j in range(count)] + [-2 * count]
                w.add("route", layers=",".join(str(r) for r in refs))
                for conv in block.post:
                    w.conv(conv)
            else:
                for conv in block.body:
                    w.conv(conv)
            w.conv(block.tip)
            w.conv(head.outputs[n - 1 - k])
            w.yolo(net, n - 1 - k)
    elif isinstance(backbone, DarknetTiny) and isinstance(neck, YOLOv3TinyNeck):
        arch = "yolov3_tiny"
        c4 = None
        for layer in backbone.body16:
            c4 = w.conv(layer) if not _is_pool(layer) else w.add("maxpool", size=2, stride=2)
        for layer in backbone.body32:
            if _is_pool(layer):
                stride = 1 if type(layer).__name__ == "DarknetPadPool" else 2
                w.add("maxpool", size=2, stride=stride)
            else:
                w.conv(layer)
        w.tiny_neck(net, c4)
    elif isinstance(backbone, CSPDarknetTiny) and isinstance(neck, YOLOv3TinyNeck):
        arch = "yolov4_tiny"
        for conv in backbone.stem:
            w.conv(conv)
        c4 = None
        for stage in backbone.stages:
            w.conv(stage.conv_in)
            w.add("route", layers=-1, groups=2, group_id=1)
            w.conv(stage.conv1)
            w.conv(stage.conv2)
            w.add("route", layers="-1,-2")
            c4 = w.conv(stage.mix)
            w.add("route", layers="-6,-1")
            w.add("maxpool", size=2, stride=2)
        w.conv(backbone.conv_out)
        w.tiny_neck(net, c4)
    else:
        raise DarknetError(
            f"Darknet layout: backbone {type(backbone).__name__} with neck {type(neck).__name__} is none of "
            f"darknet53 + yolov3, darknet53 + yolov3_spp, darknet_tiny + yolov3_tiny, "
            f"csp_darknet_tiny + yolov3_tiny")
    return Layout(arch, w.sections, w.convs)


def _is_pool(layer) -> bool:
    return isinstance(layer, nn.MaxPool2D) or type(layer).__name__ == "DarknetPadPool"


# ------------------------------------------------------------- comparing cfg layers with the layout

def _essentials(section: Section, index: int) -> Dict[str, Any]:
    """The options that decide what a layer computes, with Darknet's defaults filled in."""
    kind, s = section.kind, section
    if kind == "convolutional":
        size = s.get_int("size", 1)
        padding = size // 2 if s.get_int("pad", 0) else s.get_int("padding", 0)
        return {"filters": s.get_int("filters", 1), "size": size, "stride": s.get_int("stride", 1),
                "padding": padding, "batch_normalize": s.get_int("batch_normalize", 0),
                "activation": s.get_str("activation", "logistic")}
    if kind == "maxpool":
        stride = s.get_int("stride", 1)
        size = s.get_int("size", stride)
        return {"size": size, "stride": stride, "padding": s.get_int("padding", size - 1)}
    if kind == "upsample":
        return {"stride": s.get_int("stride", 2)}
    if kind == "shortcut":
        value = s.get_ints("from")[0]
        return {"from": index + value if value < 0 else value, "activation": s.get_str("activation", "linear")}
    if kind == "route":
        return {"layers": [index + v if v < 0 else v for v in s.get_ints("layers")],
                "groups": s.get_int("groups", 1), "group_id": s.get_int("group_id", 0)}
    if kind == "yolo":
        mask = s.get_ints("mask") if "mask" in s.options else None
        anchors = s.get_floats("anchors")
        if mask is None:
            mask = list(range(len(anchors) // 2))
        return {"classes": s.get_int("classes", 20), "anchors": [anchors[2 * m:2 * m + 2] for m in mask],
                "scale_x_y": s.get_float("scale_x_y", 1.0), "new_coords": s.get_int("new_coords", 0)}
    return {}


def check_layout(cfg_sections: Sequence[Section], layout: Layout, path: str | Path = "cfg"):
    """Raise DarknetError at the first cfg layer that differs from the network's layer."""
    layers = list(cfg_sections[1:])
    for index, (mine, ours) in enumerate(zip(layers, layout.sections)):
        where = f"{path}:{mine.line}: layer {index} [{mine.kind}]"
        if mine.kind != ours.kind:
            raise DarknetError(f"{where}: gluon-yolo3's {layout.arch} network has a [{ours.kind}] layer here")
        a, b = _essentials(mine, index), _essentials(ours, index)
        for key in b:
            if a[key] != b[key]:
                raise DarknetError(f"{where}: {key}={a[key]}, but gluon-yolo3's {layout.arch} network "
                                   f"has {key}={b[key]} here")
    if len(layers) != len(layout.sections):
        raise DarknetError(f"{path}: {len(layers)} layers, but gluon-yolo3's {layout.arch} network has "
                           f"{len(layout.sections)}")


# ----------------------------------------------------------------------------- weights <-> network

def _bn_params(bn):
    return bn.beta, bn.gamma, bn.running_mean, bn.running_var


def load_layout_weights(layout: Layout, floats: np.ndarray, path: str | Path = "weights") -> Dict[str, Any]:
    """Copy `floats` (everything after the header) into the layout's convolutions, in cfg order.

    Returns `{"mean": [...], "std": [...]}` read from an input normalisation layer, else `{}`."""
    expected = layout.floats
    if floats.size != expected:
        raise DarknetError(
            f"{path}: holds {floats.size:,} floats after its header but the cfg's {len(layout.convs)} "
            f"convolutions need {expected:,} (expected {expected * 4:,} bytes of weights, found "
            f"{floats.size * 4:,}); the file is {'truncated' if floats.size < expected else 'too long'} "
            f"or belongs to another cfg")
    offset, found = 0, {}
    for index, block in layout.convs:
        if block is None:
            bias = floats[offset:offset + INPUT_CHANNELS].astype(np.float64)
            weight = floats[offset + INPUT_CHANNELS:offset + conv_floats(None)].astype(np.float64)
            offset += conv_floats(None)
            found = _normalisation_from(bias, weight.reshape(INPUT_CHANNELS, INPUT_CHANNELS), path, index)
            continue
        conv, bn = _conv_and_bn(block)
        n = conv.weight.shape[0]
        targets = _bn_params(bn) if bn is not None else (conv.bias,)
        for param in targets:
            param.set_data(mx.nd.array(floats[offset:offset + n]))
            offset += n
        count = int(np.prod(conv.weight.shape))
        conv.weight.set_data(mx.nd.array(floats[offset:offset + count].reshape(conv.weight.shape)))
        offset += count
    return found


def _normalisation_from(bias: np.ndarray, weight: np.ndarray, path, index: int) -> Dict[str, Any]:
    """mean and std from the input normalisation layer `y = W x + b`, W diagonal = 1 / std, b = -mean / std."""
    diagonal = np.diag(weight)
    off = weight - np.diag(diagonal)
    if np.any(diagonal <= 0) or np.abs(off).max() > 1e-6 * np.abs(diagonal).max():
        raise DarknetError(f"{path}: layer {index}, the 1x1 linear convolution on the input, is not a "
                           f"per-channel normalisation (its weights must be diagonal and positive)")
    std = 1.0 / diagonal
    mean = -bias * std
    return {"mean": [round(float(v), 6) for v in mean], "std": [round(float(v), 6) for v in std]}


def layout_arrays(layout: Layout, eps: float = 1e-5, mean: Sequence[float] = (0, 0, 0),
                  std: Sequence[float] = (1, 1, 1)) -> List[np.ndarray]:
    """The layout's parameters as Darknet float arrays, in cfg order.

    The BatchNorm variance is written as `var + eps - 1e-6`, so that Darknet/OpenCV, with their epsilon
    of 1e-6, compute the network's `var + eps`. The input normalisation layer (if the layout has one)
    gets `W = diag(1 / std)` and `b = -mean / std`.
    """
    arrays = []
    for _, block in layout.convs:
        if block is None:
            inv = 1.0 / np.asarray(std, dtype=np.float64)
            arrays += [-np.asarray(mean, dtype=np.float64) * inv, np.diag(inv)]
            continue
        conv, bn = _conv_and_bn(block)
        if bn is not None:
            beta, gamma, running_mean, var = (p.data().asnumpy().astype(np.float64) for p in _bn_params(bn))
            arrays += [beta, gamma, running_mean, var + eps - DARKNET_BN_EPS]
        else:
            arrays.append(conv.bias.data().asnumpy())
        arrays.append(conv.weight.data().asnumpy())
    return [np.asarray(a, dtype=np.float32).ravel() for a in arrays]

