"""Faults of dist jobs: a worker that dies, a NaN on one worker, a killed launcher, a worker without the
launcher (the watchdog). (Exact resume and a process killed while writing a checkpoint: engine/test_trainer.py.)

Every subprocess runs in its own process group with a timeout, and is killed (with its group) in
`finally`; the tests also check that no process of the job is left running.
"""
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = [pytest.mark.dist, pytest.mark.slow]

TINY = ["model.input_size=64", "data.train.image_size=64", "data.val.image_size=64", "data.val.num_images=4",
        "data.num_workers=0", "train.val_every=0", "train.lr=0.01", "train.log_every=1"]

# A plugin loss term for dist jobs: zero loss, except that on the worker named by FAULT_NODE (the
# launcher's GLUON_YOLO3_NODE) at its FAULT_CALL-th forward pass it either kills its own process
# (FAULT=kill) or returns NaN (FAULT=nan). Needs train.hybridize=false (the forward runs every step).
FAULT_PLUGIN = textwrap.dedent('''
    import os, signal
    from gluon_yolo3.losses.terms import LossTerm, per_image_sum
    from gluon_yolo3.registry import LOSSES
    CALLS = [0]

    @LOSSES.register("test_fault", override=True)
    class Fault(LossTerm):
        """Zero, or a fault on one worker at one step."""
        short_name = "fault"

        def hybrid_forward(self, F, pred, target, pred_boxes, noobj):
            CALLS[0] += 1
            zero = F.zeros_like(F.slice_axis(pred, axis=-1, begin=4, end=5))
            if os.environ.get("GLUON_YOLO3_NODE") == os.environ.get("FAULT_NODE") and \\
                    CALLS[0] == int(os.environ.get("FAULT_CALL", "3")):
                if os.environ.get("FAULT") == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                return per_image_sum(F, F.log(zero - 1))     # NaN
            return per_image_sum(F, zero)
''')


def write_plugin(tmp_path):
    path = tmp_path / "fault_plugin.py"
    path.write_text(FAULT_PLUGIN)
    return path


def fault_overrides(plugin, extra=()):
    return TINY + [f"plugins=[{plugin}]", "loss.terms=[{type: xy_bce}, {type: test_fault}]",
                   "train.hybridize=false", "data.train.num_images=16", "train.batch_size=2",
                   "train.epochs=2"] + list(extra)


@pytest.fixture
def launch_job(cli_argv, repo, demo_recipe, job_env, kill_group):
    """launch_job(tmp_path, overrides, fault_env, extra_args=(), timeout=120) -> (exit code, output, seconds) of
    `gluon-yolo3 launch --workers 2 --servers 1 -- train ...`."""
    def launch_job(tmp_path, overrides, fault_env, extra_args=(), timeout=120):
        env = {**os.environ, **fault_env}
        args = (["launch", "--workers", "2", "--servers", "1", "--timeout", "100", "--grace", "5"]
                + [f"--env={k}={v}" for k, v in job_env.items()] + list(extra_args)
                + ["--", "train", demo_recipe, "--workdir", str(tmp_path / "run"), "--no-progress"]
                + [f"--set={o}" for o in overrides])
        started = time.monotonic()
        proc = subprocess.Popen(cli_argv + args, cwd=repo, env=env, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=timeout)
        finally:
            if proc.poll() is None:
                kill_group(proc)
                pytest.fail(f"the launcher did not end within {timeout} s")
        return proc.returncode, output, time.monotonic() - started
    return launch_job


def test_a_dead_worker_stops_the_job_with_a_clear_error(tmp_path, alive, launch_job, started_pids):
    plugin = write_plugin(tmp_path)
    code, output, seconds = launch_job(tmp_path, fault_overrides(plugin),
                                       {"FAULT": "kill", "FAULT_NODE": "worker:1", "FAULT_CALL": "3"})
    assert code == 128 + signal.SIGKILL, output
    assert "launch: worker 1 (127.0.0.1, pid" in output and "exited with code -9; stopping the job" in output
    # the survivors stop themselves, naming the dead worker, instead of waiting forever
    assert re.search(r"error: \[worker 0\] the job stops because worker 1 \(127.0.0.1, pid \d+\) exited with "
                     r"code -9", output), output
    assert "error: [server 0] the job stops because worker 1" in output
    assert "error: the distributed job failed (exit code 137)" in output
    assert seconds < 60
    time.sleep(0.5)
    assert not [pid for pid in started_pids(output) if alive(pid)]


def test_a_nan_on_one_worker_stops_every_worker_at_the_same_step(tmp_path, alive, launch_job, started_pids):
    plugin = write_plugin(tmp_path)
    code, output, seconds = launch_job(tmp_path, fault_overrides(plugin),
                                       {"FAULT": "nan", "FAULT_NODE": "worker:1", "FAULT_CALL": "6"})
    assert code != 0, output
    # both workers see the summed loss: both stop at step 6 naming the term, not with "worker died"
    assert len(re.findall(r"loss term\(s\) 'fault' became nan at epoch 2, step 6", output)) == 2, output
    assert "Last good checkpoint:" in output and "learning rate" in output
    lines = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["kind"] == "error" and lines[-1]["step"] == 6
    assert json.loads((tmp_path / "run/checkpoints/last.json").read_text())["epoch"] == 1
    assert not [pid for pid in started_pids(output) if alive(pid)]


def test_a_killed_launcher_takes_its_job_with_it(tmp_path, alive, cli_argv, demo_recipe, job_env, kill_group,
                                                 started_pids, repo):
    """SIGKILL leaves the launcher no time to clean up: the processes notice its heartbeat is gone."""
    env = {**os.environ, **job_env}
    args = ["launch", "--workers", "2", "--servers", "1", "--", "train", demo_recipe, "--workdir",
            str(tmp_path / "run"), "--no-progress"] + [f"--set={o}" for o in TINY + [
                "data.train.num_images=4000", "train.batch_size=2", "train.epochs=1"]]
    proc = subprocess.Popen(cli_argv + args, cwd=repo, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    pids = []
    try:
        output = ""
        deadline = time.monotonic() + 60
        while len(pids) < 4 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            output += line
            pids = started_pids(output)
        assert len(pids) == 4, output
        time.sleep(5)                              # into training
        assert all(alive(p) for p in pids)
        proc.kill()
        proc.wait(timeout=10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            time.sleep(0.2)
        assert not [p for p in pids if alive(p)]
    finally:
        kill_group(proc)
        for pid in pids:
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)


def test_without_the_launcher_the_watchdog_stops_a_waiting_worker(tmp_path, cli_argv, demo_recipe, job_env, kill_group,
                                                                  repo):
    """Scheduler, server and workers started by hand with the DMLC_* variables (no heartbeat)."""
    plugin = write_plugin(tmp_path)
    port = __import__("gluon_yolo3.distributed.launcher", fromlist=["free_port"]).free_port()
    base = {**os.environ, **job_env, "DMLC_PS_ROOT_URI": "127.0.0.1", "DMLC_PS_ROOT_PORT": str(port),
            "DMLC_NUM_SERVER": "1", "DMLC_NUM_WORKER": "2", "DMLC_NODE_HOST": "127.0.0.1",
            "FAULT": "kill", "FAULT_NODE": "worker:1", "FAULT_CALL": "3"}
    base.pop("GLUON_YOLO3_HEARTBEAT", None)
    train = ["train", demo_recipe, "--kvstore", "dist_sync", "--workdir", str(tmp_path / "run"), "--no-progress"] + \
        [f"--set={o}" for o in fault_overrides(plugin, ["train.dist_timeout=4"])]
    procs = []
    try:
        for role in ("scheduler", "server"):
            procs.append(subprocess.Popen([sys.executable, "-c", "import mxnet"], env={**base, "DMLC_ROLE": role},
                                          start_new_session=True, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        workers = [subprocess.Popen(cli_argv + train, cwd=repo, text=True,
                                    env={**base, "DMLC_ROLE": "worker", "GLUON_YOLO3_NODE": f"worker:{i}"},
                                    start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                   for i in range(2)]
        procs += workers
        started = time.monotonic()
        outputs = [w.communicate(timeout=90)[0] for w in workers]
        assert workers[1].returncode == -signal.SIGKILL
        # the dead worker's rank is not known in advance: the other one must have stopped by itself
        assert workers[0].returncode == 4, outputs[0]
        assert re.search(r"error: \[worker 0\] no progress for 4 s during step 3 \(epoch 1\): another worker or a "
                         r"server of the job probably died or hangs", outputs[0]), outputs[0]
        assert time.monotonic() - started < 60
    finally:
        for proc in procs:
            kill_group(proc)
