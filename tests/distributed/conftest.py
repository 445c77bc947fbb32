"""Fixtures of the distributed-job tests: the command that runs the CLI in a child process, is a process still
running, which processes a launcher started. Every job runs in its own process group with a timeout and is killed
with its group (`kill_group`) in `finally`; tests check that no process of the job is left."""
import os
import re
import sys

import pytest

CLI = "from gluon_yolo3.cli import main; main()"      # the console script's entry


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:    # a zombie child of ours is not running
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _started_pids(output: str):
    return [int(p) for p in re.findall(r"launch: started \w+ \d+ \([^,]+, pid (\d+)\)", output)]


@pytest.fixture(scope="session")
def cli_argv():
    """[python, "-c", ...]: `gluon-yolo3` in a child process (the console script's entry), to extend with a verb."""
    return [sys.executable, "-c", CLI]


@pytest.fixture(scope="session")
def alive():
    """alive(pid) -> is the process running (a zombie is not)."""
    return _alive


@pytest.fixture(scope="session")
def started_pids():
    """started_pids(launcher output) -> the pids of the processes the launcher says it started."""
    return _started_pids
