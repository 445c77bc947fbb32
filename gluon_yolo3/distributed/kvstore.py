"""The kvstore side of a distributed job: kvstore choice, joining the job, and the guard against a hanging wait.

A `dist_sync` job (started by `gluon-yolo3 launch`, see launcher.py) runs MXNet's parameter server: one
scheduler, M servers and N workers, each a process told its role by `DMLC_*` environment variables.
MXNet's parameter server waits forever when a process of the job dies; two guards turn that into a
clear error within a bounded time: the heartbeat (heartbeat.py) and, here, the watchdog: a worker whose
step waits longer than `train.dist_timeout` seconds for the others stops with an error (it also catches
a wedged, not dead, process, and works without the launcher).

Only workers import this module (the trainer); the scheduler and server processes run
`gluon_yolo3/node.py`, which starts their heartbeat before `import mxnet` takes them over.
"""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from typing import Optional

import mxnet as mx
import numpy as np

from . import DistributedError
from .heartbeat import EXIT_TIMEOUT, stop_now

SYNC_KVSTORES = ("device", "local", "nccl", "dist_sync", "dist_device_sync")


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
        self.kv, self.key = kv, int(key)
        self.buffer = mx.nd.zeros((int(size),))
        kv.init(self.key, self.buffer)

    def __call__(self, values):
        self.buffer[:] = np.asarray(values, dtype=np.float32)
        self.kv.pushpull(self.key, self.buffer, out=self.buffer)
        return self.buffer.asnumpy().astype(np.float64)


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
