"""`gluon-yolo3`: the command line. Thin: parse options, call `gluon_yolo3.api`, print results."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="YOLOv3 for MXNet/Gluon from YAML recipes: train, eval, predict; data checks and anchors; "
                       "Darknet, GluonCV, MXNet, ONNX and int8 in and out; distributed launch.")

SET_HELP = "Override a recipe value, e.g. --set train.lr=0.01 (value parsed as YAML). Repeatable."
DEVICES_HELP = "Devices, comma-separated: cpu:0,cpu:1 or gpu:0,gpu:1 (default: the recipe's train.devices)."
FUSE_HELP = ("oneDNN's fused conv + BatchNorm + LeakyReLU graph: the same detections, faster (default: on for "
             "a single CPU device).")


def _load(recipe: Path, overrides: Optional[List[str]]):
    from . import api
    return api.load(recipe, overrides or [])


def _fail(err: Exception):
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


# bad input and failed writes: a message naming the file or key, exit code 2 (WriteError: "cannot write PATH: why")
from .files import WriteError, atomic_write_text, make_folder  # noqa: E402

KNOWN_ERRORS = (ValueError, KeyError, FileNotFoundError, ImportError, RuntimeError, WriteError)


@app.command()
def train(recipe: Path = typer.Argument(..., help="Recipe YAML file."),
          set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
          devices: Optional[str] = typer.Option(None, help=DEVICES_HELP),
          kvstore: Optional[str] = typer.Option(None, help="kvstore: device, local, dist_sync, ... "
                                                           "(default: the recipe's train.kvstore)."),
          workdir: Optional[Path] = typer.Option(None, help="Run folder (default: runs/<recipe name>, "
                                                            "numbered when it already holds a run)."),
          resume: bool = typer.Option(False, help="Continue the run in --workdir from its last checkpoint."),
          progress: bool = typer.Option(True, help="Show progress bars.")):
    """Train a detector; the run folder gets the resolved recipe, metrics, checkpoints and plots."""
    from . import api
    try:
        cfg = _load(recipe, set_)
        summary = api.train(cfg, workdir=str(workdir) if workdir else None, devices=devices,
                            kvstore=kvstore, resume=resume, progress=progress, log=typer.echo)
    except KNOWN_ERRORS as err:
        _fail(err)
    typer.echo(json.dumps({k: v for k, v in summary.items() if k != "final"}, indent=1, default=str))


@app.command("eval")
def eval_(recipe: Path = typer.Argument(..., help="Recipe YAML file."),
          weights: Path = typer.Option(..., help="A .params file or a run folder (its best checkpoint)."),
          set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
          metric: Optional[str] = typer.Option(None, help="Metric (default: the recipe's eval.metric): "
                                                          "voc07, voc, coco."),
          split: str = typer.Option("val", help="Which dataset of the recipe's data section: val or train."),
          devices: Optional[str] = typer.Option(None, help=DEVICES_HELP),
          json_out: Optional[Path] = typer.Option(None, "--json", help="Write the metric result as JSON here."),
          report: Optional[Path] = typer.Option(
              None, help="Folder for the report: PR curves, confusion matrix, AP by size, detections in COCO "
                         "format (default: eval/ in the run folder, or eval_<weights stem>/ next to a "
                         ".params file; a split other than val adds _<split>)."),
          progress: bool = typer.Option(True, help="Show progress bars."),
          deployed: Optional[Path] = typer.Option(None, help="Also evaluate this int8 folder (`quantize`), export "
                                                             "folder or .onnx file and print its mAP beside "
                                                             "--weights'."),
          fuse: Optional[bool] = typer.Option(None, "--fuse/--no-fuse", help=FUSE_HELP)):
    """Evaluate weights on the recipe's validation data; print a per-class AP table and write a report."""
    from . import api
    from .evaluation.reports import default_report_folder, jsonable, write_report
    from .evaluation.runner import format_table
    try:
        cfg = _load(recipe, set_)
        result, detections = api.evaluate(cfg, weights, devices=devices, metric=metric, split=split,
                                          progress=progress, fuse=fuse)
    except KNOWN_ERRORS as err:
        _fail(err)
    typer.echo(format_table(result))
    if json_out:
        try:
            atomic_write_text(json_out, json.dumps(jsonable(result), indent=1))
        except WriteError as err:
            _fail(err)
        typer.echo(f"wrote {json_out}")
    folder = report or default_report_folder(weights, split)
    try:
        write_report(detections, list(result["per_class"]), folder, result,
                     iou_thresh=cfg["eval"]["iou_thresh"], score_thresh=cfg["predict"]["score_thresh"])
    except KNOWN_ERRORS + (OSError,) as err:
        _fail(err)
    typer.echo(f"report: {folder}/")
    if deployed is not None:
        from .evaluation.runner import evaluate_deployed, format_comparison
        try:
            other, _ = evaluate_deployed(cfg, deployed, devices=devices, metric=metric, split=split,
                                         progress=progress)
        except KNOWN_ERRORS as err:
            _fail(err)
        typer.echo(format_table(other))
        typer.echo(format_comparison(result, other))


@app.command()
def predict(recipe: Path = typer.Argument(..., help="Recipe YAML file."),
            images: List[Path] = typer.Argument(..., help="Image files."),
            weights: Optional[Path] = typer.Option(None, help="A .params file or a run folder (its best "
                                                             "checkpoint)."),
            exported: Optional[Path] = typer.Option(None, help="Instead of --weights: a folder written by "
                                                               "`export --format mxnet` (or `quantize`)."),
            onnx: Optional[Path] = typer.Option(None, help="Instead of --weights: an ONNX file written by "
                                                           "`export --format onnx` (onnxruntime + numpy NMS)."),
            out: Path = typer.Option(Path("predictions"), help="Folder for drawn images and detections.json."),
            set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
            score_thresh: Optional[float] = typer.Option(None, help="Keep detections scoring at least this "
                                                                    "(default: the recipe's predict.score_thresh)."),
            devices: Optional[str] = typer.Option(None, help=DEVICES_HELP),
            fuse: Optional[bool] = typer.Option(None, "--fuse/--no-fuse", help=FUSE_HELP)):
    """Detect objects in images; write them drawn and as JSON into --out."""
    from . import api
    from .devices import parse_devices
    try:
        if sum(x is not None for x in (weights, exported, onnx)) != 1:
            raise ValueError("give exactly one of --weights, --exported, --onnx")
        cfg = _load(recipe, set_)
        contexts = parse_devices(devices or "cpu:0")[:1]
        if weights is not None:
            predictor = api.Predictor(cfg, weights, contexts=contexts, score_thresh=score_thresh, fuse=fuse)
        else:
            predictor = api.deployed_predictor(exported or onnx, cfg, score_thresh=score_thresh, ctx=contexts[0])
        make_folder(out)
    except KNOWN_ERRORS as err:
        _fail(err)
    records, failed, taken = [], [], set()
    for path in images:
        try:
            image = api.read_image(path)
        except (FileNotFoundError, ValueError) as err:
            typer.secho(f"warning: {err}; skipped", fg=typer.colors.YELLOW, err=True)
            failed.append(str(path))
            continue
        det = predictor.predict_one(image)
        drawing = unique_name(out, path, taken)
        try:
            predictor_draw(predictor, image, det, drawing)
        except (OSError, ValueError) as err:
            _fail(WriteError(f"cannot write {drawing}: {err}"))
        records.append({"image": str(path), "drawing": drawing.name, "detections": [
            {"class": n, "class_id": int(i), "score": round(float(s), 5),
             "box": [round(float(v), 2) for v in b]}
            for n, i, s, b in zip(det["names"], det["ids"], det["scores"], det["boxes"])]})
        typer.echo(f"{path}: {len(det['ids'])} detections")
    try:
        atomic_write_text(out / "detections.json", json.dumps(records, indent=1))
    except WriteError as err:
        _fail(err)
    typer.echo(f"wrote {out}/")
    if failed:
        typer.secho(f"error: {len(failed)} of {len(images)} image(s) could not be read: {', '.join(failed)}",
                    fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2)


def unique_name(folder: Path, image: Path, taken: set) -> Path:
    """`folder/<stem>.jpg` for a drawing of `image`, numbered (`<stem>_2.jpg`, ...) when an earlier input of
    this call had the same stem."""
    stem, n = image.stem, 2
    name = f"{stem}.jpg"
    while name in taken:
        name, n = f"{stem}_{n}.jpg", n + 1
    taken.add(name)
    return folder / name


def predictor_draw(predictor, image, det, path: Path):
    from .evaluation.plots import draw_detections
    draw_detections(image, det["boxes"], det["ids"], det["scores"], predictor.classes, path=str(path))


@app.command()
def components(plugin: Optional[List[str]] = typer.Option(None, help="Also load this plugin (file or module).")):
    """List every registry and its entries (plugins included) with a one-line description."""
    from .plugins import load_plugins
    from .registry import ALL, import_all_builtins
    try:
        import_all_builtins()
        load_plugins(plugin or [])
    except KNOWN_ERRORS as err:
        _fail(err)
    for name, registry in ALL.items():
        typer.echo(f"{name}:")
        for entry, doc in registry.describe().items():
            typer.echo(f"  {entry:<20} {doc}")


def _register_commands():
    """Import every module of `gluon_yolo3.commands`: each adds its verbs to `app`."""
    import importlib
    import pkgutil

    from . import commands
    for info in pkgutil.iter_modules(commands.__path__, prefix=commands.__name__ + "."):
        importlib.import_module(info.name)


fail = _fail
_register_commands()


def main():
    app()


if __name__ == "__main__":
    sys.exit(main())
