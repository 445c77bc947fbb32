"""Helpers the distributed-job tests share: paths and environment of a job, is a process still running,
which processes a launcher started."""
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = str(ROOT / "recipes" / "demo_tiny.yaml")
PYTHON = sys.executable
CLI = "from gluon_yolo3.cli import main; main()"      # the console script's entry
JOB_ENV = {"OMP_NUM_THREADS": "1", "MXNET_CPU_WORKER_NTHREADS": "1"}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:    # a zombie child of ours is not running
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def started_pids(output: str):
    return [int(p) for p in re.findall(r"launch: started \w+ \d+ \([^,]+, pid (\d+)\)", output)]
