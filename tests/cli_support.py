"""Shared by the command-line tests: run a verb through typer's CliRunner, spell `--set` overrides."""
from typer.testing import CliRunner

from gluon_yolo3.cli import app


def invoke(*args):
    """Run `gluon-yolo3 ARGS...` in-process; -> typer's Result (exit_code, output)."""
    return CliRunner().invoke(app, [str(a) for a in args])


def sets(items):
    """["a=1", "b=2"] -> ["--set", "a=1", "--set", "b=2"]."""
    out = []
    for item in items:
        out += ["--set", item]
    return out
