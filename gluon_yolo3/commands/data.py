"""`gluon-yolo3 data check RECIPE`, `gluon-yolo3 data show RECIPE` and `gluon-yolo3 anchors RECIPE --k 9`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ..data.build import build_datasets, split_config
from ..data.check import (check_dataset, class_mismatch, format_check, format_class_mismatch, jsonable_report,
                          recipe_anchors, write_box_histograms)
from ..engine.preview import draw_training_targets
from ..files import atomic_write_text, cannot_write
from .common import ProgressOption, RecipeArg, SetOption, cli_errors, load_recipe

data_app = typer.Typer(no_args_is_help=True, help="Inspect a recipe's datasets: data check, data show.")


@data_app.command("check")
@cli_errors
def check(recipe: RecipeArg, set_: SetOption = None,
          split: Optional[List[str]] = typer.Option(None, help="Which dataset of the recipe's data section "
                                                               "(train, val); repeatable. Default: both."),
          out: Optional[Path] = typer.Option(None, help="Folder for box_stats.png and data_check.json "
                                                        "(default: runs/<recipe name>/data_check)."),
          images: bool = typer.Option(True, help="Decode every image to find unreadable ones "
                                                 "(--no-images checks annotations only)."),
          strict: bool = typer.Option(False, help="Exit with code 1 when any problem is found."),
          progress: ProgressOption = True):
    """Count images, boxes per class and empty images; list every bad annotation with its file (truncated
    images too); say which classes only one split has; plot box sizes."""
    splits = tuple(split or ("train", "val"))
    cfg = load_recipe(recipe, set_)
    bad = [s for s in splits if s not in ("train", "val")]
    if bad:
        raise ValueError(f"--split must be train or val, got {', '.join(bad)}")
    reports, found = {}, {}
    for name in splits:
        dataset = build_datasets(cfg, splits=(name,))[name]
        found[name] = getattr(dataset, "found_classes", sorted(dataset.classes))
        reports[name] = check_dataset(dataset, read_images=images, progress=progress)
        typer.echo(format_check(f"data.{name} ({split_config(cfg['data'], name)['type']})", reports[name]))
    summary = {k: jsonable_report(v) for k, v in reports.items()}
    if len(found) > 1:
        summary["class_mismatch"] = class_mismatch(found)
        line = format_class_mismatch(summary["class_mismatch"])
        if line:
            typer.echo(line)
    folder = out or Path("runs") / cfg["name"] / "data_check"
    try:
        png = write_box_histograms(reports, folder / "box_stats.png")
    except OSError as err:
        raise cannot_write(folder / "box_stats.png", err) from None
    report_json = folder / "data_check.json"
    atomic_write_text(report_json, json.dumps(summary, indent=1))
    typer.echo(f"wrote {png} and {report_json}")
    if strict and any(r["problems"] for r in reports.values()):
        raise typer.Exit(code=1)


@data_app.command("show")
@cli_errors
def show(recipe: RecipeArg, set_: SetOption = None,
         count: int = typer.Option(16, help="How many training images."),
         out: Optional[Path] = typer.Option(None, help="The PNG to write "
                                                        "(default: runs/<recipe name>/data_show.png).")):
    """Draw training images after the whole augmentation chain with the boxes the network will be taught, read
    back from the encoded targets, each labelled with class, scale, cell (row, column) and anchor: one PNG."""
    cfg = load_recipe(recipe, set_)
    path = draw_training_targets(cfg, out or Path("runs") / cfg["name"] / "data_show.png", count=count)
    typer.echo(f"wrote {path}")


@cli_errors
def anchors(recipe: RecipeArg,
            k: Optional[int] = typer.Option(None, "--k", help="Number of anchors (default: as many as the "
                                                              "recipe's model.anchors)."),
            seed: int = typer.Option(0, help="Seed of the k-means initialisation."),
            set_: SetOption = None):
    """k-means (1 - IoU distance) on the training boxes at the recipe's input size; prints anchors to paste."""
    cfg = load_recipe(recipe, set_)
    dataset = build_datasets(cfg, splits=("train",))["train"]
    result = recipe_anchors(cfg, dataset, k=k, seed=seed)
    size = cfg["model"]["input_size"]
    typer.echo(f"{len(result['anchors'])} anchors from {result['boxes']} boxes at input size {size} "
               f"({cfg['data']['resize']}), sorted by area (w, h):")
    for w, h in result["anchors"]:
        typer.echo(f"  {w:8.1f} {h:8.1f}")
    typer.echo(f"mean best IoU: {result['mean_iou']:.4f} (these anchors, rounded), "
               f"{result['current_mean_iou']:.4f} (the recipe's current anchors)")
    typer.echo("paste into the recipe:")
    typer.echo(result["yaml"])
