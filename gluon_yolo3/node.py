"""The per-node entry: what every process of a distributed job runs (started by distributed/launcher.py).

    python -m gluon_yolo3.node --node ROLE:INDEX [-- COMMAND]

It joins the launcher's heartbeat (distributed/heartbeat.py), then is the scheduler or a server (imports
mxnet with `DMLC_ROLE` set, which runs that role to the end of the job) or a worker (runs COMMAND: a
gluon-yolo3 CLI command in this process, or a `.py` script). A failure ends the process through
`stop_now`, which tells the launcher; a good end says `bye`.

Not a CLI verb (cli.py does not import it). It imports nothing that imports mxnet at the top: in a scheduler
or server process, `import mxnet` with `DMLC_ROLE` set BECOMES that role and returns only when the job ends, so
the heartbeat must be running first.
"""
from __future__ import annotations

import gc
import runpy
import sys
import traceback
from typing import List, Optional, Sequence

from gluon_yolo3.distributed import DistributedError
from gluon_yolo3.distributed.heartbeat import start_heartbeat, stop_now

ROLES = ("scheduler", "server", "worker")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`--node ROLE:INDEX [-- COMMAND]`: join the heartbeat, then be the scheduler, a server or a worker."""
    argv = list(sys.argv[1:] if argv is None else argv)
    rest: List[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, rest = argv[:cut], argv[cut + 1:]
    if len(argv) != 2 or argv[0] != "--node" or ":" not in argv[1]:
        sys.stderr.write("usage: python -m gluon_yolo3.node --node ROLE:INDEX [-- COMMAND]\n")
        return 2
    role, _, index = argv[1].partition(":")
    if role not in ROLES or not index.isdigit():
        sys.stderr.write(f"error: bad node {argv[1]!r}: ROLE is one of {', '.join(ROLES)}, INDEX a number\n")
        return 2
    try:
        beat = start_heartbeat(role, int(index))
    except DistributedError as err:
        sys.stderr.write(f"error: [{role} {index}] {err}\n")
        return 2
    if role != "worker":
        code = serve_role()
    else:
        code = run_worker(rest)
    if code:
        stop_now(f"{role} {index} ended with exit code {code} (its error is printed above)", code)
    if beat is not None:
        beat.bye()
    return 0


def serve_role() -> int:
    """Scheduler or server: importing mxnet with DMLC_ROLE set runs that role to the end of the job."""
    try:
        import mxnet  # noqa: F401
    except SystemExit as end:
        return end.code if isinstance(end.code, int) else (0 if end.code is None else 1)
    return 0


def run_worker(command: List[str]) -> int:
    """Run the worker's COMMAND in this process (so that the heartbeat beats beside it); its exit code."""
    if not command:
        sys.stderr.write("error: a worker needs a command after --\n")
        return 2
    try:
        if command[0].endswith(".py"):
            sys.argv = list(command)
            runpy.run_path(command[0], run_name="__main__")
            code = 0
        else:
            # imported here, not at the top: the CLI imports mxnet, which in the scheduler and server processes
            # would start their role before they join the heartbeat (see the module docstring)
            from gluon_yolo3.cli import app
            app(command, prog_name="gluon-yolo3")     # standalone: ends with SystemExit(code)
            code = 0
    except SystemExit as end:
        code = end.code if isinstance(end.code, int) else (0 if end.code is None else 1)
    except KeyboardInterrupt:
        code = 130
    except BaseException:   # noqa: BLE001 - reported, then the process ends with a code
        traceback.print_exc()
        code = 1
    if code == 0:
        gc.collect()        # release the kvstore here: its final barrier runs while the heartbeat still beats
    return code


if __name__ == "__main__":
    sys.exit(main())
