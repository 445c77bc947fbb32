"""The kvstore choices a trainer accepts, and the watchdog that stops a worker waiting on a dead job (no job is
started here: distributed/test_dist.py and test_faults.py run real ones)."""
import pytest

from gluon_yolo3 import api
from gluon_yolo3.distributed import kvstore as dist
from gluon_yolo3.engine.trainer import Trainer

# the recipe of the scale-out tests (engine/test_multidevice.py): a small demo, frozen BatchNorm, plain SGD
TINY = ["model.input_size=64", "data.train.image_size=64", "data.val.image_size=64",
        "data.train.num_images=24", "data.val.num_images=4", "data.num_workers=0",
        "train.batch_size=8", "train.epochs=1", "train.val_every=0", "model.norm.type=frozen",
        "train.lr=0.01", "train.lr_schedule={type: warmup_step, warmup_epochs: 0, milestones: [100]}",
        "train.optimizer={type: sgd, momentum: 0.0, wd: 0.0}"]


def test_kvstore_choices(tmp_path, monkeypatch, demo_recipe):
    recipe = api.load(demo_recipe, TINY)
    with pytest.raises(ValueError, match="'dist_async' is not supported.*asynchronous"):
        Trainer(recipe, tmp_path / "k", kvstore="dist_async", progress=False)
    monkeypatch.delenv("DMLC_ROLE", raising=False)
    trainer = Trainer(recipe, tmp_path / "k", kvstore="dist_sync", progress=False, log=lambda *_: None)
    with pytest.raises(dist.DistributedError, match="gluon-yolo3 launch --workers N"):
        trainer.setup()


def test_watchdog_fires_only_on_a_long_wait():
    import threading
    import time
    fired = []
    event = threading.Event()
    dog = dist.Watchdog(0.4, on_expire=lambda message: (fired.append(message), event.set()), poll=0.05)
    with dog.guard("step 1"):
        time.sleep(0.1)
    time.sleep(0.6)
    assert fired == []
    with dog.guard("step 2 (epoch 1)"):
        assert event.wait(5)
    assert len(fired) == 1 and "no progress for 0.4 s during step 2 (epoch 1)" in fired[0]
