"""Trainer behaviour: stop on a non-finite loss, exact resume after a crash, atomic checkpoint files, and a
process killed while writing a checkpoint."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from gluon_yolo3 import api
from gluon_yolo3.engine import checkpoint as ckpt
from gluon_yolo3.inference.weights import find_weights
from gluon_yolo3.engine.trainer import NonFiniteLoss, Trainer
from gluon_yolo3.losses.terms import LossTerm, per_image_sum
from gluon_yolo3.registry import LOSSES

TINY = ["model.input_size=64", "data.train.image_size=64", "data.val.image_size=64",
        "data.train.num_images=16", "data.val.num_images=4", "data.num_workers=0",
        "train.batch_size=8", "train.val_every=0", "train.lr=0.01"]


@LOSSES.register("test_explodes", override=True)
class Explodes(LossTerm):
    """A term that is NaN from the first step on."""

    short_name = "boom"

    def hybrid_forward(self, F, pred, target, pred_boxes, noobj):
        return per_image_sum(F, F.log(F.zeros_like(F.slice_axis(pred, axis=-1, begin=4, end=5)) - 1))


def structural_params(net, trainable_only=False):
    return {k: v.data().asnumpy().copy() for k, v in net._collect_params_with_prefix().items()
            if not trainable_only or v.grad_req != "null"}


def test_nan_loss_stops_naming_the_term_and_keeps_weights(tmp_path, demo_recipe):
    recipe = api.load(demo_recipe, TINY + [
        "train.epochs=1", 'loss.terms=[{type: xy_bce}, {type: test_explodes}]'])
    trainer = Trainer(recipe, tmp_path, progress=False, log=lambda *_: None)
    trainer.setup()
    before = structural_params(trainer.net, trainable_only=True)   # BN statistics move in any forward
    trainer.setup = lambda: None          # keep the set-up whose weights we recorded
    with pytest.raises(NonFiniteLoss) as err:
        trainer.fit()
    message = str(err.value)
    assert "'boom'" in message and "step 1" in message and "learning rate" in message
    after = structural_params(trainer.net, trainable_only=True)
    assert len(before) > 30
    for name in before:                   # the bad step was not applied
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["kind"] == "error" and "'boom'" in lines[-1]["message"]


# Exact resume: each setting is trained straight through, and crashed after a checkpoint then resumed; both runs must
# end with the same weights, optimizer state and LR position, and log the same per-step losses after the resume
# (the same images, augmented alike). (overrides, epoch after whose checkpoint the run crashes, steps, EMA on)
RESUME_SETTINGS = [
    # plain SGD: no EMA, the checkpoint's .params are the training weights; crashed after epoch 1 of 2
    (["train.epochs=2"], 1, 4, False),
    # EMA (training weights in .train_params), gradient clipping, warm-up then cosine: 4 epochs = 2 then 2
    (["data.train.num_images=8", "train.batch_size=4", "train.epochs=4", "train.ema={decay: 0.9, warmup_steps: 3}",
      "train.clip_grad_norm=300", "train.lr_schedule={type: warmup_cosine, warmup_epochs: 1}"], 2, 8, True),
]


def train_losses(folder):
    return {m["step"]: m["loss"] for m in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines())
            if m["kind"] == "train"}


@pytest.mark.slow
def test_resume_after_a_crash_equals_training_straight_through(tmp_path, monkeypatch, demo_recipe):
    """Parameters, EMA, momentum, LR position and the data order/augmentation draws (per-step losses), for each of
    RESUME_SETTINGS."""
    real_save = ckpt.CheckpointManager.save
    for overrides, crash_epoch, steps, ema in RESUME_SETTINGS:
        recipe = api.load(demo_recipe, TINY + ["train.log_every=1"] + overrides)
        folder = tmp_path / f"crash_after_epoch_{crash_epoch}"
        straight = Trainer(recipe, folder / "straight", progress=False, log=lambda *_: None)
        assert straight.fit()["steps"] == steps
        assert (straight.ema is not None) == ema

        def save_then_crash(self, net, trainer, epoch, *args, **kwargs):
            path = real_save(self, net, trainer, epoch, *args, **kwargs)
            if epoch == crash_epoch:
                raise KeyboardInterrupt(f"simulated crash after the checkpoint of epoch {epoch}")
            return path

        monkeypatch.setattr(ckpt.CheckpointManager, "save", save_then_crash)
        with pytest.raises(KeyboardInterrupt):
            Trainer(recipe, folder / "resumed", progress=False, log=lambda *_: None).fit()
        monkeypatch.setattr(ckpt.CheckpointManager, "save", real_save)
        assert json.loads((folder / "resumed/checkpoints/last.json").read_text())["epoch"] == crash_epoch

        resumed = Trainer(recipe, folder / "resumed", progress=False, log=lambda *_: None)
        summary = resumed.fit(resume=True)
        assert summary["steps"] == straight.steps_per_epoch * recipe["train"]["epochs"] == steps
        a, b = structural_params(straight.net), structural_params(resumed.net)
        for name in a:
            np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-6, err_msg=name)
        if ema:
            for name, s in straight.ema.shadow.items():
                np.testing.assert_allclose(resumed.ema.shadow[name].asnumpy(), s.asnumpy(), rtol=1e-5, atol=1e-6,
                                           err_msg=f"EMA {name}")
            assert resumed.ema.updates == straight.ema.updates == steps
        momenta_a, momenta_b = straight.gluon_trainer._updaters[0].states, resumed.gluon_trainer._updaters[0].states
        assert sorted(momenta_a) == sorted(momenta_b) and len(momenta_a) > 30
        for index in momenta_a:
            np.testing.assert_allclose(momenta_b[index].asnumpy(), momenta_a[index].asnumpy(), rtol=1e-5, atol=1e-7)
        assert resumed.gluon_trainer.optimizer.num_update == straight.gluon_trainer.optimizer.num_update == steps
        assert resumed.gluon_trainer.learning_rate == pytest.approx(straight.gluon_trainer.learning_rate)

        la, lb = train_losses(folder / "straight"), train_losses(folder / "resumed")
        assert sorted(lb) == list(range(1, steps + 1))
        for step in range(crash_epoch * straight.steps_per_epoch + 1, steps + 1):   # the steps after the resume
            assert lb[step] == pytest.approx(la[step], rel=1e-5), step


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "weights.params"
    target.write_bytes(b"old and good")

    def broken_writer(path):
        with open(path, "wb") as fh:
            fh.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        ckpt.atomic_write(target, broken_writer)
    assert target.read_bytes() == b"old and good"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.params"]   # no temp file left behind


@pytest.mark.slow
def test_checkpoints_are_pruned_and_last_points_at_complete_files(tmp_path, demo_recipe):
    recipe = api.load(demo_recipe, TINY + ["train.epochs=3", "train.keep_checkpoints=2"])
    Trainer(recipe, tmp_path, progress=False, log=lambda *_: None).fit()
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.glob("epoch_*.params")) == ["epoch_0002.params", "epoch_0003.params"]
    meta = ckpt.CheckpointManager(tmp_path).last()
    assert meta["epoch"] == 3 and meta["step"] == 6
    assert find_weights(tmp_path).name == "epoch_0003.params"   # no validation: no best.params


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


@pytest.mark.slow
def test_a_process_killed_while_writing_a_checkpoint_leaves_the_previous_one_loadable(tmp_path, demo_recipe, repo,
                                                                                      job_env, kill_group):
    script, marker, run = tmp_path / "kill.py", tmp_path / "writing", tmp_path / "run"
    script.write_text(KILL_WHILE_SAVING)
    overrides = TINY + ["train.log_every=1", "data.train.num_images=8", "train.batch_size=4", "train.epochs=3"]
    proc = subprocess.Popen([sys.executable, str(script), str(run), str(marker)] + overrides, cwd=repo,
                            env={**os.environ, **job_env, "RECIPE": demo_recipe}, start_new_session=True,
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
    recipe = api.load(demo_recipe, overrides)
    net = api.load_detector(recipe, run)           # loads: the previous checkpoint is complete
    assert len(net.collect_params().keys()) > 30
    resumed = Trainer(recipe, run, progress=False, log=lambda *_: None)
    summary = resumed.fit(resume=True)             # and training continues from it to the end
    assert summary["steps"] == 6
    assert ckpt.CheckpointManager(run).last()["epoch"] == 3
    assert not half_written.exists()               # the resume cleared the half-written file
