"""Darknet `.cfg` files: the text (sections of `key=value` options), the channel/stride walk through
their layers, and the recipe of the network a cfg describes (yolov3, yolov3-tiny, yolov3-spp, yolov4-tiny); with what
every Darknet module shares: `DarknetError`, `COCO_CLASSES`, and `DARKNET_BN_EPS` (Darknet and OpenCV use
BatchNorm epsilon 1e-6).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

DARKNET_BN_EPS = 1e-6
INPUT_CHANNELS = 3
SUPPORTED = "yolov3, yolov3-tiny, yolov3-spp and yolov4-tiny"

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
    """Follow channels and strides through the layers; reject layers outside the supported networks' vocabulary.

    A `[route]` with `groups=g group_id=k` passes on the k-th of g equal parts of each source's channels."""
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
            groups, group_id = section.get_int("groups", 1), section.get_int("group_id", 0)
            if groups < 1 or not 0 <= group_id < groups:
                raise DarknetError(f"line {section.line}: [route] groups={groups} group_id={group_id}: group_id "
                                   f"must lie in 0..groups-1")
            split = [s for s in sources if layers[s].channels % groups]
            if split:
                raise DarknetError(f"line {section.line}: [route] groups={groups} does not divide the "
                                   f"{layers[split[0]].channels} channels of layer {split[0]}")
            channels = sum(layers[s].channels for s in sources) // groups
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


# ------------------------------------------------------------------------- cfg -> recipe (the model)

def describe_cfg(sections: Sequence[Section], path: str | Path = "cfg") -> Dict[str, Any]:
    """What the cfg holds: arch (yolov3, yolov3_tiny, yolov3_spp, yolov4_tiny), width, classes, anchors per
    scale (finest first, in the masks' order; an anchor no mask names is left out), scale_x_y per scale (finest
    first), input size."""
    layers = walk_cfg(sections)
    yolos = [layer for layer in layers if layer.section.kind == "yolo"]
    kinds = {layer.section.kind for layer in layers}
    if not yolos:
        raise DarknetError(f"{path}: no [yolo] layer; gluon-yolo3 imports {SUPPORTED}")
    if len(yolos) == 3 and "shortcut" in kinds:
        arch = "yolov3_spp" if "maxpool" in kinds else "yolov3"
    elif len(yolos) == 2 and "shortcut" not in kinds:
        grouped = any("groups" in layer.section.options for layer in layers if layer.section.kind == "route")
        arch = "yolov4_tiny" if grouped else "yolov3_tiny"
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
    anchors, scale_x_y = [], []
    for y in sorted(yolos, key=lambda layer: layer.stride):
        if y.section.get_int("new_coords", 0):
            raise DarknetError(f"{path}:{y.section.line}: [yolo] new_coords=1 (Scaled-YOLOv4's decoding) is not "
                               f"part of {SUPPORTED}")
        scale_x_y.append(_number(y.section.get_float("scale_x_y", 1.0)))
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
    if arch in FIRST_FILTERS:
        first = [layer for layer in layers if layer.section.kind == "convolutional"][int(normalise)]
        width = first.section.get_int("filters") / FIRST_FILTERS[arch]
    return {"arch": arch, "width": width, "classes": classes.pop(), "anchors": anchors, "scale_x_y": scale_x_y,
            "input_size": width_px, "normalise": normalise, "layers": layers}


# the first convolution's filters at width 1, for the networks that take a width
FIRST_FILTERS = {"yolov3_tiny": 16, "yolov4_tiny": 32}


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
    if arch in FIRST_FILTERS:
        backbone = {"type": "darknet_tiny" if arch == "yolov3_tiny" else "csp_darknet_tiny", "width": width}
        neck = {"type": "yolov3_tiny", "width": width}
    else:
        backbone = {"type": "darknet53"}
        neck = {"type": "yolov3_spp" if arch == "yolov3_spp" else "yolov3"}
    model = {"input_size": info["input_size"], "backbone": backbone, "neck": neck, "anchors": info["anchors"]}
    scale_x_y = info["scale_x_y"]
    if any(s != 1 for s in scale_x_y):
        model["scale_x_y"] = scale_x_y[0] if len(set(scale_x_y)) == 1 else scale_x_y
    model["norm"] = {"type": "batchnorm", "eps": DARKNET_BN_EPS}
    return {
        "name": Path(path).stem.replace("-", "_"),
        "model": model,
        "data": {"classes": classes, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
                 "resize": "letterbox"},
    }
