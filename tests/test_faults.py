"""Faults: exact resume, a process killed while writing a checkpoint, and dist jobs that lose a process.

Every subprocess runs in its own process group with a timeout, and is killed (with its group) in
`finally`; dist tests also check that no process of the job is left running.
"""
import json
import os
import re
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from dist_support import CLI, JOB_ENV, PYTHON, RECIPE, ROOT, alive, started_pids
from gluon_yolo3 import api
from gluon_yolo3.engine import checkpoint as ckpt
from gluon_yolo3.engine.trainer import Trainer

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


def kill_group(proc):
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=10)


def launch_job(tmp_path, overrides, fault_env, extra_args=(), timeout=120):
    """`gluon-yolo3 launch --workers 2 --servers 1 -- train ...` -> (exit code, output, seconds)."""
    env = {**os.environ, **fault_env}
    args = (["launch", "--workers", "2", "--servers", "1", "--timeout", "100", "--grace", "5"]
            + [f"--env={k}={v}" for k, v in JOB_ENV.items()] + list(extra_args)
            + ["--", "train", RECIPE, "--workdir", str(tmp_path / "run"), "--no-progress"]
            + [f"--set={o}" for o in overrides])
    started = time.monotonic()
    proc = subprocess.Popen([PYTHON, "-c", CLI] + args, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            kill_group(proc)
            pytest.fail(f"the launcher did not end within {timeout} s")
    return proc.returncode, output, time.monotonic() - started


def test_a_dead_worker_stops_the_job_with_a_clear_error(tmp_path):
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


def test_a_nan_on_one_worker_stops_every_worker_at_the_same_step(tmp_path):
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


def test_a_killed_launcher_takes_its_job_with_it(tmp_path):
    """SIGKILL leaves the launcher no time to clean up: the processes notice its heartbeat is gone."""
    env = {**os.environ, **JOB_ENV}
    args = ["launch", "--workers", "2", "--servers", "1", "--", "train", RECIPE, "--workdir", str(tmp_path / "run"),
            "--no-progress"] + [f"--set={o}" for o in TINY + ["data.train.num_images=4000", "train.batch_size=2",
                                                              "train.epochs=1"]]
    proc = subprocess.Popen([PYTHON, "-c", CLI] + args, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
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


def test_without_the_launcher_the_watchdog_stops_a_waiting_worker(tmp_path):
    """Scheduler, server and workers started by hand with the DMLC_* variables (no heartbeat)."""
    plugin = write_plugin(tmp_path)
    port = __import__("gluon_yolo3.distributed.launcher", fromlist=["free_port"]).free_port()
    base = {**os.environ, **JOB_ENV, "DMLC_PS_ROOT_URI": "127.0.0.1", "DMLC_PS_ROOT_PORT": str(port),
            "DMLC_NUM_SERVER": "1", "DMLC_NUM_WORKER": "2", "DMLC_NODE_HOST": "127.0.0.1",
            "FAULT": "kill", "FAULT_NODE": "worker:1", "FAULT_CALL": "3"}
    base.pop("GLUON_YOLO3_HEARTBEAT", None)
    train = ["train", RECIPE, "--kvstore", "dist_sync", "--workdir", str(tmp_path / "run"), "--no-progress"] + \
        [f"--set={o}" for o in fault_overrides(plugin, ["train.dist_timeout=4"])]
    procs = []
    try:
        for role in ("scheduler", "server"):
            procs.append(subprocess.Popen([PYTHON, "-c", "import mxnet"], env={**base, "DMLC_ROLE": role},
                                          start_new_session=True, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        workers = [subprocess.Popen([PYTHON, "-c", CLI] + train, cwd=ROOT, text=True,
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


def structural(net):
    return {k: v.data().asnumpy().copy() for k, v in net._collect_params_with_prefix().items()}


def test_resume_is_exact_4_epochs_equal_2_then_2(tmp_path, monkeypatch):
    """Parameters, EMA, momentum, LR position and the data order/augmentation draws (per-step losses)."""
    recipe = api.load(RECIPE, TINY + ["data.train.num_images=8", "train.batch_size=4", "train.epochs=4",
                                      "train.ema={decay: 0.9, warmup_steps: 3}", "train.clip_grad_norm=300",
                                      "train.lr_schedule={type: warmup_cosine, warmup_epochs: 1}"])
    straight = Trainer(recipe, tmp_path / "straight", progress=False, log=lambda *_: None)
    assert straight.fit()["steps"] == 8

    real_save = ckpt.CheckpointManager.save

    def save_then_stop(self, net, trainer, epoch, *args, **kwargs):
        path = real_save(self, net, trainer, epoch, *args, **kwargs)
        if epoch == 2:
            raise KeyboardInterrupt("stopped after epoch 2")
        return path

    monkeypatch.setattr(ckpt.CheckpointManager, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        Trainer(recipe, tmp_path / "resumed", progress=False, log=lambda *_: None).fit()
    monkeypatch.setattr(ckpt.CheckpointManager, "save", real_save)
    resumed = Trainer(recipe, tmp_path / "resumed", progress=False, log=lambda *_: None)
    assert resumed.fit(resume=True)["steps"] == 8

    a, b = structural(straight.net), structural(resumed.net)
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-6, err_msg=name)
    for name, s in straight.ema.shadow.items():
        np.testing.assert_allclose(resumed.ema.shadow[name].asnumpy(), s.asnumpy(), rtol=1e-5, atol=1e-6,
                                   err_msg=f"EMA {name}")
    assert resumed.ema.updates == straight.ema.updates == 8
    momenta_a, momenta_b = straight.gluon_trainer._updaters[0].states, resumed.gluon_trainer._updaters[0].states
    assert sorted(momenta_a) == sorted(momenta_b) and len(momenta_a) > 30
    for index in momenta_a:
        np.testing.assert_allclose(momenta_b[index].asnumpy(), momenta_a[index].asnumpy(), rtol=1e-5, atol=1e-7)
    assert resumed.gluon_trainer.optimizer.num_update == straight.gluon_trainer.optimizer.num_update == 8
    assert resumed.gluon_trainer.learning_rate == pytest.approx(straight.gluon_trainer.learning_rate)

    def losses(folder):
        return {m["step"]: m["loss"] for m in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines())
                if m["kind"] == "train"}
    la, lb = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert sorted(lb) == list(range(1, 9))
    for step in range(5, 9):                       # the same images, augmented alike, after the resume
        assert lb[step] == pytest.approx(la[step], rel=1e-5), step


KILL_WHILE_SAVING = textwrap.dedent('''
    import os, sys, time
    from gluon_yolo3 import api
    from gluon_yolo3.engine import checkpoint as ckpt
    from gluon_yolo3.engine.trainer import Trainer
    run, marker, overrides = sys.argv[1], sys.argv[2], sys.argv[3:]
    real = ckpt.atomic_write

    def slow(path, write):
        if os.path.basename(str(path)) != "epoch_0002.params":
            return real(path, write)
        def half_then_hang(tmp):
            write(tmp)
            with open(tmp, "r+b") as fh:           # half of the file is on disk when the kill comes
                fh.truncate(os.path.getsize(tmp) // 2)
            open(marker, "w").write(tmp)
            time.sleep(300)
        return real(path, half_then_hang)

    ckpt.atomic_write = slow
    Trainer(api.load(os.environ["RECIPE"], overrides), run, progress=False).fit()
''')


def test_a_process_killed_while_writing_a_checkpoint_leaves_the_previous_one_loadable(tmp_path):
    script, marker, run = tmp_path / "kill.py", tmp_path / "writing", tmp_path / "run"
    script.write_text(KILL_WHILE_SAVING)
    overrides = TINY + ["data.train.num_images=8", "train.batch_size=4", "train.epochs=3"]
    proc = subprocess.Popen([PYTHON, str(script), str(run), str(marker)] + overrides, cwd=ROOT,
                            env={**os.environ, **JOB_ENV, "RECIPE": RECIPE}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), proc.stderr.read() if proc.poll() is not None else "timed out"
        os.killpg(proc.pid, signal.SIGKILL)        # mid-write of epoch 2's weights
        proc.wait(timeout=10)
    finally:
        kill_group(proc)
    half_written = Path(marker.read_text())
    assert half_written.exists() and half_written.parent == run / "checkpoints"
    meta = ckpt.CheckpointManager(run).last()
    assert meta["epoch"] == 1 and Path(meta["params"]).name == "epoch_0001.params"
    assert not (run / "checkpoints/epoch_0002.params").exists()
    recipe = api.load(RECIPE, overrides)
    net = api.load_detector(recipe, run)           # loads: the previous checkpoint is complete
    assert len(net.collect_params().keys()) > 30
    resumed = Trainer(recipe, run, progress=False, log=lambda *_: None)
    summary = resumed.fit(resume=True)             # and training continues from it to the end
    assert summary["steps"] == 6
    assert ckpt.CheckpointManager(run).last()["epoch"] == 3
    assert not half_written.exists()               # the resume cleared the half-written file
