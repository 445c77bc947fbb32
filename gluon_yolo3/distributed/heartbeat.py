"""The heartbeat between the launcher and every process of its job, and how a process stops when the job aborts.

MXNet's parameter server waits forever when a process of the job dies; the heartbeat turns that into a
clear error within a bounded time. Every process the launcher starts (`--node ROLE:INDEX`, see
gluon_yolo3/node.py) finds the launcher's address in `GLUON_YOLO3_HEARTBEAT=host:port` and its own name in
`GLUON_YOLO3_NODE=role:index`, and keeps one TCP connection to it, one line per message:

    process -> launcher   `hello <role> <index> <pid> <host>` once, `beat` every second,
                          `fail <message>` when it fails, `bye` when it ends well
    launcher -> process   `abort <reason>`: stop now, printing the reason

When a process dies (its connection closes without `bye` or `fail`) or falls silent, the launcher sends
`abort` to all others; a process whose launcher disappears (connection closed) stops too. Stopping
(`stop_now`) prints `error: [worker 1] <why>`, tells the launcher, and uses `os._exit`: a worker blocked
inside MXNet's kvstore cannot be interrupted otherwise. Exit codes: `EXIT_ABORTED` (another process of
the job failed), `EXIT_TIMEOUT` (the watchdog in kvstore.py).

Client: `start_heartbeat`, `heartbeat()`, `Heartbeat`. Server (in the launcher): `HeartbeatServer`.
Standard library only: the scheduler and server processes join before `import mxnet` takes them over.
"""
from __future__ import annotations

import os
import queue
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from . import DistributedError

ENV_HEARTBEAT = "GLUON_YOLO3_HEARTBEAT"     # host:port of the launcher's heartbeat server
ENV_NODE = "GLUON_YOLO3_NODE"               # "<role>:<index>" of this process in the launcher's job

EXIT_ABORTED = 3      # stopped because another process of the job failed
EXIT_TIMEOUT = 4      # stopped by the watchdog


# ---- what a process does when the job aborts ---------------------------------------------------------
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


# ---- client: every process of the job --------------------------------------------------------------
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


# ---- server: the launcher --------------------------------------------------------------------------
@dataclass
class _Peer:
    conn: socket.socket
    last_beat: float
    info: str = ""
    done: bool = False


class HeartbeatServer:
    """The launcher's side of the heartbeat: events `("fail"|"lost", (role, index), text)` in `events`."""

    def __init__(self, host: str, timeout: float):
        self.timeout = float(timeout)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(256)
        self.address = f"{host}:{self.sock.getsockname()[1]}"
        self.events: "queue.Queue[Tuple[str, Tuple[str, int], str]]" = queue.Queue()
        self.peers: Dict[Tuple[str, int], _Peer] = {}
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, name="heartbeat-accept", daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="heartbeat-peer", daemon=True).start()

    def _serve(self, conn: socket.socket):
        key, buffer = None, b""
        while True:
            try:
                chunk = conn.recv(4096)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                word, _, rest = line.decode("utf-8", "replace").partition(" ")
                if word == "hello":
                    role, index, pid, host = (rest.split() + ["?"] * 4)[:4]
                    key = (role, int(index) if index.isdigit() else -1)
                    with self.lock:
                        self.peers[key] = _Peer(conn, time.monotonic(), info=f"pid {pid} on {host}")
                elif key is None:
                    continue
                elif word == "beat":
                    self.peers[key].last_beat = time.monotonic()
                elif word == "bye":
                    self.peers[key].done = True
                elif word == "fail":
                    self.peers[key].done = True
                    self.events.put(("fail", key, rest))
        if key is not None and not self.peers[key].done and not self.closed:
            self.peers[key].done = True
            self.events.put(("lost", key, f"its connection closed without a goodbye ({self.peers[key].info}): "
                                          "the process died"))

    def said_hello(self, key) -> bool:
        return key in self.peers

    def silent(self) -> List[Tuple[Tuple[str, int], float]]:
        """Peers still running whose last beat is older than the timeout."""
        now = time.monotonic()
        with self.lock:
            return [(k, now - p.last_beat) for k, p in self.peers.items()
                    if not p.done and now - p.last_beat > self.timeout]

    def abort(self, reason: str):
        line = ("abort " + " ".join(reason.split()) + "\n").encode("utf-8", "replace")
        with self.lock:
            peers = list(self.peers.values())
        for peer in peers:
            try:
                peer.conn.sendall(line)
            except OSError:
                pass

    def close(self):
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            for peer in self.peers.values():
                try:
                    peer.conn.close()
                except OSError:
                    pass
