"""Verbs that bring other frameworks' models in and take ours out: import-darknet, export-darknet,
import-gluoncv."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..interop.darknet.jobs import export_darknet as darknet_export
from ..interop.darknet.jobs import import_darknet as darknet_import
from ..interop.darknet.jobs import read_names
from ..interop.gluoncv import import_gluoncv as gluoncv_import
from .common import RecipeArg, SetOption, WeightsOption, cli_errors, echo_json, load_recipe


@cli_errors
def import_darknet(cfg: Path = typer.Argument(..., help="Darknet .cfg file (yolov3, yolov3-tiny or yolov3-spp)."),
                   weights: Path = typer.Argument(..., help="Darknet .weights file (either header version)."),
                   out: Path = typer.Option(..., help="Folder for recipe.yaml and checkpoints/best.params "
                                                      "(usable as --weights afterwards)."),
                   names: Optional[Path] = typer.Option(None, help="Class names, one per line (Darknet's .names); "
                                                                   "default: COCO's for 80 classes, else class0..")):
    """Import Darknet weights: writes a recipe and a checkpoint of the same network."""
    summary = darknet_import(cfg, weights, out, read_names(names) if names else None)
    echo_json(summary)
    typer.echo(f"next: gluon-yolo3 predict {summary['recipe']} --weights {out} IMAGE...")


@cli_errors
def export_darknet(recipe: RecipeArg, weights: WeightsOption,
                   out: Path = typer.Option(..., help="Folder for <name>.cfg, <name>.weights and <name>.names."),
                   set_: SetOption = None):
    """Export to Darknet (.cfg + .weights + .names), for Darknet or cv2.dnn.readNetFromDarknet."""
    echo_json(darknet_export(load_recipe(recipe, set_), weights, out))


@cli_errors
def import_gluoncv(
        params: Path = typer.Argument(..., help="GluonCV YOLOv3 weights (.params written by save_parameters: "
                                                "a model-zoo file on disk or your own)."),
        arch: str = typer.Option(..., help="GluonCV model name: yolo3_darknet53_voc, yolo3_mobilenet1.0_voc, "
                                           "yolo3_mobilenet0.25_voc, or the _coco / _custom variants."),
        out: Path = typer.Option(..., help="Output folder: gets recipe.yaml and checkpoints/best.params "
                                           "(use it as --weights)."),
        classes: Optional[str] = typer.Option(None, help="Class names, comma-separated or a text file with one "
                                                         "per line (default: GluonCV's VOC / COCO names; "
                                                         "required for _custom models)."),
        data_root: str = typer.Option("VOCdevkit/VOC2007", help="VOC folder written into the recipe's "
                                                                "data.train / data.val."),
        overwrite: bool = typer.Option(False, help="Replace recipe.yaml and checkpoints/best.params in --out.")):
    """Convert GluonCV YOLOv3 weights into our checkpoint plus a recipe that reproduces GluonCV's model."""
    paths = gluoncv_import(params, arch, out, classes=class_list(classes), data_root=data_root, overwrite=overwrite)
    typer.echo(f"wrote {paths['recipe']} and {paths['weights']}")
    typer.echo(f"try: gluon-yolo3 predict {paths['recipe']} --weights {out} IMAGE.jpg")


def class_list(value: Optional[str]):
    """None, the lines of a text file, or comma-separated names."""
    if value is None:
        return None
    path = Path(value)
    if path.is_file():
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    else:
        names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise ValueError(f"--classes: no class names in {value!r}")
    return names
