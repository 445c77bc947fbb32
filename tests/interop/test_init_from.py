"""`train.init_from`: a run starts from weights of ours, Darknet's or GluonCV's. Tensors that match by role and
shape equal the source's; the head's rows for another class list are copied by class name; the decoder's anchors
stay the recipe's; another architecture is refused naming the tensor; `train.freeze` holds modules still."""
import json
import warnings

import mxnet as mx
import numpy as np
import pytest

from gluon_yolo3 import api
from gluon_yolo3.engine.builders import build_model
from gluon_yolo3.engine.trainer import Trainer
from gluon_yolo3.engine.warm_start import read_source, warm_start
from gluon_yolo3.inference.weights import CheckpointError
from gluon_yolo3.interop.darknet.jobs import load_darknet

TINY = ["model.input_size=64", "data.train.image_size=64", "data.val.image_size=64", "data.num_workers=0",
        "data.train.num_images=16", "data.val.num_images=4", "train.batch_size=8", "train.val_every=0",
        "train.lr=0.01", "train.epochs=1"]


def quiet(*_args, **_kwargs):
    pass


def params(net):
    return {k: p.data().asnumpy() for k, p in net._collect_params_with_prefix().items()}


def head_rows(weight, anchors, classes, field):
    """The rows of one field (0..4 box and objectness, 5 + k class k) for every anchor of a head weight."""
    width = 5 + classes
    return np.stack([weight[a * width + field] for a in range(anchors)])


@pytest.fixture(scope="module")
def shapes_run(demo_recipe, tmp_path_factory):
    """A tiny demo model of other classes (circle, square, triangle), trained one epoch: a run folder."""
    run = tmp_path_factory.mktemp("shapes") / "run"
    Trainer(api.load(demo_recipe, TINY), run, progress=False, log=quiet).fit()
    return run


def test_our_run_folder_loads_by_role_and_copies_head_rows_by_class_name(shapes_run, demo_recipe, tmp_path):
    recipe = api.load(demo_recipe, TINY + [
        f"train.init_from={shapes_run}",
        "model.anchors=[[[10, 10], [20, 20], [30, 30]], [[40, 40], [50, 50], [60, 60]]]"])
    source = params(api.load_detector(api.load(demo_recipe, TINY), shapes_run, hybridize=False))
    net = build_model(recipe, ["triangle", "star", "circle"], [mx.cpu()])
    fresh = params(net)
    report = warm_start(net, read_source(shapes_run), ["triangle", "star", "circle"], recipe)
    got = params(net)
    for name, value in source.items():
        if name.startswith(("backbone.", "neck.")):
            np.testing.assert_array_equal(got[name], value, err_msg=name)
    for name in ("decoder.anchors0", "decoder.anchors1"):          # the recipe's anchors, not the source's
        np.testing.assert_array_equal(got[name], fresh[name])
        assert not np.array_equal(got[name], source[name])
    src, dst = source["head.outputs.0.weight"], got["head.outputs.0.weight"]
    for field in range(5):                                         # box and objectness rows
        np.testing.assert_array_equal(head_rows(dst, 3, 3, field), head_rows(src, 3, 3, field))
    np.testing.assert_array_equal(head_rows(dst, 3, 3, 5 + 0), head_rows(src, 3, 3, 5 + 2))   # triangle
    np.testing.assert_array_equal(head_rows(dst, 3, 3, 5 + 2), head_rows(src, 3, 3, 5 + 0))   # circle
    np.testing.assert_array_equal(head_rows(dst, 3, 3, 5 + 1),
                                  head_rows(fresh["head.outputs.0.weight"], 3, 3, 5 + 1))     # star: fresh
    assert report["classes_copied"] == ["triangle", "circle"] and report["reinitialised"] == 4
    assert report["by_module"]["decoder"] == {"kept from the recipe": 2}


def test_the_same_classes_load_the_head_unchanged_and_a_run_reports_it(shapes_run, demo_recipe, tmp_path):
    logged = []
    trainer = Trainer(api.load(demo_recipe, TINY + [f"train.init_from={shapes_run}"]), tmp_path / "run",
                      progress=False, log=logged.append)
    trainer.setup()
    source = params(api.load_detector(api.load(demo_recipe, TINY), shapes_run, hybridize=False))
    got = params(trainer.net)
    for name in source:
        if not name.startswith("decoder."):
            np.testing.assert_array_equal(got[name], source[name], err_msg=name)
    assert any(line.startswith("train.init_from") and "59 tensors loaded, 0 re-initialised" in line
               for line in logged), logged
    report = json.loads((tmp_path / "run" / "init_from.json").read_text())
    assert report["loaded"] == 59 and report["by_module"]["head"] == {"loaded": 4}


def test_another_architecture_is_refused_naming_the_tensor(shapes_run, demo_recipe):
    recipe = api.load(demo_recipe, TINY + ["model.backbone.width=1.0", "model.neck.width=1.0"])
    net = build_model(recipe, ["circle", "square", "triangle"], [mx.cpu()])
    with pytest.raises(CheckpointError, match=r"'backbone.body16.0.conv.weight' has shape \(8, 3, 3, 3\) there, "
                                              r"\(16, 3, 3, 3\) here"):
        warm_start(net, read_source(shapes_run), ["circle", "square", "triangle"], recipe)


def test_darknet_weights_with_their_cfg(tmp_path, demo_recipe, random_weights, small_cfg, write_darknet_weights):
    cfg = small_cfg("yolov3-tiny", 64, tmp_path)
    weights = tmp_path / "yolov3-tiny.weights"
    write_darknet_weights(weights, random_weights(cfg.read_text(), np.random.default_rng(3)))
    _, reference, _ = load_darknet(cfg, weights)                  # 80 COCO classes
    recipe = api.load(demo_recipe, ["model.backbone.width=1.0", "model.neck.width=1.0", "model.input_size=64",
                                    "model.norm.eps=1.0e-6", "data.mean=[0, 0, 0]", "data.std=[1, 1, 1]"])
    classes = ["dog", "zebra", "not in coco"]
    net = build_model(recipe, classes, [mx.cpu()])
    report = warm_start(net, read_source(weights), classes, recipe)
    src, got = params(reference), params(net)
    for name in src:
        if name.startswith(("backbone.", "neck.")):
            np.testing.assert_array_equal(got[name], src[name], err_msg=name)
    w_src, w_got = src["head.outputs.1.weight"], got["head.outputs.1.weight"]
    np.testing.assert_array_equal(head_rows(w_got, 3, 3, 5 + 0), head_rows(w_src, 3, 80, 5 + 16))   # dog
    np.testing.assert_array_equal(head_rows(w_got, 3, 3, 5 + 1), head_rows(w_src, 3, 80, 5 + 22))   # zebra
    np.testing.assert_array_equal(head_rows(w_got, 3, 3, 4), head_rows(w_src, 3, 80, 4))            # objectness
    assert report["classes_copied"] == ["dog", "zebra"] and report["feed_differences"] == []
    assert report["source"].startswith("Darknet yolov3-tiny.weights")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "yolov3-tiny.weights").write_bytes(weights.read_bytes())
    with pytest.raises(FileNotFoundError, match="train.init_cfg"):
        read_source(tmp_path / "other" / "yolov3-tiny.weights")
    assert read_source(tmp_path / "other" / "yolov3-tiny.weights", cfg=str(cfg)).classes[16] == "dog"


def test_a_gluoncv_network(tmp_path, recipes):
    from gluoncv.model_zoo import get_model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gnet = get_model("yolo3_mobilenet0.25_voc", pretrained_base=False)
        gnet.initialize()
        gnet(mx.nd.zeros((1, 3, 64, 64)))
    path = tmp_path / "yolo3_mobilenet0.25_voc.params"
    gnet.save_parameters(str(path))
    source = read_source(path)
    assert source.classes[:3] == ["aeroplane", "bicycle", "bird"] and "GluonCV" in source.description
    recipe = api.load(recipes / "gluoncv_mobilenet1.0_voc.yaml", [
        "model.backbone.type=mobilenet0.25", "model.neck={type: yolov3_gluoncv, widths: [128, 128, 256]}",
        "model.input_size=64"])
    classes = ["cat", "dog"]
    net = build_model(recipe, classes, [mx.cpu()])
    report = warm_start(net, source, classes, recipe)
    got = params(net)
    for name, value in source.arrays.items():
        if name.startswith(("backbone.", "neck.")):
            np.testing.assert_array_equal(got[name], value.asnumpy(), err_msg=name)
    src = source.arrays["head.outputs.2.weight"].asnumpy()
    np.testing.assert_array_equal(head_rows(got["head.outputs.2.weight"], 3, 2, 5 + 1),
                                  head_rows(src, 3, 20, 5 + source.classes.index("dog")))
    assert report["classes_copied"] == ["cat", "dog"]


def test_freeze_holds_the_backbone_and_its_batchnorm_statistics_then_thaws(demo_recipe, tmp_path):
    schedule = "train.lr_schedule={type: warmup_step, warmup_epochs: 0, milestones: [100]}"
    recipe = api.load(demo_recipe, TINY + ["train.epochs=2", "train.freeze={modules: [backbone], epochs: 1}",
                                           "data.train.num_images=8", "train.optimizer={type: sgd, momentum: 0.0}",
                                           schedule])
    trainer = Trainer(recipe, tmp_path / "run", progress=False, log=quiet)
    trainer.setup()
    trainer.setup = lambda: None
    before = params(trainer.net)
    seen = {}
    real = trainer.run_hooks

    def spy(stage):
        real(stage)
        if stage == "after_epoch" and trainer.epoch == 1:
            seen.update(params(trainer.net))
    trainer.run_hooks = spy
    trainer.fit()
    after = params(trainer.net)
    backbone = [k for k in before if k.startswith("backbone.")]
    assert any(k.endswith("running_mean") for k in backbone)
    for name in backbone:                                         # epoch 1: frozen, statistics too
        np.testing.assert_array_equal(seen[name], before[name], err_msg=name)
    assert not np.array_equal(seen["neck.tip16.conv.weight"], before["neck.tip16.conv.weight"])
    assert not np.array_equal(after["backbone.body16.0.conv.weight"], seen["backbone.body16.0.conv.weight"])
    assert not np.array_equal(after["backbone.body16.0.bn.running_mean"], seen["backbone.body16.0.bn.running_mean"])


def test_decoding_with_the_sources_anchors_is_the_fine_tuning_trap(trained_demo):
    """Why the decoder's anchors are never taken from a source: the same weights decoded with anchors other than
    the ones their targets were encoded with lose most of their mAP (a fine-tune loaded every tensor of an imported
    COCO model, anchors included: its losses fell while its mAP stayed near zero)."""
    from gluon_yolo3.data.build import build_datasets
    from gluon_yolo3.data.feed import InputSpec
    from gluon_yolo3.evaluation.runner import evaluate
    recipe, run = trained_demo
    classes = api.class_names(recipe, run)
    val = build_datasets(recipe, ("val",), classes)["val"]
    maps = []
    twice = [[[2 * w, 2 * h] for w, h in group] for group in recipe["model"]["anchors"]]   # another source's
    for anchors in (recipe["model"]["anchors"], twice):
        net = api.load_detector(recipe, run, fuse=False, hybridize=False)
        for s, group in enumerate(anchors):
            getattr(net.decoder, f"anchors{s}").set_data(mx.nd.array(np.reshape(group, (1, 1, 1, -1, 2))))
        maps.append(evaluate(net, val, recipe, InputSpec.from_recipe(recipe, classes), [mx.cpu()],
                             progress=False)[0]["map"])
    assert maps[0] > 0.2 and maps[1] < maps[0] / 3, maps


def test_the_yolov4_tiny_zoo_model(repo, demo_recipe):
    """zoo/yolov4_tiny_coco (float16 storage): every trunk and neck tensor, and the head rows of the classes COCO
    has; a recipe without the zoo model's grid sensitivity hears of it."""
    zoo = repo / "zoo" / "yolov4_tiny_coco"
    sets = ["model.backbone={type: csp_darknet_tiny}", "model.neck.width=1.0", "model.input_size=416",
            "model.norm.eps=1.0e-6", "data.mean=[0, 0, 0]", "data.std=[1, 1, 1]"]
    source = {k: v.astype("float32").asnumpy() for k, v in mx.nd.load(str(zoo / "model.params")).items()}
    classes = ["dog", "zebra", "not in coco"]
    for scale_x_y, differences in ((1.05, []), (1.0, ["model.scale_x_y is 1.0 here, 1.05 in the source: the head's "
                                                      "centre outputs are re-learnt in the first steps"])):
        recipe = api.load(demo_recipe, sets + [f"model.scale_x_y={scale_x_y}"])
        net = build_model(recipe, classes, [mx.cpu()])
        report = warm_start(net, read_source(zoo), classes, recipe)
        got = params(net)
        trunk = [name for name in source if name.startswith(("backbone.", "neck."))]
        assert len(trunk) == 19 * 5 and trunk[0].startswith("backbone.stem.0.")    # 19 convs: weight + BatchNorm
        for name in trunk:
            np.testing.assert_array_equal(got[name], source[name], err_msg=name)
        w_src, w_got = source["head.outputs.0.weight"], got["head.outputs.0.weight"]
        np.testing.assert_array_equal(head_rows(w_got, 3, 3, 5 + 0), head_rows(w_src, 3, 80, 5 + 16))   # dog
        np.testing.assert_array_equal(head_rows(w_got, 3, 3, 5 + 1), head_rows(w_src, 3, 80, 5 + 22))   # zebra
        assert report["classes_copied"] == ["dog", "zebra"] and report["feed_differences"] == differences
