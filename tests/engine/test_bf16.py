"""bfloat16 training (`train.amp: bfloat16`): convolutions in bfloat16 on float32 master weights. Its gradients
against float32's on the same batch, float32 weights and checkpoints, an exact resume, two devices equal to
one, and the clear error on a CPU without bfloat16 (fake CPU flags). bfloat16 inference: eval, export."""
import json

import mxnet as mx
import numpy as np
import pytest

from gluon_yolo3 import amx, api
from gluon_yolo3.engine import checkpoint as ckpt
from gluon_yolo3.engine.builders import amp_type
from gluon_yolo3.engine.trainer import Trainer
from gluon_yolo3.models.precision import inference_dtype

pytestmark = pytest.mark.skipif(amx.cpu_bf16() is None, reason="this CPU has no bfloat16 (amx_bf16, avx512_bf16)")

# frozen BatchNorm statistics and a constant learning rate: the hand references stay simple (as test_multidevice)
TINY = ["model.input_size=64", "data.train.image_size=64", "data.val.image_size=64",
        "data.train.num_images=16", "data.val.num_images=4", "data.num_workers=0",
        "train.batch_size=8", "train.epochs=1", "train.val_every=0", "train.lr=0.01",
        "train.lr_schedule={type: warmup_step, warmup_epochs: 0, milestones: [100]}"]
BF16 = ["train.amp=bfloat16"]


def quiet(*_args, **_kwargs):
    pass


def trainer_for(recipe_path, tmp_path, name, extra=(), devices="cpu:0"):
    trainer = Trainer(api.load(recipe_path, TINY + list(extra)), tmp_path / name, devices=devices, progress=False,
                      log=quiet)
    trainer.setup()
    return trainer


def first_batch(trainer):
    trainer.sampler.set_epoch(0)
    return next(iter(trainer.loader))


def grads(trainer, device=0):
    return {n: p.list_grad()[device].asnumpy() for n, p in zip(trainer.trainable_names, trainer.trainable)}


# the demo's yolov3-tiny (13 conv layers), and yolov4-tiny's CSP trunk (21: its channel splits) with the grid
# sensitivity, each with (least cosine, largest relative error). The error grows smoothly with the depth below the
# loss, from 0.5 % at the head to 13.5 % at the CSP trunk's first convolutions and 18.6 % (cosine 0.987) at one of
# its BatchNorm gammas (measured); a wrong channel split or a bfloat16 kernel gone wrong leaves no cosine near 1
TRUNKS = {"darknet_tiny": ([], 0.99, 0.1),
          "csp_darknet_tiny": (["model.backbone={type: csp_darknet_tiny, width: 0.5}", "model.scale_x_y=1.05"],
                               0.98, 0.25)}


@pytest.mark.parametrize("trunk", sorted(TRUNKS))
def test_a_bfloat16_steps_gradients_follow_float32s(trunk, demo_recipe, tmp_path):
    """bfloat16 keeps 8 bits of mantissa (a relative rounding of 2^-9 per value), and the error grows through the
    network's 13 to 21 layers of rounded activations and their rounded gradients: each tensor's gradient must point
    where float32's does (cosine > 0.99 for 13 layers, 0.98 for 21) within 10 % (25 %) of its norm, and the loss
    terms agree within 1 %."""
    extra, least_cosine, tolerance = TRUNKS[trunk]
    sets = ["model.norm.type=frozen"] + extra
    fp32 = trainer_for(demo_recipe, tmp_path, "fp32", sets)
    bf16 = trainer_for(demo_recipe, tmp_path, "bf16", sets + BF16)
    for name, p in bf16.net._collect_params_with_prefix().items():      # the same weights
        p.set_data(fp32.net._collect_params_with_prefix()[name].data())
    batch = first_batch(fp32)
    terms32, terms16 = fp32.compute_gradients(*batch), bf16.compute_gradients(*batch)
    np.testing.assert_allclose(terms16, terms32, rtol=0.01)
    g32, g16 = grads(fp32), grads(bf16)
    assert all(g.dtype == np.float32 for g in g16.values())
    for name in g32:
        a, b = g32[name].ravel(), g16[name].ravel()
        cosine = a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30)
        assert cosine > least_cosine, (name, cosine)
        assert np.linalg.norm(a - b) <= tolerance * np.linalg.norm(a) + 1e-12, name
    convs = [b for b in bf16.net.backbone._children.values()][0]
    assert convs[0].conv.compute_dtype == "bfloat16"


def test_master_weights_and_checkpoints_stay_float32(demo_recipe, tmp_path):
    trainer = Trainer(api.load(demo_recipe, TINY + BF16 + ["train.epochs=2"]), tmp_path, progress=False, log=quiet)
    trainer.fit()
    assert {p.data().dtype for p in trainer.net.collect_params().values()} == {np.float32}
    for path in (tmp_path / "checkpoints").glob("*.params"):
        assert {a.dtype for a in mx.nd.load(str(path)).values()} == {np.float32}, path.name
    states = mx.nd.load(str(ckpt.CheckpointManager(tmp_path).last()["states"]))
    assert {a.dtype for a in states.values()} == {np.float32}
    assert api.load(tmp_path / "recipe.yaml")["train"]["amp"] == "bfloat16"


def test_resume_in_bfloat16_is_exact(demo_recipe, tmp_path, monkeypatch):
    recipe = api.load(demo_recipe, TINY + BF16 + ["train.epochs=2", "train.optimizer={type: sgd, momentum: 0.9}"])
    straight = Trainer(recipe, tmp_path / "straight", progress=False, log=quiet)
    straight.fit()
    real_save = ckpt.CheckpointManager.save

    def save_then_stop(self, net, trainer, epoch, *args, **kwargs):
        path = real_save(self, net, trainer, epoch, *args, **kwargs)
        if epoch == 1:
            raise KeyboardInterrupt("stopped after epoch 1")
        return path
    monkeypatch.setattr(ckpt.CheckpointManager, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        Trainer(recipe, tmp_path / "resumed", progress=False, log=quiet).fit()
    monkeypatch.setattr(ckpt.CheckpointManager, "save", real_save)
    resumed = Trainer(recipe, tmp_path / "resumed", progress=False, log=quiet)
    resumed.fit(resume=True)
    for name, p in straight.net._collect_params_with_prefix().items():
        np.testing.assert_array_equal(resumed.net._collect_params_with_prefix()[name].data().asnumpy(),
                                      p.data().asnumpy(), err_msg=name)


def test_two_contexts_equal_one_in_bfloat16(demo_recipe, tmp_path):
    """Each device rounds its half's weight gradient to bfloat16 before the float32 sum, one device rounds the
    whole: the same within the rounding of a sum of two (2 x 2^-9 of the larger terms), taken as 2 % of the norm."""
    one = trainer_for(demo_recipe, tmp_path, "one", ["model.norm.type=frozen"] + BF16)
    two = trainer_for(demo_recipe, tmp_path, "two", ["model.norm.type=frozen"] + BF16, devices="cpu:0,cpu:1")
    for name, p in two.net._collect_params_with_prefix().items():
        p.set_data(one.net._collect_params_with_prefix()[name].data())
    batch = first_batch(one)
    np.testing.assert_allclose(two.compute_gradients(*batch), one.compute_gradients(*batch), rtol=1e-3)
    two.gluon_trainer.allreduce_grads()
    g1, g2a, g2b = grads(one), grads(two, 0), grads(two, 1)
    for name in g1:
        np.testing.assert_array_equal(g2a[name], g2b[name], err_msg=name)      # both devices hold the one sum
        assert np.linalg.norm(g2a[name] - g1[name]) <= 0.02 * np.linalg.norm(g1[name]) + 1e-12, name


def test_a_cpu_without_bfloat16_gets_a_clear_error(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_vnni\n")
    monkeypatch.setattr(amx, "CPUINFO", info)
    with pytest.raises(ValueError, match="amx_bf16 or avx512_bf16") as err:
        amp_type("bfloat16", [mx.cpu()])
    assert "train.amp to null" in str(err.value)
    with pytest.raises(ValueError, match="--precision bfloat16 needs a CPU with amx_bf16 or avx512_bf16"):
        inference_dtype("bfloat16")
    assert inference_dtype("float32") is None and inference_dtype(None) is None
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n")
    assert inference_dtype("bfloat16") == "bfloat16"
    assert amp_type("bfloat16", [mx.cpu()]) == "bfloat16"
    with pytest.raises(ValueError, match="float16 needs GPU"):
        amp_type("float16", [mx.cpu()])


def test_amp_auto_is_bfloat16_only_on_cpus_that_run_it(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    monkeypatch.setattr(amx, "CPUINFO", info)
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_vnni\n")
    logged = []
    assert amp_type("auto", [mx.cpu()], logged.append) is None                   # float32, no error
    assert logged == ["train.amp auto: float32 (bfloat16 needs CPU devices with amx_bf16 or avx512_bf16)"]
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f amx_tile amx_bf16\n")
    assert amp_type("auto", [mx.cpu(0), mx.cpu(1)], logged.append) == "bfloat16"
    assert logged[-1] == "train.amp auto: bfloat16"
    assert amp_type("auto", [mx.gpu(0)]) is None                                 # never float16 by itself


def test_bfloat16_inference_eval_reports_the_delta_and_exports(trained_demo, invoke, demo_sets, tmp_path):
    recipe, run = trained_demo
    sets = sum([["--set", s] for s in demo_sets], [])
    result = invoke("eval", recipe["_file_"], "--weights", run, "--precision", "bfloat16", "--no-progress",
                    "--json", tmp_path / "bf16.json", "--report", tmp_path / "r", *sets)
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("mAP (voc07): fp32"))
    fp32, bf16, delta = float(line.split()[3]), float(line.split()[5]), float(line.split()[7])
    assert line.split()[4] == "bfloat16" and abs(delta) < 0.02 and fp32 > 0.2
    assert json.loads((tmp_path / "bf16.json").read_text())["precision"] == "bfloat16"
    out = tmp_path / "export"
    result = invoke("export", recipe["_file_"], "--weights", run, "--format", "mxnet", "--precision", "bfloat16",
                    "--out", out, *sum([["--set", s] for s in demo_sets], []))
    assert result.exit_code == 0, result.output
    assert json.loads((out / "deploy.json").read_text())["precision"] == "bfloat16"
    assert "amp_cast" in (out / "model-symbol.json").read_text()
    result = invoke("eval", recipe["_file_"], "--weights", run, "--deployed", out, "--no-progress",
                    "--report", tmp_path / "r2", *sum([["--set", s] for s in demo_sets], []))
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("mAP (voc07): fp32"))
    assert line.split()[4] == "mxnet-bf16" and float(line.split()[5]) == pytest.approx(bf16, abs=1e-4)
