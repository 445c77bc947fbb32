"""Export a trained detector: an MXNet symbol folder (NMS included) or an ONNX file (NMS left out).

    export_mxnet(recipe, "runs/demo", "deploy/mxnet")   # model-symbol.json, model-0000.params, deploy.json
    export_onnx(recipe, "runs/demo", "deploy/onnx")     # model.onnx (any batch, any multiple of 32), deploy.json

MXNet: the hybridized inference graph, `x (B, 3, H, W)` -> ids `(B, K, 1)`, scores `(B, K, 1)`, boxes
`(B, K, 4)` (x1y1x2y2 input pixels, empty slots -1), for any H, W that are multiples of 32: anchors are
constants saved with the parameters and the grid offsets are computed from the feature map's shape
(`arange_like`). Load it with `gluon.SymbolBlock.imports` or `inference.deployed.load_deployed`.

ONNX: `x (B, 3, H, W)` (by default any B and any H, W multiples of 32; `dynamic=False` fixes them to
`(batch_size, 3, S, S)`) -> `boxes (B, T, 4)` x1y1x2y2 input pixels, `objectness (B, T)` and
`class_scores (B, T, C)` (sigmoid probabilities; a detection's score is objectness x class score),
weights stored as initializers (not graph inputs, which keeps onnxruntime from treating them as
overridable). NMS runs after it in numpy (`postprocess.numpy_nms`), with the recipe's NMS settings, which the
file carries in its metadata together with the preprocessing and class names.

`deploy.json` next to the model says how to feed it: input size, resize mode, mean/std, class names, NMS.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping

import mxnet as mx
import numpy as np
from mxnet import gluon

from ..data.feed import InputSpec
from ..inference.deployed import DEPLOY_FILE
from ..inference.detector import class_names, load_detector
from ..postprocess.decode import decode, per_scale
ONNX_OUTPUTS = ("boxes", "objectness", "class_scores")


class DecodedOutputs(gluon.HybridBlock):
    """A YOLOv3 without NMS: `x (B, 3, H, W)` -> boxes `(B, T, 4)` x1y1x2y2 input pixels, objectness
    `(B, T)` and class scores `(B, T, C)`, both sigmoid probabilities. Shares the detector's parameters."""

    def __init__(self, net, **kwargs):
        super().__init__(prefix="", **kwargs)
        self.backbone, self.neck, self.head, self.decoder = net.backbone, net.neck, net.head, net.decoder
        self.num_classes = net.num_classes

    def hybrid_forward(self, F, x):
        raw = self.head(*self.neck(*self.backbone(x)))
        boxes, objectness, class_scores = decode(F, self.decoder, raw, width=5 + self.num_classes)
        return boxes, F.reshape(objectness, (0, -1)), class_scores


class RawOutputs(gluon.HybridBlock):
    """Backbone -> neck -> head only: `x` -> raw outputs per scale, finest first, `(B, H, W, A, 5 + C)`."""

    def __init__(self, net, **kwargs):
        super().__init__(prefix="", **kwargs)
        self.backbone, self.neck, self.head = net.backbone, net.neck, net.head

    def hybrid_forward(self, F, x):
        return self.head(*self.neck(*self.backbone(x)))


def deploy_info(recipe: Mapping[str, Any], classes, fmt: str, **extra) -> Dict[str, Any]:
    """What a runtime needs besides the graph: the InputSpec (preprocessing, class names, NMS settings), the
    anchors, the format and `extra`."""
    return {"format": fmt, "name": recipe.get("name"), **InputSpec.from_recipe(recipe, classes).info(),
            "anchors": recipe["model"]["anchors"],
            "scale_x_y": list(per_scale(recipe["model"]["scale_x_y"], len(recipe["model"]["anchors"]))), **extra}


@contextlib.contextmanager
def staged(out: Path):
    """A temporary folder inside `out` to write into; `publish(names)` moves finished files into `out`
    (each an atomic rename). The temporary folder goes away whatever happens, so a failed export leaves
    `out` as it was."""
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export.", dir=out))

    def publish(names):
        for name in names:
            os.replace(staging / name, out / name)
    try:
        yield staging, publish
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_plain(recipe: Mapping[str, Any], weights, precision: str | None = None):
    """(the recipe's detector with `weights`, not hybridized, on the CPU; the run's class list)."""
    classes = class_names(recipe, weights)
    return load_detector(recipe, weights, classes=classes, hybridize=False, precision=precision), classes


def export_mxnet(recipe: Mapping[str, Any], weights, out, prefix: str = "model",
                 precision: str | None = None) -> Dict[str, Any]:
    """Write `out/<prefix>-symbol.json`, `out/<prefix>-0000.params` and `out/deploy.json`. `precision="bfloat16"`:
    the graph computes its convolutions in bfloat16 (float32 parameters in the file, cast in the graph)."""
    net, classes = load_plain(recipe, weights, precision)
    net.hybridize(static_alloc=True)
    size = int(recipe["model"]["input_size"])
    net(mx.nd.zeros((1, 3, size, size)))
    out = Path(out)
    info = deploy_info(recipe, classes, "mxnet", symbol=f"{prefix}-symbol.json", params=f"{prefix}-0000.params",
                       outputs=["ids", "scores", "boxes"], input_name="data", precision=precision or "float32")
    files = [info["symbol"], info["params"], DEPLOY_FILE]
    with staged(out) as (staging, publish):
        net.export(str(staging / prefix), epoch=0, remove_amp_cast=False)   # keep a bfloat16 graph bfloat16
        (staging / DEPLOY_FILE).write_text(json.dumps(info, indent=1))
        publish(files)
    return {"folder": str(out), "files": files}


def export_onnx(recipe: Mapping[str, Any], weights, out, filename: str = "model.onnx",
                batch_size: int = 1, dynamic: bool = True) -> Dict[str, Any]:
    """Write `out/<filename>` (network up to boxes, objectness, class scores) and `out/deploy.json`.

    The input shape is `(batch_size, 3, S, S)`, S the recipe's input size; with `dynamic`, batch size,
    height and width are left free (any multiple of 32)."""
    import onnx         # the optional onnx extra: only when exporting to ONNX
    net, classes = load_plain(recipe, weights)
    core = DecodedOutputs(net)
    core.hybridize()
    size = int(recipe["model"]["input_size"])
    core(mx.nd.zeros((batch_size, 3, size, size)))
    out = Path(out)
    info = deploy_info(recipe, classes, "onnx", file=filename, outputs=list(ONNX_OUTPUTS), input_name="data",
                       batch_size=None if dynamic else batch_size, dynamic=dynamic,
                       head_output_weights=[conv.weight.name for conv in net.head.outputs])
    with staged(out) as (staging, publish):
        core.export(str(staging / "decoded"), epoch=0)
        sym, args, auxs = mx.model.load_checkpoint(str(staging / "decoded"), 0)
        raw_path = staging / "raw.onnx"
        mx.onnx.export_model(sym, {**args, **auxs}, in_shapes=[(batch_size, 3, size, size)],
                             in_types=[np.float32], onnx_file_path=str(raw_path), dynamic=dynamic,
                             dynamic_input_shapes=[(None, 3, None, None)] if dynamic else None)
        model = onnx.load(str(raw_path))
        finish_onnx(model, info)
        onnx.checker.check_model(model)
        onnx.save(model, str(staging / filename))
        (staging / DEPLOY_FILE).write_text(json.dumps(info, indent=1))
        publish([filename, DEPLOY_FILE])
    return {"folder": str(out), "files": [filename, DEPLOY_FILE], "onnx": str(out / filename)}


def finish_onnx(model, info: Mapping[str, Any]):
    """In place: weights only as initializers (dropped from the graph inputs), outputs named
    boxes/objectness/class_scores, `info` stored as metadata (key `gluon_yolo3`)."""
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    del graph.input[:]
    graph.input.extend(inputs)
    for output, name in zip(list(graph.output), ONNX_OUTPUTS):
        old = output.name
        if old == name:
            continue
        for node in graph.node:
            node.output[:] = [name if o == old else o for o in node.output]
            node.input[:] = [name if i == old else i for i in node.input]
        output.name = name
    store_info(model, info)


def store_info(model, info: Mapping[str, Any]):
    """In place: `info` as the ONNX model's only metadata entry (key `gluon_yolo3`), read by `runtime.onnx_info`."""
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = "gluon_yolo3", json.dumps(info)
