"""`gluon-yolo3 launch`: a distributed training job on MXNet's parameter server (distributed/launcher.py)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..distributed.launcher import launch, parse_env
from .common import cli_errors

# `launch --workers 2 -- train RECIPE --set ...`: everything after -- is the workers' command
CONTEXT = {"ignore_unknown_options": True, "allow_interspersed_args": False}


@cli_errors
def launch_(
        command: List[str] = typer.Argument(..., help="What every worker runs, after --: `train RECIPE "
                                                      "--set ...` (any train options; gets --kvstore unless "
                                                      "given), or a Python script `path.py ARGS`."),
        workers: int = typer.Option(..., min=1, help="Number of worker processes (each trains on its own "
                                                     "shard with train.batch_size images per step)."),
        servers: int = typer.Option(1, min=1, help="Number of parameter-server processes."),
        hosts: Optional[Path] = typer.Option(None, help="Hosts file, one `host`, `user@host` or "
                                                        "`host:ssh_port` per line: servers and workers go "
                                                        "round-robin over it through ssh (the scheduler "
                                                        "runs here). Without it, every process runs on "
                                                        "127.0.0.1."),
        kvstore: str = typer.Option("dist_sync", help="dist_sync, or dist_device_sync (sums on GPUs)."),
        root_uri: Optional[str] = typer.Option(None, help="This machine's address as the other hosts reach "
                                                          "it (scheduler and heartbeat; default 127.0.0.1 "
                                                          "without --hosts, else this host's name resolved)."),
        port: Optional[int] = typer.Option(None, help="The scheduler's port (default: a free one)."),
        python: Optional[str] = typer.Option(None, help="Python interpreter on every host (default: this one, "
                                                        "at the same path)."),
        env: Optional[List[str]] = typer.Option(None, "--env", help="KEY=VALUE set for every process of the "
                                                                    "job, e.g. OMP_NUM_THREADS=4. Repeatable."),
        heartbeat_timeout: float = typer.Option(30.0, help="Seconds without a heartbeat after which a process "
                                                           "counts as hung and the job stops."),
        grace: float = typer.Option(10.0, help="Seconds the other processes get to stop on their own after a "
                                               "failure (or the servers after the workers finished) before "
                                               "they are killed."),
        timeout: float = typer.Option(0.0, help="Stop the job after this many seconds (0: no limit).")):
    """Run a distributed job: MXNet's scheduler, servers and workers, locally or over ssh.

    Example: gluon-yolo3 launch --workers 2 --servers 1 -- train recipes/demo_tiny.yaml --workdir runs/dist

    Each worker reads its own shard; rank 0 writes the run folder.

    When a process fails or dies, the others stop with an error naming it; the launcher exits non-zero.
    """
    code = launch(command, workers=workers, servers=servers, hosts=hosts, kvstore=kvstore, python=python,
                  root_uri=root_uri, port=port, env=parse_env(env or []),
                  heartbeat_timeout=heartbeat_timeout, grace=grace, timeout=timeout, log=typer.echo)
    if code:
        typer.secho(f"error: the distributed job failed (exit code {code})", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=code)
