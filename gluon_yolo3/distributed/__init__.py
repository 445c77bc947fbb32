"""Distributed training on MXNet's parameter server (a `dist_sync` job: one scheduler, M servers, N workers).

    heartbeat.py   the launcher <-> process heartbeat (client and server), `stop_now` and the exit codes
    kvstore.py     kvstore choice and helpers for the trainer, and the watchdog against a hanging wait
    launcher.py    `gluon-yolo3 launch`: hosts file, start the job's processes, supervise them, stop them

Every process of a job runs `python -m gluon_yolo3.node` (above the CLI: a worker runs a CLI verb).
"""


class DistributedError(ValueError):
    """A distributed job that cannot run as asked (kvstore type, missing DMLC_* variables, no launcher)."""
