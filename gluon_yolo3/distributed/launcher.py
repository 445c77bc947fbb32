"""Start a distributed job: MXNet's scheduler, servers and workers, on this machine or over ssh.

    gluon-yolo3 launch --workers 2 --servers 1 -- train recipes/demo_tiny.yaml --workdir runs/dist
    gluon-yolo3 launch --workers 4 --servers 2 --hosts hosts.txt -- train recipes/voc.yaml

Everything the `launch` verb's process runs: the hosts file, `Job` (start, supervise, kill) and `launch()`.
Every process of the job runs `python -m gluon_yolo3.node --node ROLE:INDEX [-- COMMAND]` (NODE_ENTRY)
with MXNet's parameter-server variables (`DMLC_ROLE`, `DMLC_PS_ROOT_URI`, `DMLC_PS_ROOT_PORT`,
`DMLC_NUM_SERVER`, `DMLC_NUM_WORKER`, `DMLC_NODE_HOST`) and the launcher's heartbeat address
(heartbeat.py). The scheduler runs here; servers and workers go round-robin over the hosts file (one
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

from .heartbeat import ENV_HEARTBEAT, ENV_NODE, HeartbeatServer
from .kvstore import check_kvstore, is_distributed

# the per-node entry every process of a job runs (`python -m`); it lives in the CLI layer (a worker runs a CLI
# verb), so the launcher names it and never imports it
NODE_ENTRY = "gluon_yolo3.node"


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
                ENV_HEARTBEAT: self.heartbeat.address, ENV_NODE: f"{node.role}:{node.index}"}

    def node_argv(self, node: Node) -> List[str]:
        argv = [self.python, "-m", NODE_ENTRY, "--node", f"{node.role}:{node.index}"]
        if node.role == "worker":
            argv += ["--"] + self.command
        return argv

    def ssh_argv(self, node: Node) -> List[str]:
        """`ssh host 'cd CWD && env K=V ... python -m gluon_yolo3.node --node ...'`."""
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
    if not is_distributed(kvstore):
        raise LaunchError(f"launch: --kvstore must be a dist kvstore (dist_sync, dist_device_sync), got {kvstore!r}")
    check_kvstore(kvstore)
    host_list = read_hosts(hosts) if hosts else None
    job = Job(worker_command(command, kvstore), workers, servers, hosts=host_list, python=python,
              root_uri=root_uri, port=port, env=env, cwd=cwd, heartbeat_timeout=heartbeat_timeout,
              grace=grace, timeout=timeout, log=log)
    return job.run()
