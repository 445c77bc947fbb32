"""Distributed training helpers: kvstore choice, rank and shard, and the guards against hangs.

A `dist_sync` job (started by `gluon-yolo3 launch`, see launch.py) runs MXNet's parameter server: one
scheduler, M servers and N workers, each a process told its role by `DMLC_*` environment variables.
MXNet's parameter server waits forever when a process of the job dies; two guards turn that into a
clear error within a bounded time:

- the heartbeat: every process the launcher starts keeps a TCP connection to it
  (`GLUON_YOLO3_HEARTBEAT=host:port`), says `hello`, `beat` every second, `fail <message>` when it fails
  and `bye` when it ends well. When a process dies (its connection closes without `bye`) or falls
  silent, the launcher sends `abort <reason>` to all others, which stop at once with that reason, and
  a process whose launcher disappears stops too.
- the watchdog: a worker whose step waits longer than `train.dist_timeout` seconds for the others
  stops with an error (it also catches a wedged, not dead, process, and works without the launcher).

Stopping uses `os._exit`: a worker blocked inside MXNet's kvstore cannot be interrupted otherwise.
This module does not import mxnet at the top: the launcher's scheduler and server processes start
their heartbeat before `import mxnet` takes them over.
"""
from __future__ import annotations

import os
import socket
import sys
import threading
import time
from contextlib import contextmanager
from typing import Optional

ENV_HEARTBEAT = "GLUON_YOLO3_HEARTBEAT"     # host:port of the launcher's heartbeat server
ENV_NODE = "GLUON_YOLO3_NODE"               # "<role>:<index>" of this process in the launcher's job

SYNC_KVSTORES = ("device", "local", "nccl", "dist_sync", "dist_device_sync")
EXIT_ABORTED = 3      # stopped because another process of the job failed
EXIT_TIMEOUT = 4      # stopped by the watchdog


class DistributedError(ValueError):
    """A distributed job that cannot run as asked (kvstore type, missing DMLC_* variables)."""


def check_kvstore(name: str) -> str:
    """A kvstore name the trainer supports (synchronous ones: training stays exact), or a clear error."""
    name = str(name)
    if name not in SYNC_KVSTORES:
        hint = (" (asynchronous updates are not exact and cannot clip gradients or keep an EMA)"
                if "async" in name else "")
        raise DistributedError(f"train.kvstore '{name}' is not supported{hint}; use one of "
                               f"{', '.join(SYNC_KVSTORES)}")
    return name


def is_distributed(name: str) -> bool:
    return str(name).startswith("dist")


def create_kvstore(name: str):
    """The job's distributed kvstore (blocks until every process of the job has joined)."""
    role = os.environ.get("DMLC_ROLE")
    if role != "worker":
        raise DistributedError(
            f"train.kvstore '{name}' needs a distributed job: start it with `gluon-yolo3 launch --workers N "
            f"--servers M -- train RECIPE ...`, which sets DMLC_ROLE and the other DMLC_* variables "
            f"(DMLC_ROLE is {role!r} here)")
    import mxnet as mx
    return mx.kv.create(name)


def broadcast_initial_weights(trainer):
    """Give every worker rank 0's weights now, before the first forward pass.

    Gluon's Trainer does this lazily inside the first `step`, after the first gradients were already
    computed on each worker's own weights (workers that started differently then end equal but wrong).
    MXNet 1.9.1 has no public call for it; these two are what `Trainer.step` runs first.
    """
    if not trainer._kv_initialized:
        trainer._init_kvstore()
    if trainer._params_to_init:
        trainer._init_params()


def release_kvstore(trainer):
    """Drop Gluon's references to the job's kvstore, so that it ends (final barrier with the other workers,
    servers told to stop) as soon as the caller drops its own, not during interpreter shutdown, where
    MXNet 1.9.1 can abort ("terminate called without an active exception"). The Gluon trainer can still
    save its states afterwards, but not step."""
    trainer._kvstore = None
    trainer._kvstore_params["kvstore"] = None


class WorkerSum:
    """The sum over all workers of a small float vector, through one extra key of the job's kvstore.

    Every worker must call it the same number of times (it is a synchronisation point).
    """

    def __init__(self, kv, key: int, size: int):
        import mxnet as mx
        self.kv, self.key = kv, int(key)
        self.buffer = mx.nd.zeros((int(size),))
        kv.init(self.key, self.buffer)

    def __call__(self, values):
        import numpy as np
        self.buffer[:] = np.asarray(values, dtype=np.float32)
        self.kv.pushpull(self.key, self.buffer, out=self.buffer)
        return self.buffer.asnumpy().astype(np.float64)


def node_name() -> str:
    """`worker 1` for a process of a launcher's job (its launcher index), else `this process`."""
    node = os.environ.get(ENV_NODE)
    return node.replace(":", " ") if node else "this process"


def stop_now(message: str, code: int):
    """Print `error: message`, tell the launcher, and end this process at once (no clean-up: a thread
    of ours may be the only one not blocked inside MXNet)."""
    try:
        sys.stdout.flush()
    except Exception:   # noqa: BLE001 - ending anyway
        pass
    try:
        sys.stderr.write(f"error: [{node_name()}] {message}\n")
        sys.stderr.flush()
    except Exception:   # noqa: BLE001
        pass
    if _HEARTBEAT is not None:
        _HEARTBEAT.fail(message)
    os._exit(code)


class Watchdog:
    """Stops the process when an armed wait lasts longer than `timeout` seconds.

        dog = Watchdog(600)
        with dog.guard("step 12"):
            ... a call that waits for the other workers ...

    `on_expire(message)` defaults to `stop_now(message, EXIT_TIMEOUT)`.
    """

    def __init__(self, timeout: float, on_expire=None, poll: float = 0.2):
        self.timeout = float(timeout)
        self.on_expire = on_expire or (lambda message: stop_now(message, EXIT_TIMEOUT))
        self.poll = float(poll)
        self._deadline: Optional[float] = None
        self._what = ""
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="gluon-yolo3-watchdog", daemon=True)
        self._thread.start()

    @contextmanager
    def guard(self, what: str):
        with self._lock:
            self._deadline, self._what = time.monotonic() + self.timeout, what
        try:
            yield
        finally:
            with self._lock:
                self._deadline = None

    def _run(self):
        while True:
            time.sleep(self.poll)
            with self._lock:
                expired = self._deadline is not None and time.monotonic() > self._deadline
                what = self._what
                if expired:
                    self._deadline = None
            if expired:
                self.on_expire(
                    f"no progress for {self.timeout:g} s during {what}: another worker or a server of the "
                    f"job probably died or hangs, and MXNet's parameter server would wait forever; stopping "
                    f"(raise train.dist_timeout if rank 0's validation takes longer than this)")


class Heartbeat:
    """This process's side of the launcher's heartbeat (see the module docstring)."""

    def __init__(self, address: str, role: str, index: int, interval: float = 1.0):
        host, _, port = address.rpartition(":")
        self.address = address
        self.interval = float(interval)
        self.closing = False
        self._lock = threading.Lock()
        try:
            self.sock = socket.create_connection((host, int(port)), timeout=30)
        except OSError as err:
            raise DistributedError(f"cannot reach the launcher's heartbeat at {address}: {err}") from None
        self.sock.settimeout(None)
        self.send(f"hello {role} {index} {os.getpid()} {socket.gethostname()}")
        threading.Thread(target=self._beat, name="gluon-yolo3-heartbeat", daemon=True).start()
        threading.Thread(target=self._listen, name="gluon-yolo3-heartbeat-listen", daemon=True).start()

    def send(self, line: str) -> bool:
        data = (" ".join(str(line).split()) + "\n").encode("utf-8", "replace")
        try:
            with self._lock:
                self.sock.sendall(data)
            return True
        except OSError:
            return False

    def fail(self, message: str):
        self.closing = True
        self.send(f"fail {message}")

    def bye(self):
        self.closing = True
        self.send("bye")

    def _beat(self):
        while self.send("beat"):
            time.sleep(self.interval)

    def _listen(self):
        buffer = b""
        while True:
            try:
                chunk = self.sock.recv(4096)
            except OSError:
                chunk = b""
            if not chunk:
                if not self.closing:
                    stop_now(f"lost contact with the launcher at {self.address} (it was stopped or died); "
                             "stopping", EXIT_ABORTED)
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                text = line.decode("utf-8", "replace")
                if text.startswith("abort"):
                    stop_now(text[len("abort"):].strip() or "the launcher aborted the job", EXIT_ABORTED)


_HEARTBEAT: Optional[Heartbeat] = None


def start_heartbeat(role: str, index: int) -> Optional[Heartbeat]:
    """Connect to the launcher named by `GLUON_YOLO3_HEARTBEAT` (None when not started by a launcher)."""
    global _HEARTBEAT
    address = os.environ.get(ENV_HEARTBEAT)
    if address and _HEARTBEAT is None:
        _HEARTBEAT = Heartbeat(address, role, index)
    return _HEARTBEAT


def heartbeat() -> Optional[Heartbeat]:
    return _HEARTBEAT
