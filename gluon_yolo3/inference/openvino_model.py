"""OpenVINO models run on the CPU: an IR (`model.xml` + `model.bin`) written by `export --format openvino` or
`quantize --runtime openvino`, then the recipe's NMS in numpy, as for an ONNX export.

    det = OpenVINODetector("deploy/openvino/model.xml")   # or inference.deployed.load_deployed("deploy/openvino")
    ids, scores, boxes = det(x)     # x (B, 3, H, W) float32, normalised as det.spec says; any B, H and W / 32
    det.outputs(x)                  # before NMS: boxes (B, T, 4), objectness (B, T), class_scores (B, T, C)

The IR leaves batch size, height and width free. OpenVINO's CPU plugin runs a static shape faster than a dynamic
one, so each new input shape is compiled once (about a second for darknet53 at 416 px, a few for its int8 IR)
and kept for the next call of that shape.

Precision, from the model's deploy info: `float32` and `int8` compile with INFERENCE_PRECISION_HINT f32
(OpenVINO's own default on a CPU with bfloat16 is bf16, which would change a float32 model's detections and the
layers an int8 model keeps in float32); `bfloat16` compiles with bf16 and needs a CPU with amx_bf16 or
avx512_bf16 (the error every bfloat16 path gives elsewhere). One stream (PERFORMANCE_HINT LATENCY): a batch runs as
one request on all of OpenVINO's threads (INFERENCE_NUM_THREADS: one per physical core unless `threads`).

openvino is an optional extra, imported only here and in `deploy/openvino_ir.py` (`require_openvino`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from ..amx import require_bf16
from ..data.feed import InputSpec
from ..postprocess.numpy_nms import build_numpy_nms
from .decoded import NumpyNMSDetector, as_numpy

OPENVINO_EXTRA = 'pip install "numpy==1.23.5" -e ".[openvino]"'
INFO_KEY = "gluon_yolo3"            # the IR's rt_info entry holding the deploy info, as JSON
PRECISION_HINTS = {"float32": "f32", "int8": "f32", "bfloat16": "bf16"}


def require_openvino():
    """The `openvino` module, or ImportError naming the pip install that adds the optional extra."""
    try:
        import openvino
    except ImportError:
        raise ImportError(f"OpenVINO is not installed: it is the optional openvino extra; add it with {OPENVINO_EXTRA} "
                          "in the gluon-yolo3 checkout (`make install` does)") from None
    return openvino


def openvino_info(model, path) -> Dict[str, Any]:
    """The deploy info an IR carries in its rt_info (key `gluon_yolo3`); ValueError naming `path` without it."""
    if not model.has_rt_info([INFO_KEY]):
        raise ValueError(f"'{path}' holds no gluon-yolo3 deploy info (rt_info '{INFO_KEY}'): write it with "
                         "gluon-yolo3 export --format openvino")
    return json.loads(model.get_rt_info([INFO_KEY]).astype(str))


class OpenVINODetector(NumpyNMSDetector):
    """An OpenVINO IR on the CPU, compiled once per input shape, then the recipe's NMS in numpy."""

    def __init__(self, path, threads: Optional[int] = None):
        ov = require_openvino()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no OpenVINO model at '{path}'")
        self.core = ov.Core()
        try:
            self.model = self.core.read_model(str(path))
        except RuntimeError as err:         # OpenVINO raises RuntimeError for a damaged or missing .bin
            raise ValueError(f"OpenVINO cannot read '{path}': {str(err).splitlines()[0]}") from None
        self.path = path
        self.info = openvino_info(self.model, path)
        self.spec = InputSpec.from_info(self.info)
        precision = self.info.get("precision", "float32")
        if precision not in PRECISION_HINTS:
            raise ValueError(f"'{path}': unknown precision {precision!r} (expected {', '.join(PRECISION_HINTS)})")
        if precision == "bfloat16":
            require_bf16("An OpenVINO bfloat16 model", "Export it again without --precision (float32), or "
                                                      "quantize it (gluon-yolo3 quantize --runtime openvino).")
        self.config = {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        self.names = [output.get_any_name() for output in self.model.outputs]
        self.nms = build_numpy_nms(self.info["nms"])
        self.requests: Dict[tuple, Any] = {}

    def request(self, shape: tuple):
        """The infer request of a model compiled for input `shape` (compiled at the first call of that shape)."""
        if shape not in self.requests:
            try:
                self.model.reshape({0: list(shape)})
                compiled = self.core.compile_model(self.model, "CPU", self.config)
            except RuntimeError as err:
                raise ValueError(f"OpenVINO cannot run '{self.path}' on input shape {shape}: "
                                 f"{str(err).splitlines()[0]}") from None
            self.requests[shape] = compiled.create_infer_request()
        return self.requests[shape]

    def outputs(self, x) -> Dict[str, np.ndarray]:
        """The network's outputs without NMS: boxes `(B, T, 4)`, objectness `(B, T)`, class_scores `(B, T, C)`."""
        x = np.ascontiguousarray(as_numpy(x), dtype=np.float32)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"input must be (B, 3, H, W), got {x.shape}")
        values = self.request(tuple(x.shape)).infer({0: x}, share_inputs=True)
        return {name: values[i] for i, name in enumerate(self.names)}
