"""Data parallel on two real contexts (cpu:0, cpu:1) equals one device on the same batch.

BatchNorm runs with frozen statistics here (`model.norm.type=frozen`): with per-device batch statistics
the two layouts compute different functions, so only frozen (or synchronised) BN makes them comparable.
"""
import numpy as np
import pytest

from gluon_yolo3 import api
from gluon_yolo3.engine.trainer import Trainer

TINY = ["model.input_size=64", "data.train.image_size=64", "data.val.image_size=64",
        "data.train.num_images=8", "data.val.num_images=4", "data.num_workers=0",
        "train.batch_size=4", "train.epochs=1", "model.norm.type=frozen", "train.lr=0.01"]


def make_trainer(tmp_path, devices, name):
    recipe = api.load("recipes/demo_tiny.yaml", TINY)
    trainer = Trainer(recipe, tmp_path / name, devices=devices, progress=False, log=lambda *_: None)
    trainer.setup()
    return trainer


def first_batch(trainer):
    trainer.sampler.set_epoch(0)
    return next(iter(trainer.loader))


def grads(trainer):
    """name -> gradient summed over the trainer's devices (what the kvstore aggregates)."""
    return {name: sum(g.asnumpy() for g in p.list_grad())
            for name, p in trainer.net._collect_params_with_prefix().items() if p.grad_req != "null"}


def params(trainer):
    """structural name -> value on each device."""
    return {name: [d.asnumpy() for d in p.list_data()]
            for name, p in trainer.net._collect_params_with_prefix().items()}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multi")
    return make_trainer(tmp, "cpu:0", "one"), make_trainer(tmp, "cpu:0,cpu:1", "two")


def test_same_start_and_same_batch(pair):
    one, two = pair
    for name, values in params(one).items():
        for v in params(two)[name]:
            np.testing.assert_array_equal(values[0], v, err_msg=name)
    b1, b2 = first_batch(one), first_batch(two)
    for a, b in zip(b1, b2):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())


def test_gradient_two_devices_equals_one_device(pair):
    one, two = pair
    batch = first_batch(one)
    terms_one = one.compute_gradients(*batch)
    terms_two = two.compute_gradients(*batch)
    np.testing.assert_allclose(terms_one, terms_two, rtol=1e-5)
    g1, g2 = grads(one), grads(two)
    assert len(g1) > 30
    # a real gradient, not zeros
    assert sum(float(np.abs(g).sum()) for g in g1.values()) > 0
    for name in g1:
        scale = max(float(np.abs(g1[name]).max()), 1e-6)
        np.testing.assert_allclose(g2[name] / scale, g1[name] / scale, atol=1e-5, err_msg=name)


def test_one_step_updates_both_devices_identically(pair):
    one, two = pair
    batch = first_batch(one)
    before = params(one)
    for trainer in pair:
        trainer.train_step(*batch)
    p1, p2 = params(one), params(two)
    changed = 0
    for name, (a,) in p1.items():
        b0, b1 = p2[name]
        np.testing.assert_array_equal(b0, b1, err_msg=f"{name}: devices disagree")
        np.testing.assert_allclose(b0, a, rtol=1e-4, atol=1e-6, err_msg=name)
        changed += int(not np.array_equal(a, before[name][0]))
    assert changed > 30  # the step really moved the weights
