"""Training hooks: the built-ins run in priority order, a recipe's train.hooks adds a plugin's hook, and the
example plugin (early stopping) ends a run after the epoch it decides, checkpointed."""
import json

import pytest

from gluon_yolo3 import api
from gluon_yolo3.engine.hooks import HookBase
from gluon_yolo3.engine.trainer import Trainer
from gluon_yolo3.registry import HOOKS, RegistryError

TINY = ["model.input_size=64", "data.train.image_size=64", "data.val.image_size=64", "data.num_workers=0",
        "data.train.num_images=16", "data.val.num_images=4", "train.batch_size=8", "train.lr=0.01"]
EVENTS = []


@HOOKS.register("test_recorder", override=True)
class Recorder(HookBase):
    """Records what the trainer tells hooks (a test hook)."""

    priority = 60

    def before_train(self):
        EVENTS.append(("before_train", self.trainer.epoch, self.trainer.step))

    def after_step(self):
        EVENTS.append(("after_step", self.trainer.epoch, self.trainer.step, len(self.trainer.last_terms)))

    def after_epoch(self):
        EVENTS.append(("after_epoch", self.trainer.epoch, self.trainer.last_val is not None))

    def after_train(self):
        EVENTS.append(("after_train", self.trainer.epoch, self.trainer.step))


def quiet(*_args, **_kwargs):
    pass


@pytest.mark.slow
def test_a_recipe_hook_sees_every_step_and_epoch_after_the_builtins(tmp_path, demo_recipe):
    EVENTS.clear()
    recipe = api.load(demo_recipe, TINY + ["train.epochs=2", "train.val_every=1",
                                           "train.hooks=[{type: test_recorder}]"])
    trainer = Trainer(recipe, tmp_path, progress=False, log=quiet)
    trainer.fit()
    assert EVENTS[0] == ("before_train", 0, 0)
    assert [e for e in EVENTS if e[0] == "after_step"] == [("after_step", 0, 1, 4), ("after_step", 0, 2, 4),
                                                            ("after_step", 1, 3, 4), ("after_step", 1, 4, 4)]
    assert [e for e in EVENTS if e[0] == "after_epoch"] == [("after_epoch", 1, True), ("after_epoch", 2, True)]
    assert EVENTS[-1] == ("after_train", 2, 4)
    names = [type(h).__name__ for h in trainer.hooks]
    assert names == ["MetricsWriter", "Validation", "Recorder", "PeriodicCheckpoint", "TrainingPlot",
                     "PredictionPreviews"]


def test_an_unknown_hook_is_named(tmp_path, demo_recipe):
    recipe = api.load(demo_recipe, TINY + ["train.hooks=[{type: early_stoping}]"])
    with pytest.raises(RegistryError, match=r"train.hooks.0: HOOKS: unknown type 'early_stoping'"):
        Trainer(recipe, tmp_path, progress=False, log=quiet).fit()


@pytest.mark.slow
def test_the_early_stopping_plugin_ends_the_run_checkpointed(tmp_path, elsewhere, demo_recipe, repo):
    recipe = tmp_path / "stop.yaml"
    recipe.write_text(f"_base_: {demo_recipe}\nplugins: [{repo / 'plugins/early_stopping.py'}]\n"
                      "train:\n  epochs: 6\n  val_every: 1\n  checkpoint_every: 5\n"
                      "  hooks: [{type: early_stopping, patience: 1, min_delta: 1.0}]\n")
    summary = api.train(api.load(recipe, TINY), workdir=str(tmp_path / "run"), progress=False, log=quiet)
    # the first validation sets the best; no later one can beat it by 1.0: it stops after epoch 2
    assert summary["steps"] == 4 and "early stopping" in summary["stopped"]
    folder = tmp_path / "run" / "checkpoints"
    assert json.loads((folder / "last.json").read_text())["epoch"] == 2    # the stopping epoch is saved
    vals = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()
            if json.loads(line)["kind"] == "val"]
    assert [v["epoch"] for v in vals] == [1, 2]
