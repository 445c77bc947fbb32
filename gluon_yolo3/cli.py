"""`gluon-yolo3`: the command line, assembled from the verbs in `gluon_yolo3/commands/` (one module per area;
each verb a function with the shared options and the one error handler of `commands/common.py`)."""
from __future__ import annotations

import sys

import typer

from .commands import benchmark, components, data, deploy, evaluate, interop, launch, predict, train

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="YOLOv3 for MXNet/Gluon from YAML recipes: train, eval, predict; data checks and anchors; "
                       "Darknet, GluonCV, MXNet, ONNX and int8 in and out; distributed launch.")

app.command("train")(train.train)
app.command("eval")(evaluate.evaluate)
app.command("predict")(predict.predict)
app.command("components")(components.components)
app.add_typer(data.data_app, name="data")
app.command("anchors")(data.anchors)
app.command("export")(deploy.export)
app.command("quantize")(deploy.quantize)
app.command("pack")(deploy.pack)
app.command("import-darknet")(interop.import_darknet)
app.command("export-darknet")(interop.export_darknet)
app.command("import-gluoncv")(interop.import_gluoncv)
app.command("benchmark")(benchmark.benchmark)
app.command("launch", context_settings=launch.CONTEXT)(launch.launch_)


def main():
    app()


if __name__ == "__main__":
    sys.exit(main())
