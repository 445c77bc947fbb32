"""Start a distributed job: MXNet's scheduler, servers and workers, on this machine or over ssh.

    gluon-yolo3 launch --workers 2 --servers 1 -- train recipes/demo_tiny.yaml --workdir runs/dist
    gluon-yolo3 launch --workers 4 --servers 2 --hosts hosts.txt -- train recipes/voc.yaml

Every process of the job runs `python -m gluon_yolo3.distributed.launcher --node ROLE:INDEX [-- COMMAND]` with
MXNet's parameter-server variables (`DMLC_ROLE`, `DMLC_PS_ROOT_URI`, `DMLC_PS_ROOT_PORT`,
`DMLC_NUM_SERVER`, `DMLC_NUM_WORKER`, `DMLC_NODE_HOST`) and the launcher's heartbeat address
(distributed.py). The scheduler runs here; servers and workers go round-robin over the hosts file (one
host per line: `host`, `user@host` or `host:ssh_port`; `#` comments), or all on 127.0.0.1 without one.
Workers run COMMAND: gluon-yolo3 arguments (`train RECIPE ...`, given `--kvstore dist_sync`), or a Python
script (`path.py args`) for a custom loop.

The launcher watches every process (exit codes and heartbeats). When one fails, dies or falls silent,
it tells the others to stop (they print why and exit), kills what is left after a grace period, and
exits non-zero; when all workers end well it waits for the servers and the scheduler to finish.
MXNet's own launcher (tools/launch.py, dmlc_tracker) is not used: it calls `Thread.isAlive`, gone since
Python 3.9.
"""
from __future__ import annotations

import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from . import kvstore as dist

ROLES = ("scheduler", "server", "worker")


class LaunchError(ValueError):
    """A launch that cannot start as asked (bad hosts file, bad counts, bad command)."""


@dataclass
class Host:
    """A machine of the hosts file: `address` for ssh (maybe `user@name`), `name` for the job's sockets."""
    address: str
    port: Optional[int] = None

    @property
    def name(self) -> str:
        return self.address.rsplit("@", 1)[-1]


def read_hosts(path: str | Path) -> List[Host]:
    """One host per line (`host`, `user@host`, `host:ssh_port`); blank lines and `#` comments skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"hosts file '{path}' not found")
    hosts = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        if len(text.split()) != 1:
            raise LaunchError(f"{path}:{number}: one host per line (host, user@host or host:port), got {line!r}")
        address, _, port = text.partition(":")
        if port and not port.isdigit():
            raise LaunchError(f"{path}:{number}: ssh port must be a number, got {port!r}")
        hosts.append(Host(address, int(port) if port else None))
    if not hosts:
        raise LaunchError(f"hosts file '{path}' names no host")
    return hosts


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def worker_command(command: Sequence[str], kvstore: str) -> List[str]:
    """The workers' command: `train ...` gets `--kvstore <kvstore>` unless it names one; a `.py` script
    runs as given."""
    command = list(command)
    if not command:
        raise LaunchError("launch: give the workers' command after --, e.g. -- train recipes/demo_tiny.yaml")
    if command[0].endswith(".py"):
        return command
    if command[0] != "train":
        raise LaunchError(f"launch: the workers run `train RECIPE ...` (or a .py script), got {command[0]!r}")
    if not any(a == "--kvstore" or a.startswith("--kvstore=") for a in command):
        command += ["--kvstore", kvstore]
    return command


@dataclass
class Node:
    role: str
    index: int
    host: Optional[Host]                 # None: this machine
    proc: Optional[subprocess.Popen] = None
    returncode: Optional[int] = None

    @property
    def key(self) -> Tuple[str, int]:
        return self.role, self.index

    def __str__(self):
        where = self.host.name if self.host else "127.0.0.1"
        pid = f", pid {self.proc.pid}" if self.proc and not self.host else ""
        return f"{self.role} {self.index} ({where}{pid})"


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


class Job:
    """One distributed job: `Job(...).run()` -> exit code (0 when every worker ended well)."""

    def __init__(self, command: Sequence[str], workers: int, servers: int = 1,
                 hosts: Optional[Sequence[Host]] = None, python: Optional[str] = None,
                 root_uri: Optional[str] = None, port: Optional[int] = None,
                 env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None,
                 heartbeat_timeout: float = 30.0, startup_timeout: float = 300.0, grace: float = 10.0,
                 timeout: float = 0.0, log: Callable[[str], None] = print):
        if int(workers) < 1 or int(servers) < 1:
            raise LaunchError(f"launch: need at least one worker and one server, got --workers {workers} "
                              f"--servers {servers}")
        self.command = list(command)
        self.hosts = list(hosts or [])
        self.python = python or sys.executable
        self.root_uri = root_uri or ("127.0.0.1" if not self.hosts else
                                     socket.gethostbyname(socket.gethostname()))
        self.port = int(port or free_port(self.root_uri))
        self.env = dict(env or {})
        self.cwd = str(cwd or os.getcwd())
        self.heartbeat_timeout = float(heartbeat_timeout)
        self.startup_timeout = float(startup_timeout)
        self.grace = float(grace)
        self.timeout = float(timeout)
        self.log = log
        self.nodes = [Node("scheduler", 0, None)]
        self.nodes += [Node("server", i, self._host(i)) for i in range(int(servers))]
        self.nodes += [Node("worker", i, self._host(i)) for i in range(int(workers))]
        self.heartbeat: Optional[HeartbeatServer] = None

    def _host(self, i: int) -> Optional[Host]:
        return self.hosts[i % len(self.hosts)] if self.hosts else None

    # ---- starting --------------------------------------------------------------------------------
    def node_env(self, node: Node) -> Dict[str, str]:
        workers = sum(n.role == "worker" for n in self.nodes)
        servers = sum(n.role == "server" for n in self.nodes)
        return {**self.env,
                "DMLC_ROLE": node.role, "DMLC_PS_ROOT_URI": self.root_uri, "DMLC_PS_ROOT_PORT": str(self.port),
                "DMLC_NUM_SERVER": str(servers), "DMLC_NUM_WORKER": str(workers),
                "DMLC_NODE_HOST": node.host.name if node.host else self.root_uri,
                dist.ENV_HEARTBEAT: self.heartbeat.address, dist.ENV_NODE: f"{node.role}:{node.index}"}

    def node_argv(self, node: Node) -> List[str]:
        argv = [self.python, "-m", "gluon_yolo3.distributed.launcher", "--node", f"{node.role}:{node.index}"]
        if node.role == "worker":
            argv += ["--"] + self.command
        return argv

    def ssh_argv(self, node: Node) -> List[str]:
        """`ssh host 'cd CWD && env K=V ... python -m gluon_yolo3.distributed.launcher --node ...'`."""
        assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.node_env(node).items())
        remote = (f"cd {shlex.quote(self.cwd)} && env {assignments} "
                  + " ".join(shlex.quote(a) for a in self.node_argv(node)))
        argv = ["ssh", "-o", "BatchMode=yes"]
        if node.host.port:
            argv += ["-p", str(node.host.port)]
        return argv + [node.host.address, remote]

    def start(self, node: Node):
        if node.host is None:
            argv, env = self.node_argv(node), {**os.environ, **self.node_env(node)}
        else:
            argv, env = self.ssh_argv(node), dict(os.environ)
        # its own process group: the launcher can end it with its children (data-loading workers)
        node.proc = subprocess.Popen(argv, env=env, cwd=self.cwd, start_new_session=True,
                                     stdin=subprocess.DEVNULL)
        self.log(f"launch: started {node}")

    # ---- watching --------------------------------------------------------------------------------
    def run(self) -> int:
        self.heartbeat = HeartbeatServer(self.root_uri, self.heartbeat_timeout)
        self.log(f"launch: scheduler at {self.root_uri}:{self.port}, "
                 f"{sum(n.role == 'server' for n in self.nodes)} server(s), "
                 f"{sum(n.role == 'worker' for n in self.nodes)} worker(s); heartbeat {self.heartbeat.address}")
        previous = signal.getsignal(signal.SIGTERM)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            for node in self.nodes:
                self.start(node)
            return self.supervise()
        except KeyboardInterrupt:
            self.log("launch: interrupted; stopping the job")
            self.heartbeat.abort("the launcher was interrupted")
            return 130
        finally:
            self.kill_all()
            self.heartbeat.close()
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, previous)

    def supervise(self) -> int:
        started = time.monotonic()
        failure: Optional[str] = None
        culprit: Optional[Node] = None
        kill_at: Optional[float] = None
        servers_done_at: Optional[float] = None
        workers = [n for n in self.nodes if n.role == "worker"]
        while True:
            now = time.monotonic()
            for node in self.nodes:
                if node.returncode is not None:
                    continue
                rc = node.proc.poll()
                if rc is None:
                    continue
                node.returncode = rc
                if failure is None and rc != 0:
                    failure, culprit = f"{node} exited with code {rc}", node
                elif node.role != "worker" and servers_done_at is None:
                    servers_done_at = now
            while not self.heartbeat.events.empty():
                kind, key, text = self.heartbeat.events.get()
                if failure is None:
                    culprit = self._node(key)
                    failure = f"{culprit} failed: {text}" if kind == "fail" else f"{culprit} is gone: {text}"
            if failure is None:
                for key, quiet in self.heartbeat.silent():
                    culprit = self._node(key)
                    failure = f"{culprit} sent no heartbeat for {quiet:.0f} s (hung, or its machine is unreachable)"
                    break
            if (failure is None and servers_done_at is not None and now - servers_done_at > self.grace
                    and not all(w.returncode == 0 for w in workers)):
                failure = "the scheduler or a server ended while workers were still running"
            if failure is None and now - started > self.startup_timeout:
                missing = [n for n in self.nodes if n.returncode is None and not self.heartbeat.said_hello(n.key)]
                if missing:
                    culprit, failure = missing[0], f"{missing[0]} did not start within {self.startup_timeout:.0f} s"
            if failure is None and self.timeout and now - started > self.timeout:
                failure = f"the job ran longer than its time limit ({self.timeout:.0f} s)"
            if failure is not None and kill_at is None:
                self.log(f"launch: {failure}; stopping the job")
                self.heartbeat.abort(f"the job stops because {failure}")
                kill_at = now + self.grace
            if all(n.returncode is not None for n in self.nodes):
                break
            if kill_at is None and all(w.returncode == 0 for w in workers):
                kill_at = now + self.grace     # the servers and the scheduler should follow shortly
            if kill_at is not None and now > kill_at:
                left = [n for n in self.nodes if n.returncode is None]
                if failure is None:
                    self.log(f"launch: every worker finished; {', '.join(map(str, left))} did not end "
                             f"within {self.grace:.0f} s, stopping it")
                break
            time.sleep(0.05)
        if failure is None:
            self.log(f"launch: all {len(workers)} workers finished in {time.monotonic() - started:.1f} s")
            return 0
        if culprit is not None and culprit.proc is not None and culprit.returncode is None:
            culprit.returncode = culprit.proc.poll()
        return _exit_code(culprit.returncode if culprit is not None else None)

    def _node(self, key) -> Optional[Node]:
        return next((n for n in self.nodes if n.key == tuple(key)), None)

    def kill_all(self, wait: float = 3.0):
        """End every process still running: SIGTERM to its group, SIGKILL after `wait` seconds."""
        running = [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for node in running:
                try:
                    os.killpg(node.proc.pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and any(n.proc.poll() is None for n in running):
                time.sleep(0.05)
            running = [n for n in running if n.proc.poll() is None]
            if not running:
                break
        for node in self.nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(timeout=1)
                except subprocess.TimeoutExpired:
                    pass
                if node.returncode is None:
                    node.returncode = node.proc.returncode


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _exit_code(rc: Optional[int]) -> int:
    """A process's exit code as the launcher's own (signals -> 128 + signal, like a shell)."""
    if rc is None or rc == 0:
        return 1
    return 128 - rc if rc < 0 else min(int(rc), 255)


def parse_env(items: Sequence[str]) -> Dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LaunchError(f"--env '{item}' must look like KEY=VALUE")
        out[key] = value
    return out


def launch(command: Sequence[str], workers: int, servers: int = 1, hosts: Optional[str | Path] = None,
           kvstore: str = "dist_sync", python: Optional[str] = None, root_uri: Optional[str] = None,
           port: Optional[int] = None, env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None,
           heartbeat_timeout: float = 30.0, grace: float = 10.0, timeout: float = 0.0,
           log: Callable[[str], None] = print) -> int:
    """Run a distributed job to its end; returns the exit code (0 when every worker ended well)."""
    if not dist.is_distributed(kvstore):
        raise LaunchError(f"launch: --kvstore must be a dist kvstore (dist_sync, dist_device_sync), got {kvstore!r}")
    dist.check_kvstore(kvstore)
    host_list = read_hosts(hosts) if hosts else None
    job = Job(worker_command(command, kvstore), workers, servers, hosts=host_list, python=python,
              root_uri=root_uri, port=port, env=env, cwd=cwd, heartbeat_timeout=heartbeat_timeout,
              grace=grace, timeout=timeout, log=log)
    return job.run()


# ---- inside every process of the job ----------------------------------------------------------------
def node_main(argv: Optional[Sequence[str]] = None) -> int:
    """`--node ROLE:INDEX [-- COMMAND]`: join the heartbeat, then be the scheduler, a server or a worker."""
    argv = list(sys.argv[1:] if argv is None else argv)
    rest: List[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, rest = argv[:cut], argv[cut + 1:]
    if len(argv) != 2 or argv[0] != "--node" or ":" not in argv[1]:
        sys.stderr.write("usage: python -m gluon_yolo3.distributed.launcher --node ROLE:INDEX [-- COMMAND]\n")
        return 2
    role, _, index = argv[1].partition(":")
    if role not in ROLES or not index.isdigit():
        sys.stderr.write(f"error: bad node {argv[1]!r}: ROLE is one of {', '.join(ROLES)}, INDEX a number\n")
        return 2
    try:
        beat = dist.start_heartbeat(role, int(index))
    except dist.DistributedError as err:
        sys.stderr.write(f"error: [{role} {index}] {err}\n")
        return 2
    if role != "worker":
        code = _serve_role()
    else:
        code = _run_worker(rest)
    if code:
        dist.stop_now(f"{role} {index} ended with exit code {code} (its error is printed above)", code)
    if beat is not None:
        beat.bye()
    return 0


def _serve_role() -> int:
    """Scheduler or server: importing mxnet with DMLC_ROLE set runs that role to the end of the job."""
    try:
        import mxnet  # noqa: F401
    except SystemExit as end:
        return end.code if isinstance(end.code, int) else (0 if end.code is None else 1)
    return 0


def _run_worker(command: List[str]) -> int:
    import gc
    import traceback
    if not command:
        sys.stderr.write("error: a worker needs a command after --\n")
        return 2
    try:
        if command[0].endswith(".py"):
            import runpy
            sys.argv = list(command)
            runpy.run_path(command[0], run_name="__main__")
            code = 0
        else:
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
    sys.exit(node_main())
