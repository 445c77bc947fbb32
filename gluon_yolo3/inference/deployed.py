"""Exported and quantized models, loaded and run: an MXNet export folder, an ONNX file (onnxruntime + numpy
NMS), an int8 folder (MXNet oneDNN), an OpenVINO folder (`openvino_model`).

    det = load_deployed("deploy/onnx/model.onnx")   # or an export folder, or a quantized folder
    ids, scores, boxes = det(x)                      # x (B, 3, H, W) float32, normalised as det.spec says
    predictor = deployed_predictor("deploy/onnx/model.onnx")
    predictor(["image.jpg"])   # as inference.Predictor: [{"boxes", "scores", "ids", "names"}], original pixels

Every detector here is called like the YOLOv3 block in inference: `x` an NDArray (or numpy array) ->
ids `(B, K, 1)`, scores `(B, K, 1)`, boxes `(B, K, 4)` x1y1x2y2 input pixels, empty slots -1; outputs are
NDArrays for an NDArray input (so that `evaluation.runner` can score them), numpy otherwise. Each carries
`info` (its deploy.json) and `spec` (the InputSpec it must be fed with). Writing them: `deploy/`.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Dict, Mapping, Optional
import mxnet as mx
import numpy as np
from mxnet import gluon

from ..data.feed import InputSpec
from ..postprocess.decode import YOLODecoder, decode, detection_scores
from ..postprocess.numpy_nms import build_numpy_nms
from ..registry import NMS
from .decoded import NumpyNMSDetector, as_numpy
from .openvino_model import OpenVINODetector
from .predictor import Predictor

DEPLOY_FILE = "deploy.json"


def read_deploy_info(folder) -> Dict[str, Any]:
    """`deploy.json` of an export folder; a clear error when the folder is not one."""
    path = Path(folder) / DEPLOY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"'{folder}' is not an export folder: no {DEPLOY_FILE} in it "
                                f"(write one with gluon-yolo3 export)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


class ExportedMXNet:
    """An MXNet export folder (`gluon-yolo3 export --format mxnet`) loaded with `SymbolBlock.imports`."""

    def __init__(self, folder, ctx=None):
        folder = Path(folder)
        self.info = read_deploy_info(folder)
        self.spec = InputSpec.from_info(self.info)
        if self.info.get("format") != "mxnet":
            raise ValueError(f"{folder / DEPLOY_FILE}: format {self.info.get('format')!r}, not an MXNet export")
        self.ctx = ctx or mx.cpu()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Cannot decide type.*")
            self.net = mx.gluon.SymbolBlock.imports(str(folder / self.info["symbol"]), [self.info["input_name"]],
                                                    str(folder / self.info["params"]), ctx=self.ctx)
        self.net.hybridize(static_alloc=True, static_shape=True)

    def __call__(self, x):
        data = x if hasattr(x, "asnumpy") else mx.nd.array(x, ctx=self.ctx)
        ids, scores, boxes = self.net(data.as_in_context(self.ctx))
        if hasattr(x, "asnumpy"):
            return ids, scores, boxes
        return ids.asnumpy(), scores.asnumpy(), boxes.asnumpy()


class OnnxDetector(NumpyNMSDetector):
    """An ONNX export run by onnxruntime, then the recipe's NMS in numpy."""

    def __init__(self, path, nms: Optional[Mapping[str, Any]] = None, threads: Optional[int] = None,
                 spinning: bool = True):
        """`threads`: onnxruntime's intra-op threads (default: one per core); `spinning=False` keeps idle
        threads from busy-waiting (fairer when other runtimes share the process, slower alone)."""
        import onnxruntime as ort      # optional (the onnx extra), and slow to import: only when used
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no ONNX file at '{path}'")
        self.info = onnx_info(path)
        self.spec = InputSpec.from_info(self.info)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:   # onnxruntime raises its own exception types
            raise ValueError(f"onnxruntime cannot load '{path}': {str(err).splitlines()[0]}") from None
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.batch = first.shape[0] if isinstance(first.shape[0], int) else None   # None: any batch size
        self.nms = build_numpy_nms(nms if nms is not None else self.info["nms"])

    def outputs(self, x) -> Dict[str, np.ndarray]:
        """The network's outputs without NMS: boxes `(B, T, 4)`, objectness `(B, T)`, class_scores `(B, T, C)`.

        A model exported with a fixed batch size runs on `x` chunk by chunk (the last chunk padded)."""
        x = as_numpy(x).astype(np.float32)
        names = [o.name for o in self.session.get_outputs()]
        step = self.batch or len(x)
        parts = []
        for start in range(0, len(x), step):
            chunk = x[start:start + step]
            pad = step - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], np.float32)])
            values = self.session.run(None, {self.input_name: chunk})
            parts.append([v[:step - pad] for v in values])
        return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(names)}


def onnx_info(path) -> Dict[str, Any]:
    """The deploy info an ONNX export carries in its metadata (else `deploy.json` beside it)."""
    import onnx                        # optional (the onnx extra), and slow to import: only when used
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:   # protobuf decode errors
        raise ValueError(f"'{path}' is not an ONNX file: {str(err).splitlines()[0] if str(err) else err}") from None
    for entry in model.metadata_props:
        if entry.key == "gluon_yolo3":
            return json.loads(entry.value)
    return read_deploy_info(Path(path).parent)


def deployed_label(info: Mapping[str, Any]) -> str:
    """What runs a deployed model: "mxnet", "mxnet-bf16", "onnx", "int8" (MXNet's), "onnx-int8" (onnxruntime's),
    "openvino", "openvino-bf16", "openvino-int8"."""
    suffix = {"int8": "-int8", "bfloat16": "-bf16"}.get(info.get("precision"), "")
    return str(info.get("format")) + suffix


def load_deployed(path, ctx=None):
    """A detector from an ONNX file, an MXNet export folder, an int8 (quantized) folder, or an OpenVINO folder or
    .xml file."""
    path = Path(path)
    if path.is_file() and path.suffix == ".onnx":
        return OnnxDetector(path)
    if path.is_file() and path.suffix == ".xml":
        return OpenVINODetector(path)
    if path.is_file() and path.name == DEPLOY_FILE:
        path = path.parent
    info = read_deploy_info(path)
    if info.get("format") == "mxnet":
        return ExportedMXNet(path, ctx)
    if info.get("format") == "int8":
        return load_quantized(path, ctx)
    if info.get("format") == "onnx":
        return OnnxDetector(path / info["file"])
    if info.get("format") == "openvino":
        return OpenVINODetector(path / info["file"])
    raise ValueError(f"{path / DEPLOY_FILE}: unknown format {info.get('format')!r}")


class DecodeNMS(gluon.HybridBlock):
    """Raw outputs per scale `(B, H, W, A, 5 + C)` -> ids `(B, K, 1)`, scores `(B, K, 1)`, boxes
    `(B, K, 4)`: YOLOv3's decoding and the recipe's NMS, in fp32."""

    def __init__(self, anchors, strides, nms: Mapping[str, Any], scale_x_y=1.0, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.decoder = YOLODecoder(anchors, strides, scale_x_y)
            self.nms = NMS.build(dict(nms))

    def hybrid_forward(self, F, *raw):
        boxes, objectness, class_probs = decode(F, self.decoder, raw)
        return self.nms(boxes, detection_scores(F, objectness, class_probs))


class QuantizedDetector:
    """An int8 trunk (a SymbolBlock) followed by fp32 decoding and NMS; called like YOLOv3 in inference."""

    def __init__(self, trunk, info: Mapping[str, Any], ctx=None):
        self.ctx = ctx or mx.cpu()
        self.trunk = trunk
        self.info = dict(info)
        self.spec = InputSpec.from_info(self.info)
        self.post = DecodeNMS(info["anchors"], info["strides"], info["nms"], info.get("scale_x_y", 1.0),
                              prefix="post_")
        self.post.initialize(ctx=self.ctx)
        self.post.hybridize(static_alloc=True, static_shape=True)

    def raw(self, x):
        """The trunk's raw outputs per scale, finest first, `(B, H, W, A, 5 + C)`."""
        out = self.trunk(x)
        return tuple(out) if isinstance(out, (list, tuple)) else (out,)

    def __call__(self, x):
        data = x if hasattr(x, "asnumpy") else mx.nd.array(x, ctx=self.ctx)
        ids, scores, boxes = self.post(*self.raw(data.as_in_context(self.ctx)))
        if hasattr(x, "asnumpy"):
            return ids, scores, boxes
        return ids.asnumpy(), scores.asnumpy(), boxes.asnumpy()


def load_quantized(folder, ctx=None) -> QuantizedDetector:
    """A QuantizedDetector from a folder written by `quantize_detector`."""
    folder = Path(folder)
    info = read_deploy_info(folder)
    if info.get("format") != "int8":
        raise ValueError(f"{folder / DEPLOY_FILE}: format {info.get('format')!r}, not an int8 (quantized) model")
    ctx = ctx or mx.cpu()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Cannot decide type.*")
        trunk = mx.gluon.SymbolBlock.imports(str(folder / info["symbol"]), [info["input_name"]],
                                             str(folder / info["params"]), ctx=ctx)
    # static_shape: the quantized graph keeps its oneDNN primitives between calls (7x faster on the demo at
    # batch 1 than re-planning every call); a new input shape re-plans once
    trunk.hybridize(static_alloc=True, static_shape=True)
    return QuantizedDetector(trunk, info, ctx)


def deployed_predictor(path, recipe: Optional[Mapping[str, Any]] = None, score_thresh: Optional[float] = None,
                       ctx=None) -> Predictor:
    """A Predictor running an exported or quantized model, fed as its info says; the score threshold is
    `score_thresh`, else `recipe`'s predict.score_thresh, else 0.3."""
    detector = load_deployed(path, ctx)
    default = recipe["predict"]["score_thresh"] if recipe is not None else 0.3
    return Predictor(detector.spec, detector, contexts=[ctx or mx.cpu()],
                     score_thresh=default if score_thresh is None else score_thresh)
