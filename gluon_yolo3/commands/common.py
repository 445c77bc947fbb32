"""What every verb shares: the options most of them take, the one error handler, and small output helpers.

    @cli_errors
    def my_verb(recipe: RecipeArg, set_: SetOption = None, devices: DevicesOption = None): ...

`cli_errors` turns every known bad-input error (a ValueError, a missing file, a failed write, ...) into
`error: <message>` on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated, Any, List, Optional

import typer

from .. import api
from ..files import WriteError

# bad input and failed writes: a message naming the file or key, exit code 2
KNOWN_ERRORS = (ValueError, KeyError, FileNotFoundError, ImportError, RuntimeError, WriteError)

SET_HELP = "Override a recipe value, e.g. --set train.lr=0.01 (value parsed as YAML). Repeatable."
DEVICES_HELP = "Devices, comma-separated: cpu:0,cpu:1 or gpu:0,gpu:1 (default: the recipe's train.devices)."
FUSE_HELP = ("oneDNN's fused conv + BatchNorm + LeakyReLU graph: the same detections, faster (default: on for "
             "a single CPU device).")
WEIGHTS_HELP = "A .params file, a run folder (its best checkpoint, else its last) or a zoo folder."

RecipeArg = Annotated[Path, typer.Argument(help="Recipe YAML file.")]
SetOption = Annotated[Optional[List[str]], typer.Option("--set", help=SET_HELP)]
DevicesOption = Annotated[Optional[str], typer.Option(help=DEVICES_HELP)]
FuseOption = Annotated[Optional[bool], typer.Option("--fuse/--no-fuse", help=FUSE_HELP)]
ProgressOption = Annotated[bool, typer.Option(help="Show progress bars.")]
WeightsOption = Annotated[Path, typer.Option(help=WEIGHTS_HELP)]
PrecisionOption = Annotated[Optional[str], typer.Option(
    help="bfloat16: the convolutions compute in bfloat16 (CPUs with AMX or AVX512-BF16; no calibration); "
         "default float32.")]


def fail(err: BaseException):
    """`error: <message>` in red on stderr, exit code 2."""
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def cli_errors(verb):
    """A verb whose known errors (KNOWN_ERRORS) end it with `fail`: a message, exit code 2, no traceback."""
    @functools.wraps(verb)
    def run(*args, **kwargs):
        try:
            return verb(*args, **kwargs)
        except typer.Exit:          # a verb's own exit code (typer.Exit is a RuntimeError)
            raise
        except KNOWN_ERRORS as err:
            fail(err)
    return run


def load_recipe(recipe: Path, overrides: Optional[List[str]]):
    """The recipe with its `--set` overrides, plugins imported (`api.load`)."""
    return api.load(recipe, overrides or [])


def echo_json(summary: Any):
    typer.echo(json.dumps(summary, indent=1, default=str))
