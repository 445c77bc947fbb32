"""Deployment verbs: export (mxnet | onnx | openvino), quantize (int8 for MXNet, ONNX Runtime or OpenVINO), pack (a zoo
folder)."""
from __future__ import annotations

from pathlib import Path

import typer

from ..deploy.export import export_mxnet, export_onnx
from ..deploy.onnx_int8 import quantize_onnx
from ..deploy.openvino_ir import export_openvino, quantize_openvino
from ..deploy.quantize import quantize_detector
from ..deploy.zoo import pack as pack_zoo
from ..engine.run_folder import with_run_splits
from .common import PrecisionOption, RecipeArg, SetOption, WeightsOption, cli_errors, echo_json, load_recipe


@cli_errors
def export(recipe: RecipeArg, weights: WeightsOption,
           format_: str = typer.Option("mxnet", "--format", help="mxnet: symbol + params with NMS, any input size "
                                                                 "multiple of 32; onnx: boxes, objectness and "
                                                                 "class scores (NMS runs in numpy); openvino: "
                                                                 "the ONNX graph as an OpenVINO IR (model.xml, "
                                                                 "model.bin; any batch and multiple of 32; NMS in "
                                                                 "numpy)."),
           out: Path = typer.Option(..., help="Folder for the exported files and deploy.json."),
           dynamic: bool = typer.Option(True, help="onnx: leave batch size, height and width free "
                                                   "(--no-dynamic fixes them to --batch-size x input size)."),
           batch_size: int = typer.Option(1, help="onnx with --no-dynamic: the fixed batch size."),
           precision: PrecisionOption = None, set_: SetOption = None):
    """Export a trained detector for deployment (MXNet symbol or OpenVINO IR, in float32 or bfloat16, or ONNX)."""
    if format_ not in ("mxnet", "onnx", "openvino"):
        raise ValueError(f"--format must be mxnet, onnx or openvino, got {format_!r}")
    if precision is not None and format_ == "onnx":
        raise ValueError("--precision bfloat16 is for --format mxnet or openvino (ONNX Runtime runs float32 or int8)")
    if format_ == "openvino" and (not dynamic or batch_size != 1):
        raise ValueError("--no-dynamic and --batch-size are for --format onnx: an OpenVINO IR takes any batch size and "
                         "input size multiple of 32 (each shape is compiled at its first call)")
    cfg = load_recipe(recipe, set_)
    if format_ == "mxnet":
        summary = export_mxnet(cfg, weights, out, precision=precision)
    elif format_ == "openvino":
        summary = export_openvino(cfg, weights, out, precision=precision)
    else:
        summary = export_onnx(cfg, weights, out, batch_size=batch_size, dynamic=dynamic)
    echo_json(summary)
    target = summary.get("onnx") or out
    flag = "--onnx" if format_ == "onnx" else "--exported"
    typer.echo(f"next: gluon-yolo3 predict {recipe} {flag} {target} IMAGE...")


@cli_errors
def quantize(recipe: RecipeArg, weights: WeightsOption,
             calib: int = typer.Option(32, help="Number of training images to calibrate on."),
             out: Path = typer.Option(..., help="Folder for the int8 model and deploy.json (mxnet: trunk-symbol.json, "
                                                "trunk-0000.params; onnxruntime: model.onnx; openvino: "
                                                "model.xml, model.bin)."),
             runtime: str = typer.Option("mxnet", help="mxnet (oneDNN int8 graph), onnxruntime (QDQ ONNX file, "
                                                       "fixed input shape) or openvino (the same QDQ graph as an "
                                                       "OpenVINO IR, any input shape; the fastest on Intel CPUs)."),
             batch_size: int = typer.Option(1, help="onnxruntime: the model's fixed batch size (larger batches "
                                                    "run in chunks)."),
             calib_mode: str = typer.Option("naive", help="naive (min/max per layer) or entropy (KL thresholds)."),
             quantize_head: bool = typer.Option(False, help="Also quantize the head's output convolutions "
                                                            "(faster, less accurate)."),
             set_: SetOption = None):
    """Quantize to int8 (MXNet oneDNN, ONNX Runtime or OpenVINO), calibrated on training images; `eval --deployed`
    compares mAPs."""
    if runtime not in ("mxnet", "onnxruntime", "openvino"):
        raise ValueError(f"--runtime must be mxnet, onnxruntime or openvino, got {runtime!r}")
    cfg = with_run_splits(load_recipe(recipe, set_), weights)   # calibrate on the run's own training split
    if runtime == "mxnet":
        summary = quantize_detector(cfg, weights, out, calib=calib, calib_mode=calib_mode,
                                    quantize_head=quantize_head)
    elif runtime == "openvino":
        summary = quantize_openvino(cfg, weights, out, calib=calib, calib_mode=calib_mode,
                                    quantize_head=quantize_head)
    else:
        summary = quantize_onnx(cfg, weights, out, calib=calib, calib_mode=calib_mode, batch_size=batch_size,
                                quantize_head=quantize_head)
    echo_json(summary)
    typer.echo(f"next: gluon-yolo3 eval {recipe} --weights {weights} --deployed {summary.get('onnx', out)}")


@cli_errors
def pack(recipe: Path = typer.Argument(..., help="Recipe YAML file (a run folder's recipe.yaml reproduces the run)."),
         weights: WeightsOption = ...,
         out: Path = typer.Option(..., help="Zoo folder for model.params, recipe.yaml and SHA256SUMS."),
         dtype: str = typer.Option("float16", help="Storage type of the weights: float16 (half the bytes) or "
                                                   "float32."),
         set_: SetOption = None):
    """Pack weights for a model zoo: float16 storage, the recipe, and sha256 sums checked on load."""
    echo_json(pack_zoo(load_recipe(recipe, set_), weights, out, dtype=dtype))
    typer.echo(f"next: gluon-yolo3 eval {out / 'recipe.yaml'} --weights {out}")
