"""Trainer behaviour: stop on a non-finite loss, exact resume after a crash, atomic checkpoint files."""
import json

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


def test_nan_loss_stops_naming_the_term_and_keeps_weights(tmp_path):
    recipe = api.load("recipes/demo_tiny.yaml", TINY + [
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


def test_resume_after_a_crash_equals_training_straight_through(tmp_path, monkeypatch):
    recipe = api.load("recipes/demo_tiny.yaml", TINY + ["train.epochs=2"])
    straight = Trainer(recipe, tmp_path / "straight", progress=False, log=lambda *_: None)
    straight.fit()

    real_save = ckpt.CheckpointManager.save

    def save_then_crash(self, *args, **kwargs):
        real_save(self, *args, **kwargs)
        raise KeyboardInterrupt("simulated crash after the first checkpoint")

    monkeypatch.setattr(ckpt.CheckpointManager, "save", save_then_crash)
    crashed = Trainer(recipe, tmp_path / "resumed", progress=False, log=lambda *_: None)
    with pytest.raises(KeyboardInterrupt):
        crashed.fit()
    monkeypatch.setattr(ckpt.CheckpointManager, "save", real_save)
    assert json.loads((tmp_path / "resumed/checkpoints/last.json").read_text())["epoch"] == 1

    resumed = Trainer(recipe, tmp_path / "resumed", progress=False, log=lambda *_: None)
    summary = resumed.fit(resume=True)
    assert summary["steps"] == straight.steps_per_epoch * 2
    a, b = structural_params(straight.net), structural_params(resumed.net)
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert resumed.gluon_trainer.learning_rate == pytest.approx(straight.gluon_trainer.learning_rate)


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


def test_checkpoints_are_pruned_and_last_points_at_complete_files(tmp_path):
    recipe = api.load("recipes/demo_tiny.yaml", TINY + ["train.epochs=3", "train.keep_checkpoints=2"])
    Trainer(recipe, tmp_path, progress=False, log=lambda *_: None).fit()
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.glob("epoch_*.params")) == ["epoch_0002.params", "epoch_0003.params"]
    meta = ckpt.CheckpointManager(tmp_path).last()
    assert meta["epoch"] == 3 and meta["step"] == 6
    assert find_weights(tmp_path).name == "epoch_0003.params"   # no validation: no best.params
