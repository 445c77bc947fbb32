"""`gluon-yolo3 data check RECIPE` and `gluon-yolo3 anchors RECIPE --k 9`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from gluon_yolo3.cli import KNOWN_ERRORS, SET_HELP, app, fail

data_app = typer.Typer(no_args_is_help=True, help="Inspect a recipe's datasets: data check.")
app.add_typer(data_app, name="data")


@data_app.command("check")
def check(recipe: Path = typer.Argument(..., help="Recipe YAML file."),
          set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
          split: Optional[List[str]] = typer.Option(None, help="Which dataset of the recipe's data section "
                                                               "(train, val); repeatable. Default: both."),
          out: Optional[Path] = typer.Option(None, help="Folder for box_stats.png and data_check.json "
                                                        "(default: runs/<recipe name>/data_check)."),
          images: bool = typer.Option(True, help="Decode every image to find unreadable ones "
                                                 "(--no-images checks annotations only)."),
          strict: bool = typer.Option(False, help="Exit with code 1 when any problem is found."),
          progress: bool = typer.Option(True, help="Show progress bars.")):
    """Count images, boxes per class and empty images; list every bad annotation with its file (truncated
    images too); say which classes only one split has; plot box sizes."""
    from gluon_yolo3 import api
    from gluon_yolo3.data.check import (check_dataset, class_mismatch, format_check, format_class_mismatch,
                                        jsonable_report, write_box_histograms)
    from gluon_yolo3.engine.trainer import build_datasets
    splits = tuple(split or ("train", "val"))
    try:
        cfg = api.load(recipe, set_ or [])
        bad = [s for s in splits if s not in ("train", "val")]
        if bad:
            raise ValueError(f"--split must be train or val, got {', '.join(bad)}")
        reports, found = {}, {}
        for name in splits:
            dataset = build_datasets(cfg, splits=(name,))[name]
            found[name] = getattr(dataset, "found_classes", sorted(dataset.classes))
            reports[name] = check_dataset(dataset, read_images=images, progress=progress)
            typer.echo(format_check(f"data.{name} ({cfg['data'][name]['type']})", reports[name]))
        summary = {k: jsonable_report(v) for k, v in reports.items()}
        if len(found) > 1:
            summary["class_mismatch"] = class_mismatch(found)
            line = format_class_mismatch(summary["class_mismatch"])
            if line:
                typer.echo(line)
        folder = out or Path("runs") / cfg["name"] / "data_check"
        png = write_box_histograms(reports, folder / "box_stats.png")
        report_json = folder / "data_check.json"
        tmp = report_json.with_name(report_json.name + ".tmp")
        tmp.write_text(json.dumps(summary, indent=1))
        tmp.replace(report_json)
    except KNOWN_ERRORS + (OSError,) as err:
        fail(err)
    typer.echo(f"wrote {png} and {report_json}")
    if strict and any(r["problems"] for r in reports.values()):
        raise typer.Exit(code=1)


@app.command("anchors")
def anchors(recipe: Path = typer.Argument(..., help="Recipe YAML file."),
            k: Optional[int] = typer.Option(None, "--k", help="Number of anchors (default: as many as the "
                                                              "recipe's model.anchors)."),
            seed: int = typer.Option(0, help="Seed of the k-means initialisation."),
            set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP)):
    """k-means (1 - IoU distance) on the training boxes at the recipe's input size; prints anchors to paste."""
    from gluon_yolo3 import api
    from gluon_yolo3.data.check import recipe_anchors
    from gluon_yolo3.engine.trainer import build_datasets
    try:
        cfg = api.load(recipe, set_ or [])
        dataset = build_datasets(cfg, splits=("train",))["train"]
        result = recipe_anchors(cfg, dataset, k=k, seed=seed)
    except KNOWN_ERRORS as err:
        fail(err)
    size = cfg["model"]["input_size"]
    typer.echo(f"{len(result['anchors'])} anchors from {result['boxes']} boxes at input size {size} "
               f"({cfg['data']['resize']}), sorted by area (w, h):")
    for w, h in result["anchors"]:
        typer.echo(f"  {w:8.1f} {h:8.1f}")
    typer.echo(f"mean best IoU: {result['mean_iou']:.4f} (these anchors, rounded), "
               f"{result['current_mean_iou']:.4f} (the recipe's current anchors)")
    typer.echo("paste into the recipe:")
    typer.echo(result["yaml"])
