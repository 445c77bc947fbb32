"""`gluon-yolo3 import-gluoncv`: GluonCV YOLOv3 weights -> our recipe + checkpoint."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gluon_yolo3.cli import KNOWN_ERRORS, app, fail


@app.command("import-gluoncv")
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
    from gluon_yolo3.interop.gluoncv import import_gluoncv as run
    try:
        names = _class_names(classes)
        paths = run(params, arch, out, classes=names, data_root=data_root, overwrite=overwrite)
    except KNOWN_ERRORS as err:
        fail(err)
    typer.echo(f"wrote {paths['recipe']} and {paths['weights']}")
    typer.echo(f"try: gluon-yolo3 predict {paths['recipe']} --weights {out} IMAGE.jpg")


def _class_names(value: Optional[str]):
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
