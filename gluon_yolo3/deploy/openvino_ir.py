"""OpenVINO out: the detector as an OpenVINO IR, in float32 or bfloat16 (`export_openvino`) or int8
(`quantize_openvino`).

    export_openvino(recipe, "runs/demo", "deploy/openvino")                   # model.xml, model.bin, deploy.json
    export_openvino(recipe, "runs/demo", "deploy/ov-bf16", precision="bfloat16")
    det = inference.deployed.load_deployed("deploy/openvino")                # det(x) -> ids, scores, boxes

How: the ONNX export (`export.export_onnx`: boxes, objectness, class scores; batch size, height and width free)
read by OpenVINO's ONNX front end (`openvino.convert_model`) and saved as an IR with float32 weights. The IR
carries its deploy info (preprocessing, class names, NMS settings) in its rt_info, and `deploy.json` lies beside
it as for every export. NMS runs after it in numpy (`inference.openvino_model`), as for ONNX.

bfloat16 is not a different file: the IR is the float32 one, and its deploy info tells the runtime to compile it
with INFERENCE_PRECISION_HINT bf16 (convolutions on AMX tiles or AVX512-BF16 units; CPUs without them get a clear
error, here and when loading).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from ..inference.deployed import DEPLOY_FILE
from ..inference.openvino_model import INFO_KEY, require_openvino
from ..models.precision import inference_dtype
from .export import export_onnx, staged
from .onnx_int8 import quantize_onnx

IR_FILES = ("model.xml", "model.bin")


def onnx_to_openvino(recipe: Mapping[str, Any], weights, work: Path):
    """(the recipe's detector with `weights` as an OpenVINO model, read from its dynamic ONNX export written
    into `work`; the ONNX export's deploy info)."""
    ov = require_openvino()
    exported = export_onnx(recipe, weights, work / "onnx")
    info = json.loads((work / "onnx" / DEPLOY_FILE).read_text())
    return ov.convert_model(exported["onnx"]), info


def write_ir(model, info: Dict[str, Any], out) -> Dict[str, Any]:
    """Write `model` with `info` (its rt_info and `deploy.json`) as `out/model.xml`, `out/model.bin`,
    `out/deploy.json`; float32 weights stay float32. -> a summary."""
    ov = require_openvino()
    info = {**info, "format": "openvino", "file": IR_FILES[0], "weights": IR_FILES[1]}
    model.set_rt_info(json.dumps(info), [INFO_KEY])
    out = Path(out)
    files = [*IR_FILES, DEPLOY_FILE]
    with staged(out) as (staging, publish):
        ov.save_model(model, str(staging / IR_FILES[0]), compress_to_fp16=False)
        (staging / DEPLOY_FILE).write_text(json.dumps(info, indent=1))
        publish(files)
    return {"folder": str(out), "files": files, "precision": info["precision"]}


def export_openvino(recipe: Mapping[str, Any], weights, out, precision: Optional[str] = None) -> Dict[str, Any]:
    """Write `out/model.xml`, `out/model.bin` (any batch size, any input size multiple of 32) and
    `out/deploy.json`. `precision="bfloat16"`: the runtime compiles it in bfloat16 (ValueError on a CPU without)."""
    precision = inference_dtype(precision) or "float32"
    with tempfile.TemporaryDirectory(prefix="gluon_yolo3_openvino_") as work:
        model, info = onnx_to_openvino(recipe, weights, Path(work))
        return write_ir(model, {**info, "precision": precision}, out)


def quantize_openvino(recipe: Mapping[str, Any], weights, out, calib: int = 32, calib_mode: str = "naive",
                      quantize_head: bool = False) -> Dict[str, Any]:
    """Quantize the recipe's detector with `weights` to int8 for OpenVINO; write `out/model.xml`, `out/model.bin`
    (any batch size, any input size multiple of 32) and `out/deploy.json` (precision int8). -> a summary."""
    ov = require_openvino()
    with tempfile.TemporaryDirectory(prefix="gluon_yolo3_openvino_int8_") as work:
        quantized = quantize_onnx(recipe, weights, Path(work) / "int8", calib=calib, calib_mode=calib_mode,
                                  batch_size=1, quantize_head=quantize_head, dynamic=True)
        info = json.loads((Path(work) / "int8" / DEPLOY_FILE).read_text())
        summary = write_ir(ov.convert_model(quantized["onnx"]), info, out)
    return {**summary, "calib_images": quantized["calib_images"], "calib_mode": calib_mode,
            "fp32_nodes": quantized["fp32_nodes"]}
