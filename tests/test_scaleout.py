"""Scale-out inside one machine: two devices equal one, and the training options checked by hand.

References are independent of the trainer's update code: one device on the same batch, and SGD, global
norm clipping, weight decay and the EMA recomputed here in numpy from the gradients autograd gives.
BatchNorm runs with frozen statistics (`model.norm.type=frozen`): with per-device batch statistics two
devices compute a different function, and SyncBatchNorm deadlocks on two CPU contexts in MXNet 1.9.1
(the trainer refuses it, tested below).
"""
import math

import numpy as np
import pytest

from gluon_yolo3 import api
from gluon_yolo3.distributed import kvstore as dist
from gluon_yolo3.distributed import launcher
from gluon_yolo3.engine.trainer import Trainer

# a constant learning rate (no warm-up, milestone far away) and SGD without momentum or decay unless a
# test asks for them: the hand references stay one line each
TINY = ["model.input_size=64", "data.train.image_size=64", "data.val.image_size=64",
        "data.train.num_images=24", "data.val.num_images=4", "data.num_workers=0",
        "train.batch_size=8", "train.epochs=1", "train.val_every=0", "model.norm.type=frozen",
        "train.lr=0.01", "train.lr_schedule={type: warmup_step, warmup_epochs: 0, milestones: [100]}",
        "train.optimizer={type: sgd, momentum: 0.0, wd: 0.0}"]
LR = 0.01


def make_trainer(tmp_path, name, extra=(), devices="cpu:0"):
    recipe = api.load("recipes/demo_tiny.yaml", TINY + list(extra))
    trainer = Trainer(recipe, tmp_path / name, devices=devices, progress=False, log=lambda *_: None)
    trainer.setup()
    return trainer


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


def trainable(trainer):
    return [k for k, p in trainer.net._collect_params_with_prefix().items() if p.grad_req != "null"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Weights before any step, the first batch, and the one-device gradient of the batch's mean loss."""
    one = make_trainer(tmp_path_factory.mktemp("ref"), "ref")
    batch = batches(one, 1)[0]
    w0 = params(one)
    one.compute_gradients(*batch)
    grads = {k: p.grad().asnumpy() for k, p in one.net._collect_params_with_prefix().items()
             if p.grad_req != "null"}
    return w0, batch, grads


def test_two_devices_equal_one_device_after_three_sgd_steps(tmp_path):
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


def test_clip_grad_norm_clips_the_summed_gradient_over_all_devices(tmp_path, reference):
    w0, batch, grads = reference
    norm = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads.values()))
    clip = norm / 4                            # clipping active: every gradient scaled by 1/4
    two = make_trainer(tmp_path, "clip", [f"train.clip_grad_norm={clip}"], devices="cpu:0,cpu:1")
    two.train_step(*batch)
    assert two.grad_norm.asscalar() == pytest.approx(norm, rel=1e-4)   # the norm of the summed gradient
    after = params(two)
    for device in (0, 1):
        after = params(two, device)
        for name, g in grads.items():
            expected = w0[name] - LR * g * (clip / norm)
            np.testing.assert_allclose(after[name], expected, rtol=1e-4, atol=1e-6, err_msg=name)


def test_no_weight_decay_on_biases_and_batchnorm(tmp_path, reference):
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
def test_ema_follows_the_weights_by_hand(tmp_path, decay, warmup):
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


def test_ema_weights_are_validated_and_saved(tmp_path, monkeypatch):
    import mxnet as mx

    from gluon_yolo3.engine import hooks as trainer_module     # the validation hook evaluates
    seen = {}
    real_evaluate = trainer_module.evaluate

    def spy(net, *args, **kwargs):
        seen.update({k: p.data().asnumpy().copy() for k, p in net._collect_params_with_prefix().items()})
        return real_evaluate(net, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "evaluate", spy)
    recipe = api.load("recipes/demo_tiny.yaml", TINY + ["train.ema={decay: 0.5, warmup_steps: 0}",
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


def test_amp_on_cpu_is_a_clear_error(tmp_path):
    recipe = api.load("recipes/demo_tiny.yaml", TINY + ["train.amp=float16"])
    with pytest.raises(ValueError, match=r"train.amp: float16 needs GPU devices.*cpu\(0\)"):
        Trainer(recipe, tmp_path / "amp", progress=False)
    recipe = api.load("recipes/demo_tiny.yaml", TINY + ["train.amp=bfloat16"])
    with pytest.raises(ValueError, match="bfloat16 AMP on CPU in MXNet 1.9.1 was measured slower"):
        Trainer(recipe, tmp_path / "amp", progress=False)


def test_syncbn_on_cpu_contexts_is_refused_instead_of_deadlocking(tmp_path):
    recipe = api.load("recipes/demo_tiny.yaml", TINY + ["model.norm.type=syncbn"])
    with pytest.raises(ValueError, match="syncbn on several CPU contexts deadlocks"):
        Trainer(recipe, tmp_path / "s", devices="cpu:0,cpu:1", progress=False)


def test_kvstore_choices(tmp_path, monkeypatch):
    recipe = api.load("recipes/demo_tiny.yaml", TINY)
    with pytest.raises(ValueError, match="'dist_async' is not supported.*asynchronous"):
        Trainer(recipe, tmp_path / "k", kvstore="dist_async", progress=False)
    monkeypatch.delenv("DMLC_ROLE", raising=False)
    trainer = Trainer(recipe, tmp_path / "k", kvstore="dist_sync", progress=False, log=lambda *_: None)
    with pytest.raises(dist.DistributedError, match="gluon-yolo3 launch --workers N"):
        trainer.setup()


def test_bad_option_values_name_the_key(tmp_path):
    for override, message in (("train.clip_grad_norm=-1", "train.clip_grad_norm must be >= 0"),
                              ("train.ema={decay: 0.9, warmup: 5}", "unknown key 'train.ema.warmup'"),
                              ("train.ema={decay: 1.5}", r"train.ema.decay must be in \(0, 1\)")):
        recipe = api.load("recipes/demo_tiny.yaml", TINY + [override])
        with pytest.raises(ValueError, match=message):
            Trainer(recipe, tmp_path / "bad", progress=False)


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


def test_hosts_file_and_ssh_command(tmp_path):
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("# the cluster\nnode1\nalice@node2:2222   # second\n\n")
    parsed = launcher.read_hosts(hosts)
    assert [(h.address, h.name, h.port) for h in parsed] == [("node1", "node1", None),
                                                             ("alice@node2", "node2", 2222)]
    job = launcher.Job(launcher.worker_command(["train", "r.yaml", "--set", "a=1 b"], "dist_sync"), workers=3,
                       servers=1, hosts=parsed, python="/opt/py/bin/python", root_uri="10.0.0.1", port=9000,
                       cwd="/work dir", env={"OMP_NUM_THREADS": "4"})
    job.heartbeat = type("HB", (), {"address": "10.0.0.1:9001"})()
    worker1 = [n for n in job.nodes if n.role == "worker"][1]
    argv = job.ssh_argv(worker1)
    assert argv[:6] == ["ssh", "-o", "BatchMode=yes", "-p", "2222", "alice@node2"]
    remote = argv[6]
    assert remote.startswith("cd '/work dir' && env ")
    for assignment in ("OMP_NUM_THREADS=4", "DMLC_ROLE=worker", "DMLC_PS_ROOT_URI=10.0.0.1", "DMLC_PS_ROOT_PORT=9000",
                       "DMLC_NUM_SERVER=1", "DMLC_NUM_WORKER=3", "DMLC_NODE_HOST=node2",
                       "GLUON_YOLO3_HEARTBEAT=10.0.0.1:9001", "GLUON_YOLO3_NODE=worker:1"):
        assert f" {assignment} " in remote, assignment
    assert remote.endswith("/opt/py/bin/python -m gluon_yolo3.commands.node --node worker:1 -- train r.yaml "
                           "--set 'a=1 b' --kvstore dist_sync")
    assert [n.host.name if n.host else "local" for n in job.nodes] == ["local", "node1", "node1", "node2", "node1"]

    bad = tmp_path / "bad.txt"
    bad.write_text("node1\nnode2 node3\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: one host per line"):
        launcher.read_hosts(bad)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        launcher.read_hosts(tmp_path / "missing.txt")


def test_worker_command():
    assert launcher.worker_command(["train", "r.yaml"], "dist_sync") == ["train", "r.yaml", "--kvstore", "dist_sync"]
    assert launcher.worker_command(["train", "r.yaml", "--kvstore=dist_device_sync"], "dist_sync")[-1] == \
        "--kvstore=dist_device_sync"
    assert launcher.worker_command(["loop.py", "x"], "dist_sync") == ["loop.py", "x"]
    with pytest.raises(ValueError, match="workers run `train RECIPE"):
        launcher.worker_command(["eval", "r.yaml"], "dist_sync")
    with pytest.raises(ValueError, match="--kvstore must be a dist kvstore"):
        launcher.launch(["train", "r.yaml"], workers=2, kvstore="device")
