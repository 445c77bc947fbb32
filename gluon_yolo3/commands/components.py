"""`gluon-yolo3 components`: every registry and its entries, plugins included."""
from __future__ import annotations

from typing import List, Optional

import typer

from ..plugins import load_plugins
from ..registry import ALL, import_all_builtins
from .common import cli_errors


@cli_errors
def components(plugin: Optional[List[str]] = typer.Option(None, help="Also load this plugin (file or module).")):
    """List every registry and its entries (plugins included) with a one-line description."""
    import_all_builtins()
    load_plugins(plugin or [])
    for name, registry in ALL.items():
        typer.echo(f"{name}:")
        for entry, doc in registry.describe().items():
            typer.echo(f"  {entry:<20} {doc}")
