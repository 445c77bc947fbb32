"""`gluon-yolo3 train RECIPE`: train a detector into a run folder."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .. import api
from ..evaluation.tables import format_table
from ..inference.weights import find_weights
from .common import DevicesOption, ProgressOption, RecipeArg, SetOption, cli_errors, load_recipe


@cli_errors
def train(recipe: RecipeArg, set_: SetOption = None, devices: DevicesOption = None,
          kvstore: Optional[str] = typer.Option(None, help="kvstore: device, local, dist_sync, ... "
                                                           "(default: the recipe's train.kvstore)."),
          workdir: Optional[Path] = typer.Option(None, help="Run folder (default: runs/<recipe name>, "
                                                            "numbered when it already holds a run)."),
          resume: bool = typer.Option(False, help="Continue the run in --workdir from its last checkpoint, "
                                                  "following the recipe as given now (more epochs, another lr)."),
          amp: Optional[str] = typer.Option(None, help="Mixed precision (the recipe's train.amp): bfloat16 on CPUs "
                                                       "with AMX or AVX512-BF16, float16 on GPUs."),
          progress: ProgressOption = True):
    """Train a detector; the run folder gets the resolved recipe, metrics, checkpoints and plots. At the end:
    the last validation's table, where the weights are, and what to run next."""
    overrides = (set_ or []) + ([f"train.amp={amp}"] if amp else [])
    summary = api.train(load_recipe(recipe, overrides), workdir=str(workdir) if workdir else None, devices=devices,
                        kvstore=kvstore, resume=resume, progress=progress, log=typer.echo)
    if not summary.get("rank", 0):
        run = Path(summary["run_dir"])
        if summary.get("final"):
            typer.echo("last validation:\n" + format_table(summary["final"]))
        weights = find_weights(run)
        which = "the best validation's" if weights.name == "best.params" else "the last epoch's"
        typer.echo(f"weights: {weights} ({which}; give the run folder as --weights)\nnext:\n"
                   f"  gluon-yolo3 eval {run / 'recipe.yaml'} --weights {run}\n"
                   f"  gluon-yolo3 predict {run / 'recipe.yaml'} --weights {run} IMAGE... --out predictions/")
    # the summary comes last, as JSON, for scripts that read the end of the output
    typer.echo(json.dumps({k: v for k, v in summary.items() if k != "final"}, indent=1, default=str))
