"""Shared by the command-line tests: run a verb through typer's CliRunner, spell `--set` overrides, read the
mAP comparison `eval --deployed` prints."""
from typing import NamedTuple

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


class Comparison(NamedTuple):
    fp32: float
    label: str          # the deployed model's kind: int8, mxnet, onnx, onnx-int8
    other: float
    delta: float
    line: str


def compared_maps(output: str) -> Comparison:
    """The line `eval --weights W --deployed D` prints, `mAP (voc07): fp32 A   LABEL B   delta C`."""
    line = [ln for ln in output.splitlines() if ln.startswith("mAP (voc07): fp32")][0]
    words = line.split()
    return Comparison(float(words[3]), words[4], float(words[5]), float(words[7]), line)
