"""Starting a run from trained weights (`train.init_from`): ours, Darknet's or GluonCV's.

    source = read_source("zoo/yolov3_tiny_coco")           # or a run folder, a .params file,
                                                           # yolov3-tiny.weights (+ .cfg), a GluonCV .params
    report = warm_start(net, source, classes, recipe)      # loads by role and shape; returns what it did

Every tensor of the recipe's network is taken from the source by its structural name (`backbone.*`,
`neck.*`, ...) and must have the same shape: a source of another architecture is refused, naming the first
tensor that does not fit. Two roles are special:
- the head's output convolutions (`head.outputs.*`): with the same class list they load as they are; for
  another list they are re-initialised, and for every anchor the box and objectness rows and the rows of the
  classes whose names the source has are copied (GluonCV's `reset_class(reuse_weights=...)` idea);
- the decoder's anchors (`decoder.anchors*`) are never taken from the source: they belong to the recipe,
  which the targets are encoded with. (Loading a source's anchors into a network trained against other
  anchors decodes every box at the wrong size: losses fall while the mAP stays near zero.)
The report counts tensors loaded, re-initialised (rows copied) and ignored, by module, and names differences
in how the source fed its images or decoded its outputs (mean, std, BatchNorm epsilon, input size, grid
sensitivity), which make a poorer start.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence

import mxnet as mx

from ..files import atomic_write_text
from ..inference.weights import CheckpointError, find_weights, load_arrays, weights_classes
from ..interop.darknet.jobs import load_darknet, read_names
from ..interop.gluoncv import dataset_classes, file_layout, guess_backbone
from ..interop.gluoncv import convert as convert_gluoncv
from ..recipe import parse_yaml
from ..schema import DEFAULTS

HEAD_OUTPUT = "head.outputs."
ANCHORS = "decoder.anchors"
BOX_FIELDS = 5          # tx, ty, tw, th, objectness: one row each per anchor, before the class rows


class Source(NamedTuple):
    """Weights to start from: `arrays` by structural name, the source's class list and the recipe it was
    trained with (what is known of it), and where it came from."""
    arrays: Dict[str, mx.nd.NDArray]
    classes: Optional[List[str]]
    recipe: Mapping[str, Any]
    description: str


def read_source(path, cfg: Optional[str] = None) -> Source:
    """A Source from a run folder, zoo folder or `.params` file of ours, a Darknet `.weights` (with its `.cfg`:
    `cfg`, else the same name beside it; class names from a `.names` beside it, else COCO's for 80), or a GluonCV
    YOLOv3 `.params` (darknet53 or mobilenet; VOC or COCO class names for 20 or 80 classes)."""
    path = Path(path)
    if path.suffix == ".weights":
        cfg_path = Path(cfg) if cfg else path.with_suffix(".cfg")
        if not cfg_path.is_file():
            raise FileNotFoundError(f"train.init_from {path}: a Darknet .weights file needs its .cfg (looked at "
                                    f"{cfg_path}; set train.init_cfg)")
        names_file = path.with_suffix(".names") if path.with_suffix(".names").is_file() else \
            path.parent / "coco.names"
        names = read_names(names_file) if names_file.is_file() else None
        partial, net, _ = load_darknet(cfg_path, path, names)
        return Source(_net_arrays(net), list(partial["data"]["classes"]), _full(partial),
                      f"Darknet {path.name} + {cfg_path.name}")
    weights = find_weights(path)
    arrays = load_arrays(weights)
    if any(k.startswith("yolo_outputs.") for k in arrays):
        return _gluoncv_source(weights, arrays)
    classes, recipe_file = weights_classes(path)
    recipe = _full(parse_yaml(recipe_file.read_text()) or {}) if recipe_file else _full({})
    return Source(arrays, classes, recipe, str(weights))


def _gluoncv_source(path: Path, arrays) -> Source:
    params = {k: v.asnumpy() for k, v in arrays.items()}
    backbone, count = guess_backbone(params), file_layout(params, path)["num_classes"]
    if backbone is None:
        raise CheckpointError(f"train.init_from {path}: a GluonCV YOLOv3 file of an unknown backbone")
    dataset = {20: "voc", 80: "coco"}.get(count, "custom")
    classes = dataset_classes(dataset) or [f"class{i}" for i in range(count)]
    recipe, net = convert_gluoncv(path, f"yolo3_{backbone}_{dataset}", classes)
    return Source(_net_arrays(net), classes if dataset != "custom" else None, _full(recipe),
                  f"GluonCV yolo3_{backbone}_{dataset} {path.name}")


def _net_arrays(net) -> Dict[str, mx.nd.NDArray]:
    return {name: p.data().as_in_context(mx.cpu()) for name, p in net._collect_params_with_prefix().items()}


def _full(partial: Mapping[str, Any]) -> Dict[str, Any]:
    """A recipe's model/data sections with the defaults filled in where the source's recipe is silent."""
    model = {**DEFAULTS["model"], **(partial.get("model") or {})}
    data = {**DEFAULTS["data"], **(partial.get("data") or {})}
    return {"model": model, "data": data}


def warm_start(net, source: Source, classes: Sequence[str], recipe: Mapping[str, Any]) -> Dict[str, Any]:
    """Load `source` into `net` (initialised, on its contexts) by role and shape; the report of what happened."""
    params = net._collect_params_with_prefix()
    counts: Dict[str, Counter] = {}
    copied_classes = None
    for name, param in params.items():
        module = name.split(".")[0]
        tally = counts.setdefault(module, Counter())
        if name.startswith(ANCHORS):
            tally["kept from the recipe"] += 1
            continue
        if name not in source.arrays:
            raise CheckpointError(f"train.init_from {source.description} does not fit the recipe's model: it has "
                                  f"no '{name}' (another architecture?)")
        value = source.arrays[name]
        if name.startswith(HEAD_OUTPUT) and list(classes) != list(source.classes or []):
            rows, copied_classes = _head_rows(param, value, source.classes, classes, name, source.description)
            param.set_data(rows)
            tally["re-initialised"] += 1
            continue
        if len(value.shape) != len(param.shape) or any(d and d != v for d, v in zip(param.shape, value.shape)):
            raise CheckpointError(f"train.init_from {source.description} does not fit the recipe's model: "
                                  f"'{name}' has shape {tuple(value.shape)} there, {tuple(param.shape)} here "
                                  "(another architecture, width or anchor count?)")
        # _load_init settles shapes a first forward would (deferred in_channels, as in GluonCV's MobileNet)
        param._load_init(value, None, cast_dtype=True, dtype_source="current")
        tally["loaded"] += 1
    ignored = Counter(k.split(".")[0] for k in source.arrays if k not in params)
    for module, n in ignored.items():
        counts.setdefault(module, Counter())["ignored"] += n
    return {"source": source.description, "by_module": {m: dict(c) for m, c in counts.items()},
            "loaded": sum(c["loaded"] for c in counts.values()),
            "reinitialised": sum(c["re-initialised"] for c in counts.values()),
            "ignored": sum(c["ignored"] for c in counts.values()),
            "classes_copied": copied_classes, "feed_differences": feed_differences(source.recipe, recipe)}


def _head_rows(param, value, source_classes, classes, name, where):
    """A head output weight `(A * (5 + C), Cin, 1, 1)` or bias `(A * (5 + C),)`: the parameter's fresh values
    with, for every anchor, the box and objectness rows and the rows of same-named classes from `value`."""
    target = param.data().asnumpy()
    source = value.asnumpy()
    width_t, width_s = BOX_FIELDS + len(classes), BOX_FIELDS + len(source_classes or [])
    anchors = target.shape[0] // width_t
    if source_classes is None or source.shape[0] != anchors * width_s or source.shape[1:] != target.shape[1:]:
        return mx.nd.array(target, dtype=param.dtype), []     # another anchor count or width: all fresh
    shared = [(classes.index(c), source_classes.index(c)) for c in classes if c in source_classes]
    for a in range(anchors):
        target[a * width_t:a * width_t + BOX_FIELDS] = source[a * width_s:a * width_s + BOX_FIELDS]
        for t, s in shared:
            target[a * width_t + BOX_FIELDS + t] = source[a * width_s + BOX_FIELDS + s]
    return mx.nd.array(target, dtype=param.dtype), [classes[t] for t, _ in shared]


def feed_differences(source: Mapping[str, Any], recipe: Mapping[str, Any]) -> List[str]:
    """How the recipe feeds its network differently from how the source was trained (a poorer start), and decodes
    its outputs differently (re-learnt at first)."""
    out = []
    for key in ("mean", "std"):
        mine, theirs = [float(v) for v in recipe["data"][key]], [float(v) for v in source["data"][key]]
        if mine != theirs:
            out.append(f"data.{key} is {mine} here, {theirs} in the source")
    if recipe["data"]["resize"] != source["data"]["resize"]:
        out.append(f"data.resize is {recipe['data']['resize']} here, {source['data']['resize']} in the source")
    eps_mine = float((recipe["model"].get("norm") or {}).get("eps", 1e-5))
    eps_theirs = float((source["model"].get("norm") or {}).get("eps", 1e-5))
    if eps_mine != eps_theirs:
        out.append(f"model.norm.eps is {eps_mine:g} here, {eps_theirs:g} in the source")
    out = [f"{line} (a poorer start: feed the network as the source was trained)" for line in out]
    mine, theirs = recipe["model"].get("scale_x_y", 1.0), source["model"].get("scale_x_y", 1.0)
    if mine != theirs:     # the head learnt its centre outputs for the source's grid sensitivity
        out.append(f"model.scale_x_y is {mine} here, {theirs} in the source: the head's centre outputs are "
                   f"re-learnt in the first steps")
    return out


def start_from(recipe: Mapping[str, Any], net, classes: Sequence[str], run_dir: Path, log, write: bool):
    """`train.init_from` into `net`: read the source, warm-start, log the report (and any difference in how the
    source fed its images) and, when `write`, keep it in the run folder as init_from.json."""
    train = recipe["train"]
    report = warm_start(net, read_source(train["init_from"], train.get("init_cfg")), classes, recipe)
    modules = "; ".join(f"{m}: " + ", ".join(f"{n} {what}" for what, n in c.items())
                        for m, c in report["by_module"].items())
    log(f"train.init_from {report['source']}: {report['loaded']} tensors loaded, {report['reinitialised']} "
        f"re-initialised, {report['ignored']} ignored ({modules})"
        + (f"; head rows copied for {', '.join(report['classes_copied'])}" if report["classes_copied"] else ""))
    for line in report["feed_differences"]:
        log(f"warning: train.init_from: {line}")
    if write:
        atomic_write_text(Path(run_dir) / "init_from.json", json.dumps(report, indent=1))
    return report
