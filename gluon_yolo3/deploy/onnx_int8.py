"""int8 inference through ONNX Runtime's static quantization (QDQ), the faster int8 path on CPUs without AMX.

    quantize_onnx(recipe, "runs/demo", "deploy/onnx-int8", calib=32, batch_size=1)   # model.onnx, deploy.json
    det = load_deployed("deploy/onnx-int8")     # det(x) -> ids, scores, boxes, like the fp32 YOLOv3

How: the detector is exported to ONNX at a fixed `(batch_size, 3, S, S)` (`export.export_onnx`), its
BatchNorms folded into the convolutions (`quant_pre_process`), then `quantize_static` inserts
QuantizeLinear/DequantizeLinear pairs: uint8 activations (asymmetric, calibrated), int8 weights per
output channel. ONNX Runtime runs the quantized convolutions with VNNI where the CPU has it.

What is quantized: every convolution up to the head (with its LeakyReLU, the residual additions, the
neck's upsampling, concatenations and max pools). What stays fp32: the head's linear output convolutions
(as in `deploy.quantize`: their outputs are logits and box offsets) and everything after them, the
decoding to boxes, objectness and class scores. NMS runs in numpy after the model, as for the fp32 export.

Calibration: `calib` images of the recipe's training set preprocessed as for evaluation
(`quantize.calibration_images`); `naive` takes each tensor's min/max, `entropy` KL-optimal thresholds.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Set

import numpy as np

from ..inference.deployed import DEPLOY_FILE
from .export import export_onnx, staged, store_info
from .quantize import calibration_images

QUANTIZED_OPS = ["Conv", "LeakyRelu", "Add", "Concat", "Resize", "MaxPool"]
CALIB_METHODS = {"naive": "MinMax", "entropy": "Entropy"}


def name_nodes(graph) -> None:
    """In place: give every unnamed node the name of its first output (unique in a valid graph), so that
    nodes can be excluded from quantization by name."""
    for node in graph.node:
        if not node.name:
            node.name = node.output[0]


def downstream_nodes(graph, start: Iterable[str]) -> Set[str]:
    """Names of the nodes named in `start` and of every node that consumes, directly or not, their outputs."""
    start = set(start)
    tensors = {o for n in graph.node if n.name in start for o in n.output}
    found = set(start)
    changed = True
    while changed:       # the graph is topologically sorted, but a fixed point does not rely on it
        changed = False
        for node in graph.node:
            if node.name not in found and tensors.intersection(node.input):
                found.add(node.name)
                tensors.update(node.output)
                changed = True
    return found


def head_output_nodes(graph, weights: Iterable[str]) -> List[str]:
    """Names of the Conv nodes whose weight is one of the head's output weights (names as in deploy info
    `head_output_weights`)."""
    weights = set(weights)
    return [n.name for n in graph.node if n.op_type == "Conv" and len(n.input) > 1 and n.input[1] in weights]


class ImageReader:
    """onnxruntime's CalibrationDataReader protocol over `(N, 3, S, S)` images, `batch` at a time."""

    def __init__(self, images: np.ndarray, input_name: str, batch: int):
        self.batches = iter([{input_name: images[i:i + batch]} for i in range(0, len(images) - batch + 1, batch)])

    def get_next(self):
        return next(self.batches, None)


def quantize_onnx(recipe: Mapping[str, Any], weights, out, calib: int = 32, calib_mode: str = "naive",
                  batch_size: int = 1, quantize_head: bool = False, dynamic: bool = False) -> Dict[str, Any]:
    """Quantize the recipe's detector with `weights` for ONNX Runtime; write `out/model.onnx` (input fixed to
    `(batch_size, 3, S, S)`, or with `dynamic` any batch size and multiple of 32, calibrated `batch_size` images
    at a time) and `out/deploy.json` (format onnx, precision int8). Returns a summary."""
    # onnx and onnxruntime: the optional onnx extra, slow to import; only when this runs
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    if calib_mode not in CALIB_METHODS:
        raise ValueError(f"calib_mode must be one of {', '.join(CALIB_METHODS)}, got {calib_mode!r}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    if calib < batch_size:
        raise ValueError(f"--calib {calib} must be at least the batch size {batch_size}")
    images = calibration_images(recipe, calib)
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="gluon_yolo3_onnx_int8_") as work:
        work = Path(work)
        fp32 = export_onnx(recipe, weights, work / "fp32", batch_size=batch_size, dynamic=dynamic)
        info = json.loads((work / "fp32" / DEPLOY_FILE).read_text())
        folded = work / "folded.onnx"
        quant_pre_process(fp32["onnx"], str(folded), skip_symbolic_shape=True)
        model = onnx.load(str(folded))
        name_nodes(model.graph)
        head = info["head_output_weights"]
        outputs = head_output_nodes(model.graph, head)
        if len(outputs) != len(head):
            raise ValueError(f"found {len(outputs)} of the head's {len(head)} output convolutions in the ONNX graph")
        keep = downstream_nodes(model.graph, outputs)     # the output convolutions and the decoding after them
        if quantize_head:
            keep -= set(outputs)
        named = work / "named.onnx"
        onnx.save(model, str(named))
        quantized = work / "int8.onnx"
        quantize_static(str(named), str(quantized), ImageReader(images, info["input_name"], batch_size),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=QUANTIZED_OPS,
                        nodes_to_exclude=sorted(keep),
                        calibrate_method=getattr(CalibrationMethod, CALIB_METHODS[calib_mode]))
        info.update(precision="int8", calib_images=len(images) // batch_size * batch_size, calib_mode=calib_mode,
                    fp32_nodes=len(keep))
        model = onnx.load(str(quantized))
        store_info(model, info)
        with staged(out) as (staging, publish):
            onnx.save(model, str(staging / info["file"]))
            (staging / DEPLOY_FILE).write_text(json.dumps(info, indent=1))
            publish([info["file"], DEPLOY_FILE])
    return {"folder": str(out), "files": [info["file"], DEPLOY_FILE], "onnx": str(out / info["file"]),
            "calib_images": info["calib_images"], "calib_mode": calib_mode, "fp32_nodes": len(keep)}
