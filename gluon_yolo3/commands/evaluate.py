"""`gluon-yolo3 eval RECIPE --weights W`: mAP table, JSON and report of weights (and of a deployed model)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .. import api
from ..evaluation.reports import default_report_folder, jsonable, write_report
from ..evaluation.runner import evaluate_deployed
from ..engine.run_folder import with_run_splits
from ..evaluation.tables import format_comparison, format_table
from ..files import atomic_write_text, cannot_write
from ..inference.weights import evaluation_weights
from ..models.precision import inference_dtype
from .common import (DevicesOption, FuseOption, PrecisionOption, ProgressOption, RecipeArg, SetOption, WeightsOption,
                     cli_errors, load_recipe)


@cli_errors
def evaluate(recipe: RecipeArg, weights: WeightsOption, set_: SetOption = None,
             metric: Optional[str] = typer.Option(None, help="Metric (default: the recipe's eval.metric): "
                                                             "voc07, voc, coco."),
             split: str = typer.Option("val", help="Which dataset of the recipe's data section: val or train."),
             devices: DevicesOption = None,
             json_out: Optional[Path] = typer.Option(None, "--json", help="Write the metric result as JSON here."),
             report: Optional[Path] = typer.Option(
                 None, help="Folder for the report: PR curves, confusion matrix, AP by size, errors.json (false "
                            "positives and missed boxes, with their images), detections in COCO format "
                            "(default: eval/ in the run folder, or eval_<weights stem>/ next to a .params file; "
                            "a split other than val adds _<split>)."),
             progress: ProgressOption = True,
             deployed: Optional[Path] = typer.Option(None, help="Also evaluate this int8 folder (`quantize`), "
                                                                "export folder (MXNet, OpenVINO) or .onnx file and "
                                                                "print its mAP beside --weights'."),
             fuse: FuseOption = None, precision: PrecisionOption = None):
    """Evaluate weights on the recipe's validation data; print a per-class AP table and write a report. With
    --precision bfloat16, also the float32 mAP and the difference. A run folder given as --weights is scored with
    its last checkpoint where its best.params was picked on the data being scored (the line `weights:` says which
    checkpoint was taken and why)."""
    cfg = with_run_splits(load_recipe(recipe, set_), weights)    # a dataset folder: the split the run recorded
    chosen, why = evaluation_weights(weights, cfg, split)
    typer.echo(why)
    result, detections = api.evaluate(cfg, chosen, devices=devices, metric=metric, split=split,
                                      progress=progress, fuse=fuse, precision=precision)
    echo_data_notes(split, result)
    typer.echo(format_table(result))
    if inference_dtype(precision) is not None:      # bfloat16: the float32 figure beside it
        reference, _ = api.evaluate(cfg, chosen, devices=devices, metric=metric, split=split, progress=progress,
                                    fuse=fuse)
        typer.echo(format_comparison(reference, {**result, "model": precision}))
    if json_out:
        atomic_write_text(json_out, json.dumps(jsonable(result), indent=1))
        typer.echo(f"wrote {json_out}")
    folder = report or default_report_folder(weights, split)
    try:
        paths = write_report(detections, list(result["per_class"]), folder, result,
                             iou_thresh=cfg["eval"]["iou_thresh"], score_thresh=cfg["predict"]["score_thresh"])
    except OSError as err:
        raise cannot_write(folder, err) from None
    typer.echo(f"report: {folder}/")
    errors = json.loads(paths["errors"].read_text())
    kinds = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in errors["counts"]["false_positives"].items())
    typer.echo(f"errors.json: {sum(errors['counts']['false_positives'].values())} false positives scoring >= "
               f"{errors['score_thresh']:g} ({kinds}), {errors['counts']['missed']} ground-truth boxes missed")
    if deployed is not None:
        other, _ = evaluate_deployed(cfg, deployed, devices=devices, metric=metric, split=split, progress=progress)
        typer.echo(format_table(other))
        typer.echo(format_comparison(result, other))


def echo_data_notes(split: str, result):
    """Where the evaluated split comes from, how many annotations it skipped, and its warnings (on stderr)."""
    if result.get("split_source"):
        typer.echo(f"data.{split}: {result['split_source']}")
    if result.get("problems"):
        typer.echo(f"data.{split}: {result['problems']} annotation problem(s), boxes or images skipped "
                   "(gluon-yolo3 data check lists them)")
    for warning in result.get("warnings") or []:
        typer.secho(f"warning: data.{split}: {warning}", fg=typer.colors.YELLOW, err=True)
