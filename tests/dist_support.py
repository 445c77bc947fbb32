"""Helpers the distributed-job tests share: is a process still running, which processes a launcher started."""
import os
import re


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
