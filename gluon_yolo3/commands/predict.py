"""`gluon-yolo3 predict RECIPE IMAGES...`: detections drawn into a folder and listed in detections.json."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from .. import api
from ..devices import parse_devices
from ..files import atomic_write_text, cannot_write, make_folder
from .common import DevicesOption, FuseOption, PrecisionOption, RecipeArg, SetOption, cli_errors, fail, load_recipe


@cli_errors
def predict(recipe: RecipeArg,
            images: List[Path] = typer.Argument(..., help="Image files."),
            weights: Optional[Path] = typer.Option(None, help="A .params file, a run folder or a zoo folder."),
            exported: Optional[Path] = typer.Option(None, help="Instead of --weights: a folder written by "
                                                               "`export --format mxnet` or `--format openvino` "
                                                               "(or `quantize`)."),
            onnx: Optional[Path] = typer.Option(None, help="Instead of --weights: an ONNX file written by "
                                                           "`export --format onnx` (onnxruntime + numpy NMS)."),
            out: Path = typer.Option(Path("predictions"), help="Folder for drawn images and detections.json."),
            set_: SetOption = None,
            score_thresh: Optional[float] = typer.Option(None, help="Keep detections scoring at least this "
                                                                    "(default: the recipe's predict.score_thresh)."),
            devices: DevicesOption = None, fuse: FuseOption = None, precision: PrecisionOption = None):
    """Detect objects in images; write them drawn and as JSON into --out. An unreadable image is skipped with a
    warning (the others are still written) and the exit code is 2."""
    if sum(x is not None for x in (weights, exported, onnx)) != 1:
        raise ValueError("give exactly one of --weights, --exported, --onnx")
    cfg = load_recipe(recipe, set_)
    contexts = parse_devices(devices or "cpu:0")[:1]
    if weights is not None:
        predictor = api.Predictor(cfg, weights, contexts=contexts, score_thresh=score_thresh, fuse=fuse,
                                  precision=precision)
    else:
        predictor = api.deployed_predictor(exported or onnx, cfg, score_thresh=score_thresh, ctx=contexts[0])
    make_folder(out)
    records, failed, taken = [], [], set()
    for path in images:
        try:
            image = api.read_image(path)
        except FileNotFoundError as err:
            typer.secho(f"warning: {err}; skipped", fg=typer.colors.YELLOW, err=True)
            failed.append(str(path))
            continue
        det = predictor.predict_one(image)
        drawing = unique_name(out, path, taken)
        try:
            predictor.draw(image, drawing, det=det)
        except OSError as err:
            raise cannot_write(drawing, err) from None
        records.append({"image": str(path), "drawing": drawing.name, "detections": [
            {"class": n, "class_id": int(i), "score": round(float(s), 5), "box": [round(float(v), 2) for v in b]}
            for n, i, s, b in zip(det["names"], det["ids"], det["scores"], det["boxes"])]})
        typer.echo(f"{path}: {len(det['ids'])} detections")
    atomic_write_text(out / "detections.json", json.dumps(records, indent=1))
    typer.echo(f"wrote {out}/")
    if failed:
        fail(f"{len(failed)} of {len(images)} image(s) could not be read: {', '.join(failed)}")


def unique_name(folder: Path, image: Path, taken: set) -> Path:
    """`folder/<stem>.jpg` for a drawing of `image`, numbered (`<stem>_2.jpg`, ...) when an earlier input of
    this call had the same stem."""
    stem, n = image.stem, 2
    name = f"{stem}.jpg"
    while name in taken:
        name, n = f"{stem}_{n}.jpg", n + 1
    taken.add(name)
    return folder / name
