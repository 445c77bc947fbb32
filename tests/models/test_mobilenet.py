"""The mobilenet1.0 / mobilenet0.25 backbones against GluonCV's yolo3_mobilenet* feature stages, and
detectors with them built from a recipe, trained one step and run for inference."""
import warnings

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd

from gluon_yolo3 import api
from gluon_yolo3.engine.trainer import Trainer
from gluon_yolo3.models.gluoncv_neck import YOLOv3WidthsNeck
from gluon_yolo3.registry import BACKBONES, NECKS

pytestmark = [pytest.mark.filterwarnings("ignore:.*is not used by any computation"),
              pytest.mark.filterwarnings("ignore:.*New initializer.*overriding existing initializer")]


def gluoncv_yolo(arch):
    from gluoncv.model_zoo import get_model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = get_model(arch, classes=["a", "b"], pretrained_base=False)
    net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2.0))
    return net


def structural(block):
    return block._collect_params_with_prefix()


@pytest.mark.parametrize("name, multiplier", [("mobilenet1.0", 1.0), ("mobilenet0.25", 0.25)])
def test_features_equal_gluoncv_yolo3_stages(name, multiplier):
    """Same parameters (names and shapes) as the `stages` of GluonCV's yolo3_<name>; with GluonCV's values
    copied in, the three outputs equal what GluonCV's stages compute, in training and inference mode."""
    gnet = gluoncv_yolo(f"yolo3_{name}_custom")
    x = mx.nd.array(np.random.default_rng(0).normal(0, 1, (2, 3, 96, 64)))
    gnet(x)
    backbone = BACKBONES.build({"type": name})
    backbone.initialize()
    backbone(x)
    theirs = {k: v for k, v in structural(gnet).items() if k.startswith("stages.")}
    ours = structural(backbone)
    assert sorted(ours) == sorted(theirs) and len(ours) == 27 * 5   # 27 convs (weight) and BatchNorms (4 each)
    for key, param in ours.items():
        assert param.shape == theirs[key].shape, key
        param.set_data(theirs[key].data())
    channels = [int(c * multiplier) for c in (256, 512, 1024)]
    assert backbone.channels == tuple(channels) and backbone.strides == (8, 16, 32)
    for mode in (autograd.predict_mode, autograd.train_mode):
        with mode():
            expected, y = [], x
            for stage in gnet.stages:
                y = stage(y)
                expected.append(y.asnumpy())
            outputs = [o.asnumpy() for o in backbone(x)]
        for out, ref, c, s in zip(outputs, expected, channels, (8, 16, 32)):
            assert out.shape == (2, c, 96 // s, 64 // s)
            np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_hybridized_equals_imperative_and_norm_types_apply():
    x = mx.nd.array(np.random.default_rng(1).normal(0, 1, (1, 3, 64, 64)))
    net = BACKBONES.build({"type": "mobilenet0.25"}, norm={"type": "frozen"})
    net.initialize()
    plain = [o.asnumpy() for o in net(x)]
    net.hybridize()
    for a, b in zip(plain, net(x)):
        np.testing.assert_allclose(b.asnumpy(), a, rtol=1e-5, atol=1e-6)
    norms = [b for b in _blocks(net) if isinstance(b, mx.gluon.nn.BatchNorm)]
    assert len(norms) == 27 and all(b._kwargs["use_global_stats"] for b in norms)


def _blocks(block):
    out = [block]
    for child in block._children.values():
        out += _blocks(child)
    return out


def test_gluoncv_neck_widths_and_errors():
    neck = NECKS.build({"type": "yolov3_gluoncv", "widths": [128, 128, 256]}, in_channels=[64, 128, 256])
    assert isinstance(neck, YOLOv3WidthsNeck) and neck.channels == (256, 256, 512)
    neck.initialize()
    feats = [mx.nd.zeros((1, c, 32 // s, 32 // s)) for c, s in zip((64, 128, 256), (1, 2, 4))]
    assert [t.shape for t in neck(*feats)] == [(1, 256, 32, 32), (1, 256, 16, 16), (1, 512, 8, 8)]
    shapes = {k: v.shape for k, v in structural(neck).items()}
    # GluonCV yolo3_mobilenet0.25: transitions 256 -> 128 and 128 -> 128, blocks fed 128 + 128 and 128 + 64
    assert shapes["reduces.0.conv.weight"] == (128, 256, 1, 1)
    assert shapes["reduces.1.conv.weight"] == (128, 128, 1, 1)
    assert shapes["blocks.1.body.0.conv.weight"] == (128, 256, 1, 1)
    assert shapes["blocks.2.body.0.conv.weight"] == (128, 192, 1, 1)
    with pytest.raises(ValueError, match="one positive width per backbone scale"):
        NECKS.build({"type": "yolov3_gluoncv", "widths": [128, 256]}, in_channels=[64, 128, 256])


TINY = ["model.input_size=64", "data.train.image_size=64", "data.val.image_size=64",
        "data.train.num_images=8", "data.val.num_images=4", "data.num_workers=0", "train.batch_size=4",
        "model.anchors=[[[8, 8], [12, 16], [16, 12]], [[20, 20], [24, 32], [32, 24]], [[40, 40], [48, 56], [56, 48]]]"]


@pytest.mark.parametrize("backbone, neck", [
    pytest.param("mobilenet1.0", "{type: yolov3}", marks=pytest.mark.slow),      # 2.5 s a test
    ("mobilenet0.25", "{type: yolov3}"),
    ("mobilenet0.25", "{type: yolov3_gluoncv, widths: [128, 128, 256]}"),
])
@pytest.mark.parametrize("assigner", ["best_anchor", "gluoncv"])
def test_recipe_with_mobilenet_trains_one_step_and_predicts(backbone, neck, assigner, tmp_path, recipes):
    recipe = api.load(recipes / "demo_tiny.yaml", TINY + [
        f"model.backbone={{type: {backbone}}}", f"model.neck={neck}", f"assigner={{type: {assigner}}}",
        "loss.terms=[{type: xy_bce}, {type: wh_l1}, {type: objectness_bce},"
        " {type: class_bce, label_smoothing: 0.025}]",
        "model.nms={type: class_aware, score_thresh: 0.0, topk: 50, max_det: 20}"])
    trainer = Trainer(recipe, tmp_path, progress=False, log=lambda *_: None)
    trainer.setup()
    assert type(trainer.net.backbone).__name__ == {"mobilenet1.0": "MobileNet1_0",
                                                    "mobilenet0.25": "MobileNet0_25"}[backbone]
    trainer.sampler.set_epoch(0)
    x, target, gt_boxes = next(iter(trainer.loader))
    assert target[:, :, 0].sum().asscalar() >= 4
    trainer.net(x)                             # GluonCV's MobileNet convs defer their shapes to a forward
    before = {k: v.data().asnumpy().copy() for k, v in structural(trainer.net.backbone).items()
              if k.endswith("weight")}
    terms = trainer.train_step(x, target, gt_boxes)
    assert terms.shape == (4,) and np.isfinite(terms).all() and (terms > 0).all()
    after = {k: v.data().asnumpy() for k, v in structural(trainer.net.backbone).items() if k.endswith("weight")}
    assert sum(not np.array_equal(before[k], after[k]) for k in before) == len(before)   # every conv learnt
    with autograd.train_mode():
        raw = trainer.net(x)
    assert len(raw) == 3 and all(np.isfinite(r.asnumpy()).all() for r in raw)
    # inference runs (after one step BatchNorm's running statistics are not yet meaningful: no values checked)
    ids, scores, boxes = (o.asnumpy() for o in trainer.net(x))
    assert ids.shape == (4, 20, 1) and scores.shape == (4, 20, 1) and boxes.shape == (4, 20, 4)
    assert set(np.unique(ids)) <= {-1.0, 0.0, 1.0, 2.0} and (ids[..., 0] >= 0).any()


def test_every_component_has_a_one_line_description():
    from gluon_yolo3.registry import ALL
    for name, registry in ALL.items():
        for entry, doc in registry.describe().items():
            assert doc.strip(), f"{name}: '{entry}' has no docstring for `gluon-yolo3 components`"
    assert BACKBONES.describe()["mobilenet0.25"].startswith("GluonCV's mobilenet0.25 cut as yolo3_mobilenet0.25")
    assert NECKS.describe()["yolov3_gluoncv"].startswith("GluonCV's YOLOv3 neck")
