"""Data parallel on two real contexts (cpu:0, cpu:1) equals one device, and the training options checked by hand.

References are independent of the trainer's update code: one device on the same batch, and SGD, global
norm clipping, weight decay and the EMA recomputed here in numpy from the gradients autograd gives.
BatchNorm runs with frozen statistics (`model.norm.type=frozen`): with per-device batch statistics two
devices compute a different function, and SyncBatchNorm deadlocks on two CPU contexts in MXNet 1.9.1
(the trainer refuses it, tested below). (The kvstore, its watchdog and the launcher: distributed/.)
"""
import math

import numpy as np
import pytest

from gluon_yolo3 import api
from gluon_yolo3.engine.trainer import Trainer

# a constant learning rate (no warm-up, milestone far away) and SGD without momentum or decay unless a
# test asks for them: the hand references stay one line each
TINY = ["model.input_size=64", "data.train.image_size=64", "data.val.image_size=64",
        "data.train.num_images=24", "data.val.num_images=4", "data.num_workers=0",
        "train.batch_size=8", "train.epochs=1", "train.val_every=0", "model.norm.type=frozen",
        "train.lr=0.01", "train.lr_schedule={type: warmup_step, warmup_epochs: 0, milestones: [100]}",
        "train.optimizer={type: sgd, momentum: 0.0, wd: 0.0}"]
LR = 0.01


@pytest.fixture(scope="module")
def make_trainer(demo_recipe):
    """make_trainer(tmp_path, name, extra=(), devices="cpu:0") -> a set-up Trainer of the demo with TINY + extra."""
    def make_trainer(tmp_path, name, extra=(), devices="cpu:0"):
        recipe = api.load(demo_recipe, TINY + list(extra))
        trainer = Trainer(recipe, tmp_path / name, devices=devices, progress=False, log=lambda *_: None)
        trainer.setup()
        return trainer
    return make_trainer


def batches(trainer, count):
    trainer.sampler.set_epoch(0)
    out = []
    for batch in trainer.loader:
        out.append(batch)
        if len(out) == count:
            return out
    raise AssertionError("not enough batches")


def params(trainer, device=0):
    return {k: p.list_data()[device].asnumpy() for k, p in trainer.net._collect_params_with_prefix().items()}


def params_per_device(trainer):
    """structural name -> value on each device."""
    return {name: [d.asnumpy() for d in p.list_data()]
            for name, p in trainer.net._collect_params_with_prefix().items()}


def trainable(trainer):
    return [k for k, p in trainer.net._collect_params_with_prefix().items() if p.grad_req != "null"]


def grads(trainer):
    """name -> gradient summed over the trainer's devices (what the kvstore aggregates)."""
    return {name: sum(g.asnumpy() for g in p.list_grad())
            for name, p in trainer.net._collect_params_with_prefix().items() if p.grad_req != "null"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, make_trainer):
    """Weights before any step, the first batch, and the one-device gradient of the batch's mean loss."""
    one = make_trainer(tmp_path_factory.mktemp("ref"), "ref")
    batch = batches(one, 1)[0]
    w0 = params(one)
    one.compute_gradients(*batch)
    grads = {k: p.grad().asnumpy() for k, p in one.net._collect_params_with_prefix().items()
             if p.grad_req != "null"}
    return w0, batch, grads


# ---- two devices equal one -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pair(tmp_path_factory, make_trainer):
    tmp = tmp_path_factory.mktemp("multi")
    return make_trainer(tmp, "one"), make_trainer(tmp, "two", devices="cpu:0,cpu:1")


def test_same_start_and_same_batch(pair):
    one, two = pair
    for name, values in params_per_device(one).items():
        for v in params_per_device(two)[name]:
            np.testing.assert_array_equal(values[0], v, err_msg=name)
    b1, b2 = batches(one, 1)[0], batches(two, 1)[0]
    for a, b in zip(b1, b2):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())


def test_gradient_two_devices_equals_one_device(pair):
    one, two = pair
    batch = batches(one, 1)[0]
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


@pytest.mark.slow
def test_two_devices_equal_one_device_step_by_step(pair, tmp_path, make_trainer):
    """The same global batches of 8 through one device and through two. After one SGD step at lr 0.01 (the pair
    above, after its gradients were compared), every parameter, frozen BN statistics too, is alike on both devices
    and as on one device; after three steps with momentum and weight decay at lr 0.001, every trained weight is."""
    one, two = pair
    batch = batches(one, 1)[0]
    before = params(one)
    for trainer in pair:
        trainer.train_step(*batch)
    p1, p2 = params_per_device(one), params_per_device(two)
    changed = 0
    for name, (a,) in p1.items():
        b0, b1 = p2[name]
        np.testing.assert_array_equal(b0, b1, err_msg=f"{name}: devices disagree")
        np.testing.assert_allclose(b0, a, rtol=1e-4, atol=1e-6, err_msg=name)
        changed += int(not np.array_equal(a, before[name]))
    assert changed > 30  # the step really moved the weights

    extra = ["train.optimizer={type: sgd, momentum: 0.9, wd: 0.0005}", "train.lr=0.001"]
    one = make_trainer(tmp_path, "one", extra)
    two = make_trainer(tmp_path, "two", extra, devices="cpu:0,cpu:1")
    start = params(one)
    for batch in batches(one, 3):             # the same three global batches of 8
        one.train_step(*batch)
        two.train_step(*batch)
    a, b0, b1 = params(one), params(two, 0), params(two, 1)
    moved = 0
    for name in trainable(one):
        np.testing.assert_array_equal(b0[name], b1[name], err_msg=f"{name}: the two devices disagree")
        np.testing.assert_allclose(b0[name], a[name], rtol=1e-5, atol=1e-5, err_msg=name)
        moved += int(np.abs(a[name] - start[name]).max() > 1e-4)
    assert moved > 30                         # three real steps, not a no-op
    assert one.gluon_trainer.learning_rate == two.gluon_trainer.learning_rate == pytest.approx(0.001)


def test_clip_grad_norm_clips_the_summed_gradient_over_all_devices(tmp_path, reference, make_trainer):
    w0, batch, grads = reference
    norm = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads.values()))
    clip = norm / 4                            # clipping active: every gradient scaled by 1/4
    two = make_trainer(tmp_path, "clip", [f"train.clip_grad_norm={clip}"], devices="cpu:0,cpu:1")
    two.train_step(*batch)
    # the norm of the summed gradient; each tensor's squares are summed in float32 (multi_sum_sq): 1.7e-4 measured
    assert two.grad_norm == pytest.approx(norm, rel=1e-3)
    after = params(two)
    for device in (0, 1):
        after = params(two, device)
        for name, g in grads.items():
            expected = w0[name] - LR * g * (clip / two.grad_norm)      # scaled by clip over the norm it found
            np.testing.assert_allclose(after[name], expected, rtol=1e-4, atol=1e-6, err_msg=name)


def test_syncbn_on_cpu_contexts_is_refused_instead_of_deadlocking(tmp_path, demo_recipe):
    recipe = api.load(demo_recipe, TINY + ["model.norm.type=syncbn"])
    with pytest.raises(ValueError, match="syncbn on several CPU contexts deadlocks"):
        Trainer(recipe, tmp_path / "s", devices="cpu:0,cpu:1", progress=False)


# ---- the training options, by hand ---------------------------------------------------------------------

def test_no_weight_decay_on_biases_and_batchnorm(tmp_path, reference, make_trainer):
    w0, batch, grads = reference
    wd = 0.5
    decay_free = [k for k in grads if k.rsplit(".", 1)[-1] in ("bias", "gamma", "beta")]
    decayed = [k for k in grads if k.endswith(".weight")]
    assert len(decay_free) > 20 and len(decayed) > 10
    for flag, free_expected in (("true", True), ("false", False)):
        trainer = make_trainer(tmp_path, f"nbd_{flag}", [f"train.optimizer={{type: sgd, momentum: 0.0, wd: {wd}}}",
                                                       f"train.no_bias_decay={flag}"])
        trainer.train_step(*batch)
        after = params(trainer)
        for name in decayed:                  # SGD: w - lr * (g + wd * w)
            np.testing.assert_allclose(after[name], w0[name] - LR * (grads[name] + wd * w0[name]),
                                       rtol=1e-4, atol=1e-6, err_msg=name)
        for name in decay_free:
            decay = 0.0 if free_expected else wd
            np.testing.assert_allclose(after[name], w0[name] - LR * (grads[name] + decay * w0[name]),
                                       rtol=1e-4, atol=1e-6, err_msg=f"{name} (no_bias_decay={flag})")


@pytest.mark.parametrize("decay, warmup", [(0.5, 0), (0.9, 2)])
def test_ema_follows_the_weights_by_hand(tmp_path, decay, warmup, make_trainer):
    trainer = make_trainer(tmp_path, f"ema{warmup}", [f"train.ema={{decay: {decay}, warmup_steps: {warmup}}}",
                                                      "train.optimizer={type: sgd, momentum: 0.9, wd: 0.0}"])
    shadow = params(trainer)                  # the average starts at the initial weights
    for n, batch in enumerate(batches(trainer, 3), 1):
        trainer.train_step(*batch)
        d = decay * (1 - math.exp(-n / warmup)) if warmup else decay    # YOLOv5's ramp, or constant
        weights = params(trainer)
        shadow = {k: d * shadow[k] + (1 - d) * weights[k] for k in shadow}
    for name, value in shadow.items():
        np.testing.assert_allclose(trainer.ema.shadow[name].asnumpy(), value, rtol=1e-5, atol=1e-6, err_msg=name)
    assert any(not np.allclose(shadow[k], weights[k]) for k in trainable(trainer))   # really an average


def test_ema_weights_are_validated_and_saved(tmp_path, monkeypatch, demo_recipe):
    import mxnet as mx

    from gluon_yolo3.engine import hooks as trainer_module     # the validation hook evaluates
    seen = {}
    real_evaluate = trainer_module.evaluate

    def spy(net, *args, **kwargs):
        seen.update({k: p.data().asnumpy().copy() for k, p in net._collect_params_with_prefix().items()})
        return real_evaluate(net, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "evaluate", spy)
    recipe = api.load(demo_recipe, TINY + ["train.ema={decay: 0.5, warmup_steps: 0}",
                                           "train.val_every=1", "data.train.num_images=16"])
    trainer = Trainer(recipe, tmp_path / "run", progress=False, log=lambda *_: None)
    trainer.fit()
    ema = {k: s.asnumpy() for k, s in trainer.ema.shadow.items()}
    raw = params(trainer)                      # after fit the network holds its training weights again
    assert any(not np.allclose(ema[k], raw[k]) for k in trainable(trainer))
    folder = tmp_path / "run" / "checkpoints"
    for name, weights in (("best.params", ema), ("epoch_0001.params", ema), ("epoch_0001.train_params", raw),
                          ("validated", ema)):
        stored = seen if name == "validated" else {k: v.asnumpy() for k, v in mx.nd.load(str(folder / name)).items()}
        for k in weights:
            np.testing.assert_allclose(stored[k], weights[k], rtol=1e-6, atol=1e-7, err_msg=f"{name}: {k}")
    # what users evaluate from the run folder is the EMA
    net = api.load_detector(recipe, tmp_path / "run")
    np.testing.assert_allclose(net.collect_params()[next(iter(net.collect_params()))].data().asnumpy(),
                               ema[next(iter(ema))], rtol=1e-6)


def test_float16_amp_on_cpu_is_a_clear_error(tmp_path, demo_recipe):
    recipe = api.load(demo_recipe, TINY + ["train.amp=float16"])
    with pytest.raises(ValueError, match=r"train.amp: float16 needs GPU devices.*cpu\(0\)"):
        Trainer(recipe, tmp_path / "amp", progress=False)


def test_bad_option_values_name_the_key(tmp_path, demo_recipe):
    for override, message in (("train.clip_grad_norm=-1", "train.clip_grad_norm must be >= 0"),
                              ("train.ema={decay: 0.9, warmup: 5}", "unknown key 'train.ema.warmup'"),
                              ("train.ema={decay: 1.5}", r"train.ema.decay must be in \(0, 1\)")):
        recipe = api.load(demo_recipe, TINY + [override])
        with pytest.raises(ValueError, match=message):
            Trainer(recipe, tmp_path / "bad", progress=False)
