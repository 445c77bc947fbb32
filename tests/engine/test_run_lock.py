"""One writer per run folder: a second `train` (or `--resume`) into a folder another process is writing is refused,
naming the folder and that process; the lock ends with its process, `kill -9` included, even when a forked
child (a DataLoader worker) lives on; readers take no lock."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gluon_yolo3 import api
from gluon_yolo3.engine.run_folder import (LOCK_FILE, RunFolderError, RunLock, hold_run_folder, lock_holder,
                                           make_run_folder)
from gluon_yolo3.engine.trainer import Trainer

TINY = ["model.input_size=64", "data.train.image_size=64", "data.val.image_size=64", "data.num_workers=0",
        "data.train.num_images=16", "data.val.num_images=4", "train.batch_size=8", "train.val_every=0",
        "train.lr=0.01", "train.epochs=1"]

HOLDER = """
import os, sys, time
from gluon_yolo3.engine.run_folder import RunLock
lock = RunLock(sys.argv[1]).acquire()
if sys.argv[2] == "fork" and os.fork() == 0:     # a child that outlives its parent, as a DataLoader worker can
    time.sleep(60)
    os._exit(0)
print("locked", flush=True)
time.sleep(60)
"""


def quiet(*_args, **_kwargs):
    pass


def test_a_second_writer_is_refused_naming_the_folder_and_the_process(tmp_path, demo_recipe, invoke, sets):
    """Before: both trained into the folder and exited 0, their metrics lines interleaved."""
    run = tmp_path / "run"
    lock = RunLock(run).acquire()
    expected = f"run folder '{run}' is being written by process {os.getpid()} on "
    with pytest.raises(RunFolderError, match=expected):
        api.train(api.load(demo_recipe, TINY), workdir=str(run), progress=False, log=quiet)
    result = invoke("train", demo_recipe, "--workdir", run, "--no-progress", *sets(TINY))
    assert result.exit_code == 2 and expected in result.output and "another --workdir" in result.output
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]          # nothing written
    assert lock_holder(run).startswith(f"process {os.getpid()} on ")
    lock.release()
    assert lock_holder(run) is None
    hold_run_folder(run, resume=False).release()


def test_resume_into_a_folder_being_written_is_refused(tmp_path, demo_recipe):
    """Before: accepted; every metrics line then appeared twice."""
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    lock = RunLock(tmp_path).acquire()
    with pytest.raises(RunFolderError, match="is being written by process"):
        Trainer(api.load(demo_recipe, TINY + ["train.epochs=2"]), tmp_path, progress=False, log=quiet).fit(resume=True)
    assert (tmp_path / "metrics.jsonl").read_text() == "{}\n"
    lock.release()
    hold_run_folder(tmp_path, resume=True).release()


def test_default_run_names_skip_a_folder_being_written(elsewhere, demo_recipe):
    lock = RunLock(elsewhere / "runs" / "busy").acquire()
    assert make_run_folder(api.load(demo_recipe, TINY + ["name=busy"]), None, resume=False) == Path("runs/busy-2")
    lock.release()
    assert make_run_folder(api.load(demo_recipe, TINY + ["name=busy"]), None, resume=False) == Path("runs/busy")


def test_a_folder_holding_only_a_stale_lock_file_is_a_new_folder(tmp_path, demo_recipe):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text("999999 elsewhere 2020-01-01 00:00:00\n")     # left by a killed process
    assert lock_holder(run) is None
    assert make_run_folder(api.load(demo_recipe, TINY), str(run), resume=False) == run
    hold_run_folder(run, resume=False).release()


def test_a_run_failing_before_it_writes_leaves_no_folder_and_no_lock(tmp_path, demo_recipe):
    with pytest.raises(ValueError):
        api.train(api.load(demo_recipe, TINY + ["train.batch_size=64"]), workdir=str(tmp_path / "run"),
                  progress=False, log=quiet)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("child", ["none", "fork"])
def test_the_lock_ends_with_its_process_even_under_kill_9(tmp_path, child, job_env):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run), child], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, **job_env}, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        assert lock_holder(run).startswith(f"process {proc.pid} on ")
        with pytest.raises(RunFolderError, match=f"process {proc.pid}"):
            RunLock(run).acquire()
        os.kill(proc.pid, signal.SIGKILL)            # the holder only: a forked child lives on
        proc.wait(timeout=10)
        RunLock(run).acquire().release()             # free at once
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)      # the child, if any
        except ProcessLookupError:
            pass


@pytest.mark.slow
def test_kill_9_during_training_then_resume(tmp_path, demo_recipe, sets, job_env, kill_group):
    """Two real `train` processes: the second, with --resume while the first still trains, is refused naming
    the first's PID; after `kill -9` of the first (its DataLoader worker may live on) --resume continues."""
    run = tmp_path / "run"
    args = [sys.executable, "-m", "gluon_yolo3.cli", "train", demo_recipe, "--workdir", str(run), "--no-progress"]
    first = subprocess.Popen(args + sets(TINY + ["train.epochs=100", "data.num_workers=1"]),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **job_env},
                             start_new_session=True)
    try:
        deadline = time.time() + 180
        while not (run / "checkpoints/last.json").exists():
            assert first.poll() is None and time.time() < deadline, "the first run did not write a checkpoint"
            time.sleep(0.5)
        second = subprocess.run(args + ["--resume"] + sets(TINY + ["train.epochs=100"]), capture_output=True,
                                text=True, env={**os.environ, **job_env}, timeout=300)
        assert second.returncode == 2, second.stderr
        assert f"run folder '{run}' is being written by process {first.pid} on " in second.stderr
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        epoch = int(__import__("json").loads((run / "checkpoints/last.json").read_text())["epoch"])
        third = subprocess.run(args + ["--resume"] + sets(TINY + [f"train.epochs={epoch + 1}"]), capture_output=True,
                               text=True, env={**os.environ, **job_env}, timeout=300)
        assert third.returncode == 0, third.stderr
        assert "resumed from" in third.stdout
    finally:
        kill_group(first)
