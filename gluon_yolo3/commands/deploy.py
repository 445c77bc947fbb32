"""Interop and deployment verbs: import-darknet, export-darknet, export (mxnet | onnx), quantize (int8), pack."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from gluon_yolo3.cli import KNOWN_ERRORS, SET_HELP, app, fail

WEIGHTS_HELP = "A .params file or a run folder (its best checkpoint, else its last)."


def _recipe(recipe: Path, overrides: Optional[List[str]]):
    from gluon_yolo3 import api
    return api.load(recipe, overrides or [])


def _echo(summary):
    typer.echo(json.dumps(summary, indent=1, default=str))


@app.command("import-darknet")
def import_darknet(cfg: Path = typer.Argument(..., help="Darknet .cfg file (yolov3, yolov3-tiny or yolov3-spp)."),
                   weights: Path = typer.Argument(..., help="Darknet .weights file (either header version)."),
                   out: Path = typer.Option(..., help="Folder for recipe.yaml and checkpoints/best.params "
                                                      "(usable as --weights afterwards)."),
                   names: Optional[Path] = typer.Option(None, help="Class names, one per line (Darknet's .names); "
                                                                   "default: COCO's for 80 classes, else class0..")):
    """Import Darknet weights: writes a recipe and a checkpoint of the same network."""
    from gluon_yolo3.interop.darknet import import_darknet as run, read_names
    try:
        summary = run(cfg, weights, out, read_names(names) if names else None)
    except KNOWN_ERRORS as err:
        fail(err)
    _echo(summary)
    typer.echo(f"next: gluon-yolo3 predict {summary['recipe']} --weights {out} IMAGE...")


@app.command("export-darknet")
def export_darknet(recipe: Path = typer.Argument(..., help="Recipe YAML file."),
                   weights: Path = typer.Option(..., help=WEIGHTS_HELP),
                   out: Path = typer.Option(..., help="Folder for <name>.cfg, <name>.weights and <name>.names."),
                   set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP)):
    """Export to Darknet (.cfg + .weights + .names), for Darknet or cv2.dnn.readNetFromDarknet."""
    from gluon_yolo3.interop.darknet import export_darknet as run
    try:
        summary = run(_recipe(recipe, set_), weights, out)
    except KNOWN_ERRORS as err:
        fail(err)
    _echo(summary)


@app.command("export")
def export(recipe: Path = typer.Argument(..., help="Recipe YAML file."),
           weights: Path = typer.Option(..., help=WEIGHTS_HELP),
           format_: str = typer.Option("mxnet", "--format", help="mxnet: symbol + params with NMS, any input size "
                                                                 "multiple of 32; onnx: boxes, objectness and "
                                                                 "class scores (NMS runs in numpy)."),
           out: Path = typer.Option(..., help="Folder for the exported files and deploy.json."),
           dynamic: bool = typer.Option(True, help="onnx: leave batch size, height and width free "
                                                   "(--no-dynamic fixes them to --batch-size x input size)."),
           batch_size: int = typer.Option(1, help="onnx with --no-dynamic: the fixed batch size."),
           set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP)):
    """Export a trained detector for deployment (MXNet symbol or ONNX)."""
    from gluon_yolo3.deploy.export import export_mxnet, export_onnx
    if format_ not in ("mxnet", "onnx"):
        fail(ValueError(f"--format must be mxnet or onnx, got {format_!r}"))
    try:
        cfg = _recipe(recipe, set_)
        if format_ == "mxnet":
            summary = export_mxnet(cfg, weights, out)
        else:
            summary = export_onnx(cfg, weights, out, batch_size=batch_size, dynamic=dynamic)
    except KNOWN_ERRORS as err:
        fail(err)
    _echo(summary)
    target = summary.get("onnx") or out
    flag = "--onnx" if format_ == "onnx" else "--exported"
    typer.echo(f"next: gluon-yolo3 predict {recipe} {flag} {target} IMAGE...")


@app.command("quantize")
def quantize(recipe: Path = typer.Argument(..., help="Recipe YAML file."),
             weights: Path = typer.Option(..., help=WEIGHTS_HELP),
             calib: int = typer.Option(32, help="Number of training images to calibrate on."),
             out: Path = typer.Option(..., help="Folder for the int8 model and deploy.json (mxnet: trunk-symbol.json, "
                                                "trunk-0000.params; onnxruntime: model.onnx)."),
             runtime: str = typer.Option("mxnet", help="mxnet (oneDNN int8 graph; the fastest where the CPU has AMX) "
                                                       "or onnxruntime (QDQ ONNX file, fixed input shape; the "
                                                       "faster on CPUs without AMX)."),
             batch_size: int = typer.Option(1, help="onnxruntime: the model's fixed batch size (larger batches "
                                                    "run in chunks)."),
             calib_mode: str = typer.Option("naive", help="naive (min/max per layer) or entropy (KL thresholds)."),
             quantize_head: bool = typer.Option(False, help="Also quantize the head's output convolutions "
                                                            "(faster, less accurate)."),
             set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP)):
    """Quantize to int8 (MXNet oneDNN or ONNX Runtime), calibrated on training images; `eval --deployed`
    compares mAPs."""
    from gluon_yolo3.deploy.onnx_int8 import quantize_onnx
    from gluon_yolo3.deploy.quantize import quantize_detector
    if runtime not in ("mxnet", "onnxruntime"):
        fail(ValueError(f"--runtime must be mxnet or onnxruntime, got {runtime!r}"))
    try:
        cfg = _recipe(recipe, set_)
        if runtime == "mxnet":
            summary = quantize_detector(cfg, weights, out, calib=calib, calib_mode=calib_mode,
                                        quantize_head=quantize_head)
        else:
            summary = quantize_onnx(cfg, weights, out, calib=calib, calib_mode=calib_mode, batch_size=batch_size,
                                    quantize_head=quantize_head)
    except KNOWN_ERRORS as err:
        fail(err)
    _echo(summary)
    typer.echo(f"next: gluon-yolo3 eval {recipe} --weights {weights} --deployed {summary.get('onnx', out)}")


@app.command("pack")
def pack(recipe: Path = typer.Argument(..., help="Recipe YAML file (a run folder's recipe.yaml reproduces the run)."),
         weights: Path = typer.Option(..., help=WEIGHTS_HELP),
         out: Path = typer.Option(..., help="Zoo folder for model.params, recipe.yaml and SHA256SUMS."),
         dtype: str = typer.Option("float16", help="Storage type of the weights: float16 (half the bytes) or "
                                                   "float32."),
         set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP)):
    """Pack weights for a model zoo: float16 storage, the recipe, and sha256 sums checked on load."""
    from gluon_yolo3.deploy.zoo import pack as run
    try:
        summary = run(_recipe(recipe, set_), weights, out, dtype=dtype)
    except KNOWN_ERRORS as err:
        fail(err)
    _echo(summary)
    typer.echo(f"next: gluon-yolo3 eval {out / 'recipe.yaml'} --weights {out}")
