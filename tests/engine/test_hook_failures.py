"""A hook that fails after an epoch (validation reading a file gone bad, a plugin's bug) never loses the epoch's
weights: its checkpoint is written first, named in the log, and `--resume` continues from it."""
import pytest

from gluon_yolo3 import api
from gluon_yolo3.data.base import DatasetError
from gluon_yolo3.engine import hooks as hooks_mod
from gluon_yolo3.engine.checkpoint import CheckpointManager
from gluon_yolo3.engine.hooks import HookBase
from gluon_yolo3.engine.trainer import Trainer
from gluon_yolo3.registry import HOOKS

TINY = ["model.input_size=64", "data.train.image_size=64", "data.val.image_size=64", "data.num_workers=0",
        "data.train.num_images=16", "data.val.num_images=4", "train.batch_size=8", "train.lr=0.01",
        "train.epochs=2", "train.checkpoint_every=5"]


@HOOKS.register("test_fails_after_epoch", override=True)
class FailsAfterEpoch(HookBase):
    """Raises after the first epoch (a test hook)."""

    def after_epoch(self):
        raise ZeroDivisionError("a plugin's bug")


def after_one_epoch(recipe, run, log):
    """A set-up trainer as after its first epoch (no step taken: the checkpoint holds the initial weights)."""
    trainer = Trainer(recipe, run, progress=False, log=log)
    trainer.setup()
    trainer.epoch = 1
    return trainer


@pytest.mark.slow
def test_a_failing_recipe_hook_keeps_the_epochs_checkpoint(tmp_path, demo_recipe):
    """Before: the error ended the run with no checkpoint at all (checkpoint_every 5)."""
    logged = []
    recipe = api.load(demo_recipe, TINY + ["train.val_every=0", "train.hooks=[{type: test_fails_after_epoch}]"])
    with pytest.raises(ZeroDivisionError, match="a plugin's bug"):
        Trainer(recipe, tmp_path, progress=False, log=logged.append).fit()
    last = CheckpointManager(tmp_path).last()
    assert last is not None and last["epoch"] == 1
    assert any(line.startswith("FailsAfterEpoch failed: ZeroDivisionError; epoch 1's checkpoint is written first: ")
               for line in logged), logged
    summary = Trainer(api.load(demo_recipe, TINY + ["train.val_every=0"]), tmp_path, progress=False,
                      log=logged.append).fit(resume=True)
    assert summary["steps"] == 4 and CheckpointManager(tmp_path).last()["epoch"] == 2


def test_validation_failing_keeps_the_epochs_checkpoint(tmp_path, demo_recipe, monkeypatch):
    """Before: an image unreadable in validation ended the run after a whole epoch, with no checkpoint."""
    def unreadable(*_args, **_kwargs):
        raise DatasetError("cannot read image val/x.jpg")

    monkeypatch.setattr(hooks_mod, "evaluate", unreadable)
    logged = []
    trainer = after_one_epoch(api.load(demo_recipe, TINY + ["train.val_every=1"]), tmp_path, logged.append)
    with pytest.raises(DatasetError, match="val/x.jpg"):
        trainer.run_hooks("after_epoch")
    assert CheckpointManager(tmp_path).last()["epoch"] == 1
    assert any("Validation failed: DatasetError; epoch 1's checkpoint is written first" in line for line in logged)


def test_a_failing_checkpoint_is_not_tried_twice(tmp_path, demo_recipe, monkeypatch):
    calls = []

    def full_disk(trainer):
        calls.append(trainer.epoch)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hooks_mod, "save_checkpoint", full_disk)
    trainer = after_one_epoch(api.load(demo_recipe, TINY + ["train.val_every=0", "train.checkpoint_every=1"]),
                              tmp_path, lambda *_: None)
    with pytest.raises(OSError, match="No space left"):
        trainer.run_hooks("after_epoch")
    assert calls == [1]
