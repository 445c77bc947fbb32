"""Darknet interop: `.cfg` parsing and writing, `.weights` reading and writing, and the layer walk that
maps Darknet's layers onto gluon-yolo3's networks (yolov3, yolov3-tiny, yolov3-spp).

    recipe, net = load_darknet("yolov3.cfg", "yolov3.weights")        # a YOLOv3 HybridBlock
    import_darknet("yolov3.cfg", "yolov3.weights", "models/yolov3")   # recipe.yaml + checkpoints/best.params
    export_darknet(recipe, "runs/demo", "deploy/demo")                # demo.cfg + demo.weights + demo.names

The `.weights` format: a header of three int32 (major, minor, revision) and `seen` (uint64 when
`major * 10 + minor >= 2` and both are below 1000, else int32), then float32 values, convolution by
convolution in cfg order: with batch_normalize `beta (n), gamma (n), mean (n), var (n)`, else
`bias (n)`; then the weights `(n, c, k, k)`. Darknet and OpenCV use BatchNorm epsilon 1e-6.

The walk never guesses: the cfg is parsed into layers, gluon-yolo3's network is built from what the cfg
says (classes, anchors, input size, width), the same network is written back as cfg layers, and both
lists must agree layer by layer (an error names the cfg line otherwise). A weights file must hold exactly
the floats the cfg needs; OpenCV silently accepts a truncated file, this reader does not.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

DARKNET_BN_EPS = 1e-6
INPUT_CHANNELS = 3
SUPPORTED = "yolov3, yolov3-tiny and yolov3-spp"

COCO_CLASSES = (
    "person", "bicycle", "car", "motorbike", "aeroplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse",
    "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie",
    "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut",
    "cake", "chair", "sofa", "pottedplant", "bed", "diningtable", "toilet", "tvmonitor", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush")


class DarknetError(ValueError):
    """A Darknet cfg or weights file that cannot be read or does not fit; the message names the file."""


# ----------------------------------------------------------------------------------------------- cfg

SECTION_ALIASES = {"conv": "convolutional", "network": "net", "max": "maxpool"}


@dataclass
class Section:
    """One `[kind]` section of a cfg: its options as strings, and the line of its header (1-based)."""

    kind: str
    options: Dict[str, str] = field(default_factory=dict)
    line: int = 0

    def get_int(self, key: str, default: Optional[int] = None) -> int:
        return self._get(key, default, int)

    def get_float(self, key: str, default: Optional[float] = None) -> float:
        return self._get(key, default, float)

    def get_str(self, key: str, default: Optional[str] = None) -> str:
        return self._get(key, default, str).strip()

    def get_ints(self, key: str) -> List[int]:
        return [self._convert(key, v, int) for v in self._list(key)]

    def get_floats(self, key: str) -> List[float]:
        return [self._convert(key, v, float) for v in self._list(key)]

    def _list(self, key: str) -> List[str]:
        return [v.strip() for v in self._get(key, None, str).split(",") if v.strip()]

    def _get(self, key, default, kind):
        if key not in self.options:
            if default is None:
                raise DarknetError(f"line {self.line}: [{self.kind}] needs '{key}='")
            return default
        return self._convert(key, self.options[key], kind)

    def _convert(self, key, value, kind):
        if kind is str:
            return value
        try:
            return kind(value)
        except ValueError:
            raise DarknetError(f"line {self.line}: [{self.kind}] {key}={value!r} is not "
                               f"{'a number' if kind is float else 'an integer'}") from None


def parse_cfg(path: str | Path) -> List[Section]:
    """The sections of a Darknet cfg file, `[net]` first. Comments (`#`, `;`) and blank lines are skipped."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise FileNotFoundError(f"cannot read Darknet cfg '{path}': {err.strerror}") from None
    try:
        sections = parse_cfg_text(text)
    except DarknetError as err:
        raise DarknetError(f"{path}: {err}") from None
    if not sections or sections[0].kind != "net":
        raise DarknetError(f"{path}: a Darknet cfg starts with a [net] section")
    return sections


def parse_cfg_text(text: str) -> List[Section]:
    sections: List[Section] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise DarknetError(f"line {number}: section header {line!r} lacks its ']'")
            kind = line[1:-1].strip().lower()
            sections.append(Section(SECTION_ALIASES.get(kind, kind), {}, number))
            continue
        if "=" not in line:
            raise DarknetError(f"line {number}: expected 'key=value' or '[section]', got {line!r}")
        if not sections:
            raise DarknetError(f"line {number}: option {line!r} before the first [section]")
        key, value = line.split("=", 1)
        sections[-1].options[key.strip()] = value.strip()
    return sections


def format_cfg(sections: Sequence[Section]) -> str:
    """Cfg text for `sections` (one blank line between sections)."""
    blocks = []
    for section in sections:
        lines = [f"[{section.kind}]"] + [f"{k}={v}" for k, v in section.options.items()]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


# --------------------------------------------------------------------------------- the cfg's layers

@dataclass
class CfgLayer:
    """A cfg layer after the channel walk: index (0 = first layer after [net]), output channels,
    stride from the input, and the number of weight-file floats it holds (convolutions only)."""

    index: int
    section: Section
    channels: int
    stride: int
    floats: int = 0


def walk_cfg(sections: Sequence[Section]) -> List[CfgLayer]:
    """Follow channels and strides through the layers; reject layers outside yolov3/tiny/spp's vocabulary."""
    net = sections[0]
    channels, stride = net.get_int("channels", 3), 1
    layers: List[CfgLayer] = []
    for index, section in enumerate(sections[1:]):
        kind, floats = section.kind, 0
        if kind == "convolutional":
            filters, size = section.get_int("filters", 1), section.get_int("size", 1)
            groups = section.get_int("groups", 1)
            if groups != 1:
                raise DarknetError(f"line {section.line}: grouped convolution (groups={groups}) is not "
                                   f"part of {SUPPORTED}")
            bn = section.get_int("batch_normalize", 0)
            floats = filters * channels * size * size + (4 if bn else 1) * filters
            channels, stride = filters, stride * section.get_int("stride", 1)
        elif kind == "maxpool":
            stride *= section.get_int("stride", 1)
        elif kind == "upsample":
            stride //= section.get_int("stride", 2)
        elif kind == "shortcut":
            source = _resolve(section.get_ints("from")[0], index, section, layers)
            if layers[source].channels != channels:
                raise DarknetError(f"line {section.line}: [shortcut] adds layer {source} "
                                   f"({layers[source].channels} channels) to {channels} channels")
        elif kind == "route":
            sources = [_resolve(v, index, section, layers) for v in section.get_ints("layers")]
            if "groups" in section.options:
                raise DarknetError(f"line {section.line}: [route] with groups is not part of {SUPPORTED}")
            channels = sum(layers[s].channels for s in sources)
            stride = layers[sources[0]].stride
        elif kind == "yolo":
            pass
        else:
            raise DarknetError(f"line {section.line}: layer {index} [{kind}] is not supported; "
                               f"gluon-yolo3 imports {SUPPORTED}")
        layers.append(CfgLayer(index, section, channels, stride, floats))
    return layers


def _resolve(value: int, index: int, section: Section, layers: Sequence[CfgLayer]) -> int:
    """A route/shortcut reference: negative values count back from this layer."""
    source = index + value if value < 0 else value
    if not 0 <= source < index:
        raise DarknetError(f"line {section.line}: layer {index} [{section.kind}] refers to layer {value} "
                           f"(= {source}), which is not an earlier layer")
    return source


def count_floats(sections: Sequence[Section]) -> int:
    """The number of float32 values a weights file for this cfg holds after its header."""
    return sum(layer.floats for layer in walk_cfg(sections))


# ----------------------------------------------------------------------------------------- weights

@dataclass
class WeightsHeader:
    """The `.weights` header; `seen` is 8 bytes when `major * 10 + minor >= 2` (and both < 1000)."""

    major: int = 0
    minor: int = 2
    revision: int = 0
    seen: int = 0

    @property
    def seen_bytes(self) -> int:
        return 8 if (self.major * 10 + self.minor >= 2 and self.major < 1000 and self.minor < 1000) else 4

    @property
    def size(self) -> int:
        return 12 + self.seen_bytes

    def pack(self) -> bytes:
        return struct.pack("<3i", self.major, self.minor, self.revision) + struct.pack(
            "<Q" if self.seen_bytes == 8 else "<i", self.seen)


def read_weights(path: str | Path) -> Tuple[WeightsHeader, np.ndarray]:
    """(header, every float after it) of a Darknet `.weights` file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise FileNotFoundError(f"cannot read Darknet weights '{path}': {err.strerror}") from None
    if len(data) < 16:
        raise DarknetError(f"{path}: {len(data)} bytes is too short for a Darknet weights file "
                           f"(the header alone takes 16 or 20 bytes)")
    major, minor, revision = struct.unpack_from("<3i", data, 0)
    header = WeightsHeader(major, minor, revision, 0)
    header.seen = struct.unpack_from("<Q" if header.seen_bytes == 8 else "<i", data, 12)[0]
    body = len(data) - header.size
    if body % 4:
        raise DarknetError(f"{path}: {body} bytes after the {header.size}-byte header (version "
                           f"{major}.{minor}.{revision}) is not a whole number of float32 values")
    return header, np.frombuffer(data, dtype="<f4", offset=header.size)


def write_weights(path: str | Path, arrays: Sequence[np.ndarray], header: Optional[WeightsHeader] = None):
    """Write `header` (default version 0.2.0, 8-byte seen) and the arrays as little-endian float32,
    atomically (temporary file, then rename)."""
    from ..files import atomic_write
    header = header or WeightsHeader()

    def write(tmp):
        with open(tmp, "wb") as fh:
            fh.write(header.pack())
            for array in arrays:
                fh.write(np.ascontiguousarray(array, dtype="<f4").tobytes())
    atomic_write(Path(path), write)


# ------------------------------------------------------------------------- cfg -> recipe (the model)

def describe_cfg(sections: Sequence[Section], path: str | Path = "cfg") -> Dict[str, Any]:
    """What the cfg holds: arch (yolov3, yolov3_tiny, yolov3_spp), width, classes, anchors per scale
    (finest first, with the masks' order), input size."""
    layers = walk_cfg(sections)
    yolos = [layer for layer in layers if layer.section.kind == "yolo"]
    kinds = {layer.section.kind for layer in layers}
    if not yolos:
        raise DarknetError(f"{path}: no [yolo] layer; gluon-yolo3 imports {SUPPORTED}")
    if len(yolos) == 3 and "shortcut" in kinds:
        arch = "yolov3_spp" if "maxpool" in kinds else "yolov3"
    elif len(yolos) == 2 and "shortcut" not in kinds:
        arch = "yolov3_tiny"
    else:
        raise DarknetError(f"{path}: {len(yolos)} [yolo] layers and "
                           f"{'' if 'shortcut' in kinds else 'no '}[shortcut] layers: neither of {SUPPORTED}")
    classes = {y.section.get_int("classes", 20) for y in yolos}
    if len(classes) != 1:
        raise DarknetError(f"{path}: the [yolo] layers disagree on classes ({sorted(classes)})")
    anchors_all = []
    for y in yolos:
        values = y.section.get_floats("anchors")
        if len(values) % 2:
            raise DarknetError(f"{path}:{y.section.line}: anchors= holds an odd count of numbers")
        pairs = [values[i:i + 2] for i in range(0, len(values), 2)]
        if anchors_all and pairs != anchors_all:
            raise DarknetError(f"{path}:{y.section.line}: the [yolo] layers disagree on anchors=")
        anchors_all = pairs
    anchors = []
    for y in sorted(yolos, key=lambda layer: layer.stride):
        mask = y.section.get_ints("mask") if "mask" in y.section.options else list(range(len(anchors_all)))
        bad = [m for m in mask if not 0 <= m < len(anchors_all)]
        if bad:
            raise DarknetError(f"{path}:{y.section.line}: mask= {bad} outside the {len(anchors_all)} anchors")
        anchors.append([[_number(v) for v in anchors_all[m]] for m in mask])
    net = sections[0]
    if net.get_int("channels", 3) != INPUT_CHANNELS:
        raise DarknetError(f"{path}:{net.line}: [net] channels={net.get_int('channels')}; gluon-yolo3 takes "
                           f"{INPUT_CHANNELS}-channel RGB images")
    width_px, height_px = net.get_int("width", 416), net.get_int("height", 416)
    if width_px != height_px or width_px % 32:
        raise DarknetError(f"{path}:{net.line}: [net] width={width_px} height={height_px}: gluon-yolo3 "
                           f"recipes take one square input size, a multiple of 32")
    normalise = is_input_normalisation(layers[0].section, net.get_int("channels", 3))
    width = 1.0
    if arch == "yolov3_tiny":
        first = [layer for layer in layers if layer.section.kind == "convolutional"][int(normalise)]
        width = first.section.get_int("filters") / 16.0
    return {"arch": arch, "width": width, "classes": classes.pop(), "anchors": anchors,
            "input_size": width_px, "normalise": normalise, "layers": layers}


def is_input_normalisation(section: Section, channels: int = 3) -> bool:
    """A first layer that `export-darknet` writes for recipes with a mean/std: a linear 1x1 convolution
    from the input channels to as many channels, with a bias and no BatchNorm (per-channel
    `(x - mean) / std`, exact at the border too, unlike folding it into the next convolution)."""
    return (section.kind == "convolutional" and section.get_int("filters", 1) == channels
            and section.get_int("size", 1) == 1 and section.get_int("stride", 1) == 1
            and not section.get_int("batch_normalize", 0) and section.get_str("activation", "logistic") == "linear")


def _number(value: float):
    return int(value) if float(value).is_integer() else float(value)


def recipe_from_cfg(sections: Sequence[Section], path: str | Path = "cfg",
                    names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """The recipe (only what differs from the defaults) of the network a cfg describes.

    Inputs are RGB / 255 as in Darknet (mean 0, std 1; an input normalisation layer's mean and std are
    filled in when its weights are read), letterboxed; BatchNorm epsilon 1e-6.
    """
    info = describe_cfg(sections, path)
    classes = list(names) if names is not None else (
        list(COCO_CLASSES) if info["classes"] == 80 else [f"class{i}" for i in range(info["classes"])])
    if len(classes) != info["classes"]:
        raise DarknetError(f"{path}: the cfg has {info['classes']} classes but {len(classes)} names were given")
    arch, width = info["arch"], info["width"]
    if arch == "yolov3_tiny":
        backbone = {"type": "darknet_tiny", "width": width}
        neck = {"type": "yolov3_tiny", "width": width}
    else:
        backbone = {"type": "darknet53"}
        neck = {"type": "yolov3_spp" if arch == "yolov3_spp" else "yolov3"}
    return {
        "name": Path(path).stem.replace("-", "_"),
        "model": {"input_size": info["input_size"], "backbone": backbone, "neck": neck,
                  "anchors": info["anchors"], "norm": {"type": "batchnorm", "eps": DARKNET_BN_EPS}},
        "data": {"classes": classes, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
                 "resize": "letterbox"},
    }


# ------------------------------------------------------------------ our network -> Darknet layers

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
    from ..models.layers import ConvBNLeaky
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
        self.add("yolo", mask=mask, anchors=anchors, classes=net.num_classes, num=len(flat), jitter=".3",
                 ignore_thresh=".7", truth_thresh=1, random=1)


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def darknet_layout(net, normalise: bool = False) -> Layout:
    """`net` (a YOLOv3 of darknet53 + yolov3 or yolov3_spp neck, or darknet_tiny + yolov3_tiny) as
    Darknet layers in cfg order; `normalise` puts the input normalisation layer first."""
    from ..models.backbones.darknet import Darknet53, DarknetTiny
    from ..models.head import YOLOHead
    from ..models.neck import DetectionBlock, YOLOv3Neck, YOLOv3TinyNeck
    from ..models.spp import SPPDetectionBlock, YOLOv3SPPNeck
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
        w.conv(neck.route32)
        w.conv(neck.tip32)
        w.conv(head.outputs[1])
        w.yolo(net, 1)
        w.add("route", layers=-4)
        w.conv(neck.reduce)
        w.add("upsample", stride=2)
        w.add("route", layers=f"-1, {c4}")
        w.conv(neck.tip16)
        w.conv(head.outputs[0])
        w.yolo(net, 0)
    else:
        raise DarknetError(
            f"Darknet layout: backbone {type(backbone).__name__} with neck {type(neck).__name__} is none of "
            f"darknet53 + yolov3, darknet53 + yolov3_spp, darknet_tiny + yolov3_tiny")
    return Layout(arch, w.sections, w.convs)


def _is_pool(layer) -> bool:
    from mxnet.gluon import nn
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
        return {"layers": [index + v if v < 0 else v for v in s.get_ints("layers")]}
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
    import mxnet as mx
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


# ---------------------------------------------------------------------------------- the whole job

def read_names(path: str | Path) -> List[str]:
    """Class names, one per line (Darknet's `.names`)."""
    try:
        names = [line.strip() for line in Path(path).read_text().splitlines()]
    except OSError as err:
        raise FileNotFoundError(f"cannot read class names '{path}': {err.strerror}") from None
    names = [n for n in names if n]
    if not names:
        raise DarknetError(f"{path}: no class names in it")
    return names


def load_darknet(cfg: str | Path, weights: str | Path, names: Optional[Sequence[str]] = None):
    """(recipe, YOLOv3 on cpu with the weights loaded, info) from a Darknet cfg and weights file.

    `recipe` holds only what differs from the defaults; `info` has `arch`, `header` and `floats`."""
    import copy
    from ..models.detector import build_detector
    from ..recipe import merge
    from ..schema import DEFAULTS
    sections = parse_cfg(cfg)
    partial = recipe_from_cfg(sections, cfg, names)
    recipe = merge(copy.deepcopy(DEFAULTS), partial)
    net = build_detector(recipe, len(partial["data"]["classes"]))
    net.initialize()
    layout = darknet_layout(net, normalise=describe_cfg(sections, cfg)["normalise"])
    check_layout(sections, layout, cfg)
    header, floats = read_weights(weights)
    partial["data"].update(load_layout_weights(layout, floats, weights))
    return partial, net, {"arch": layout.arch, "header": header, "floats": int(floats.size)}


def import_darknet(cfg: str | Path, weights: str | Path, out: str | Path,
                   names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Write `out/recipe.yaml` and `out/checkpoints/best.params` from a Darknet cfg and weights file.

    `out` then works wherever a run folder does (`--weights out`)."""
    import yaml
    from ..files import atomic_write, atomic_write_text
    recipe, net, info = load_darknet(cfg, weights, names)
    out = Path(out)
    params = out / "checkpoints" / "best.params"
    atomic_write(params, net.save_parameters)
    text = (f"# Imported from Darknet {Path(cfg).name} + {Path(weights).name} by gluon-yolo3 import-darknet.\n"
            f"# Inputs are RGB / 255 (mean 0, std 1) as in Darknet; BatchNorm epsilon 1e-6 as Darknet's.\n"
            f"# Set data.train / data.val to evaluate or fine-tune.\n")
    text += yaml.safe_dump(recipe, sort_keys=False, default_flow_style=None)
    recipe_path = out / "recipe.yaml"
    atomic_write_text(recipe_path, text)
    header = info["header"]
    return {"recipe": str(recipe_path), "params": str(params), "arch": info["arch"],
            "classes": len(recipe["data"]["classes"]), "floats": info["floats"],
            "header": f"{header.major}.{header.minor}.{header.revision} (seen={header.seen}, "
                      f"{header.seen_bytes}-byte seen)"}


def export_darknet(recipe: Mapping[str, Any], weights: str | Path, out: str | Path,
                   header: Optional[WeightsHeader] = None) -> Dict[str, Any]:
    """Write `out/<name>.cfg`, `.weights` and `.names` for the recipe's network with `weights`.

    Darknet and OpenCV then compute the same raw outputs, given the image as RGB / 255 letterboxed to the
    recipe's input size: a recipe's mean/std normalisation becomes a first layer (a linear 1x1
    convolution, diagonal), and BatchNorm variances absorb the epsilon difference."""
    from ..inference.detector import class_names, load_detector
    from ..files import atomic_write_text
    from ..models.layers import resolve_norm
    classes = class_names(recipe)
    net = load_detector(recipe, weights, classes=classes, hybridize=False)
    normalise = any(m != 0 for m in recipe["data"]["mean"]) or any(s != 1 for s in recipe["data"]["std"])
    layout = darknet_layout(net, normalise)
    size = int(recipe["model"]["input_size"])
    net_section = Section("net", {"batch": "1", "subdivisions": "1", "width": str(size), "height": str(size),
                                  "channels": "3"})
    sections = [net_section] + layout.sections
    eps = float(resolve_norm(recipe["model"].get("norm"))["eps"])
    arrays = layout_arrays(layout, eps, recipe["data"]["mean"], recipe["data"]["std"])
    out = Path(out)
    name = str(recipe.get("name") or "model")
    cfg_path, weights_path, names_path = (out / f"{name}{ext}" for ext in (".cfg", ".weights", ".names"))
    head = (f"# {name}: exported by gluon-yolo3 export-darknet ({layout.arch}, {len(classes)} classes).\n"
            f"# Input: RGB / 255, letterboxed to {size}x{size}"
            + (" (layer 0 applies the recipe's per-channel mean/std)." if normalise else ".") + "\n")
    atomic_write_text(cfg_path, head + format_cfg(sections))
    write_weights(weights_path, arrays, header)
    atomic_write_text(names_path, "\n".join(classes) + "\n")
    floats = sum(a.size for a in arrays)
    return {"cfg": str(cfg_path), "weights": str(weights_path), "names": str(names_path),
            "arch": layout.arch, "floats": int(floats), "input_normalisation_layer": normalise}
