"""What the benchmark scripts share: the paths, the set-up before MXNet loads, GluonCV's networks, small helpers.

Every script runs as `python benchmarks/<script>.py`, so Python puts this folder on `sys.path` itself and
`import common` (or another script, `import train_step`) needs no path trick; `gluon_yolo3` is installed in
the environment (editable), so it needs none either.

Importing this module imports `gluon_yolo3` first: it sets MXNet's OpenMP thread count and spinning
(gluon_yolo3/threads.py) and asks for the AMX tiles (gluon_yolo3/amx.py), all of which must happen before
MXNet loads. A script therefore imports `common` before `mxnet`; a script with MXNet variables of its own
(profile_step.py) sets them before it imports `common`.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Optional

import gluon_yolo3  # noqa: F401  (before MXNet: its thread count, see gluon_yolo3/threads.py)

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
BCCD = REPO.parent / "shared/datasets/BCCD"      # the default --root: BCCD beside the checkout
WORKERS = min(2, os.cpu_count() or 1)            # the default --workers: DataLoader worker processes


def omp_threads(default: str = "default") -> str:
    """The OpenMP thread count MXNet runs with (MXNET_OMP_MAX_THREADS), or `default` where it is unset."""
    return os.environ.get("MXNET_OMP_MAX_THREADS", default)


def gluoncv_model(name: str, **kwargs):
    """GluonCV's model-zoo network `name` (`get_model(name, **kwargs)`), initialised with random weights
    (nothing downloaded), its warnings silenced."""
    from gluoncv.model_zoo import get_model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = get_model(name, **kwargs)
        net.initialize()
    return net


def mx_call(net):
    """-> call(x): `net(x)` with every output copied to numpy (the wait for the result included)."""
    def call(x):
        return [o.asnumpy() for o in net(x)]
    return call


def write_json(path: Optional[Path], figures) -> None:
    """Write `figures` to `path` as indented JSON (the scripts' `--json`); nothing where `path` is None."""
    if path:
        path.write_text(json.dumps(figures, indent=1))
