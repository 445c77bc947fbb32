"""Backbones, necks, head and the norm factory: sizes against Darknet, shapes, hybridization, layout."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

from gluon_yolo3.models.backbones.csp_darknet import CSPDarknetTiny, route_group
from gluon_yolo3.models.backbones.darknet import Darknet53, DarknetPadPool, DarknetTiny
from gluon_yolo3.models.head import YOLOHead
from gluon_yolo3.models.layers import ConvBNLeaky, make_norm, round_channels
from gluon_yolo3.models.neck import YOLOv3Neck, YOLOv3TinyNeck
from gluon_yolo3.registry import BACKBONES, HEADS, NECKS


class Chain(gluon.HybridBlock):
    """backbone -> neck -> head, for the tests."""

    def __init__(self, backbone, neck, head, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.backbone, self.neck, self.head = backbone, neck, head

    def hybrid_forward(self, F, x):
        return self.head(*self.neck(*self.backbone(x)))


def yolov3(num_classes=80, norm=None):
    backbone = Darknet53(norm=norm)
    neck = YOLOv3Neck(backbone.channels, norm=norm)
    return Chain(backbone, neck, YOLOHead(neck.channels, [3, 3, 3], num_classes))


def yolov3_tiny(num_classes=80, width=1.0, norm=None):
    backbone = DarknetTiny(norm=norm, width=width)
    neck = YOLOv3TinyNeck(backbone.channels, norm=norm, width=width)
    return Chain(backbone, neck, YOLOHead(neck.channels, [3, 3], num_classes))


def num_params(block):
    return sum(int(np.prod(p.shape)) for p in block.collect_params().values())


def randn(*shape, seed=0):
    return mx.nd.array(np.random.RandomState(seed).standard_normal(shape).astype("float32"))


def init(block, seed=0):
    mx.random.seed(seed)
    block.initialize(mx.init.Xavier(magnitude=2.0))
    return block


def check_shapes(outs, batch, size, strides, anchors, num_classes):
    assert len(outs) == len(strides)
    for out, stride, a in zip(outs, strides, anchors):
        assert out.shape == (batch, size // stride, size // stride, a, 5 + num_classes)


@pytest.fixture(scope="module")
def darknet_yolov3():
    net = init(yolov3())
    outs = net(mx.nd.zeros((1, 3, 64, 64)))  # resolves any deferred shape before counting
    return net, outs


def test_yolov3_has_darknet_weight_count(darknet_yolov3):
    net, _ = darknet_yolov3
    # yolov3.weights holds 62,001,757 floats: conv weights, biases, BN gamma/beta/mean/var
    assert num_params(net) == 62_001_757
    assert net.backbone.channels == (256, 512, 1024) and net.backbone.strides == (8, 16, 32)
    assert net.neck.channels == (256, 512, 1024)
    convs = [p for name, p in net.collect_params().items() if name.endswith("weight")]
    assert len(convs) == 75  # yolov3.cfg: 72 conv+BN layers + 3 linear output convs


def test_yolov3_output_shapes(darknet_yolov3):
    _, outs = darknet_yolov3
    check_shapes(outs, 1, 64, (8, 16, 32), (3, 3, 3), 80)
    assert all(np.isfinite(o.asnumpy()).all() for o in outs)


def test_yolov3_tiny_has_darknet_weight_count():
    net = init(yolov3_tiny())
    net(mx.nd.zeros((1, 3, 64, 64)))
    # yolov3-tiny.weights: (35,434,956 bytes - 20 header bytes) / 4 floats
    assert num_params(net) == (35_434_956 - 20) // 4 == 8_858_734
    assert net.backbone.channels == (256, 1024) and net.backbone.strides == (16, 32)
    assert net.neck.channels == (256, 512)


def test_yolov4_tiny_has_darknet_weight_count():
    backbone = CSPDarknetTiny()
    neck = YOLOv3TinyNeck(backbone.channels)
    net = init(Chain(backbone, neck, YOLOHead(neck.channels, [3, 3], 80)))
    check_shapes(net(mx.nd.zeros((1, 3, 64, 64))), 1, 64, (16, 32), (3, 3), 80)
    # yolov4-tiny.weights: (24,251,276 bytes - 20 header bytes) / 4 floats
    assert num_params(net) == (24_251_276 - 20) // 4 == 6_062_814
    assert backbone.channels == (256, 512) and CSPDarknetTiny(width=0.25).channels == (64, 128)


def test_route_group_passes_the_kth_part_of_the_channels():
    """Darknet's [route] groups=g group_id=k: channels k * C / g to (k + 1) * C / g - 1 of its input."""
    x = mx.nd.arange(6).reshape((1, 6, 1, 1)) * mx.nd.ones((1, 6, 2, 2))
    assert route_group(mx.nd, x, 6).asnumpy()[0, :, 0, 0].tolist() == [3, 4, 5]
    assert route_group(mx.nd, x, 6, groups=3, group_id=0).asnumpy()[0, :, 1, 1].tolist() == [0, 1]
    symbol = route_group(mx.sym, mx.sym.var("x"), 6, groups=3, group_id=2)
    assert symbol.eval(x=x)[0].asnumpy()[0, :, 0, 1].tolist() == [4, 5]


@pytest.mark.parametrize("size", [64, 96])
def test_tiny_output_shapes(size):
    net = init(yolov3_tiny(num_classes=3, width=0.25))
    check_shapes(net(randn(2, 3, size, size)), 2, size, (16, 32), (3, 3), 3)


def test_width_rounds_to_multiples_of_eight():
    assert round_channels(16, 0.25) == 8 and round_channels(1024, 0.25) == 256
    assert round_channels(16, 0.01) == 8 and round_channels(100, 1.0) == 104
    assert DarknetTiny(width=0.25).channels == (64, 256)
    assert YOLOv3TinyNeck((64, 256), width=0.25).channels == (64, 128)
    with pytest.raises(ValueError):
        round_channels(16, 0)


def test_darknet53_features_and_names():
    backbone = init(Darknet53())
    feats = backbone(mx.nd.zeros((1, 3, 64, 64)))
    assert [f.shape for f in feats] == [(1, 256, 8, 8), (1, 512, 4, 4), (1, 1024, 2, 2)]
    # two networks built alike differ only in the top-level prefix
    other = Darknet53()

    def strip(net):
        return [n[len(net.prefix):] for n in net.collect_params()]
    assert strip(backbone) == strip(other) and backbone.prefix != other.prefix
    assert "stage3_block7_conv2_bn_running_var" in strip(backbone)


@pytest.mark.parametrize("size", [64, 96])
def test_hybridized_equals_imperative(size):
    net = init(yolov3_tiny(num_classes=2, width=0.25))
    x = randn(2, 3, size, size, seed=1)
    imperative = [o.asnumpy() for o in net(x)]
    net.hybridize()
    hybrid = [o.asnumpy() for o in net(x)]
    for a, b in zip(imperative, hybrid):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_yolov3_neck_and_head_hybridize_on_three_scales():
    """The general neck + head on small feature maps, at two sizes after hybridization."""
    neck = YOLOv3Neck((16, 32, 64))
    assert neck.channels == (16, 32, 64)
    head = YOLOHead(neck.channels, [2, 3, 1], 4)
    init(neck), init(head)

    def run(feats):
        return [o.asnumpy() for o in head(*neck(*feats))]

    for n, seed in ((4, 0), (6, 1)):
        feats = [randn(1, c, n * k, n * k, seed=seed + c) for c, k in ((16, 4), (32, 2), (64, 1))]
        imperative = run(feats)
        assert [o.shape for o in imperative] == [(1, 4 * n, 4 * n, 2, 9), (1, 2 * n, 2 * n, 3, 9),
                                                 (1, n, n, 1, 9)]
        neck.hybridize(), head.hybridize()
        for a, b in zip(imperative, run(feats)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        neck.hybridize(False), head.hybridize(False)


@pytest.mark.parametrize("hybridize", [False, True])
def test_head_layout_is_anchor_major_and_yx(hybridize):
    """Conv channel a*(5+C)+k at (h, w) must land exactly in out[b, h, w, a, k]."""
    num_classes, anchors = 3, [2, 3]
    head = init(YOLOHead((8, 16), anchors, num_classes))
    if hybridize:
        head.hybridize()
    tips = [randn(2, 8, 3, 5, seed=3), randn(2, 16, 2, 4, seed=4)]  # H != W on purpose
    outs = head(*tips)
    for conv, x, out, a in zip(head.outputs, tips, outs, anchors):
        raw = conv(x).asnumpy()  # (B, A*(5+C), H, W)
        out = out.asnumpy()
        B, _, H, W = raw.shape
        assert out.shape == (B, H, W, a, 5 + num_classes)
        for b in range(B):
            for h in range(H):
                for w in range(W):
                    for ai in range(a):
                        for k in range(5 + num_classes):
                            assert out[b, h, w, ai, k] == raw[b, ai * (5 + num_classes) + k, h, w]


def test_head_changes_only_the_cell_whose_input_changes():
    head = init(YOLOHead((8,), [3], 2))
    x = randn(1, 8, 4, 6, seed=5)
    y = x.copy()
    y[0, :, 1, 4] += 1.0  # row (y) 1, column (x) 4
    diff = np.abs((head(y)[0] - head(x)[0]).asnumpy()).sum(axis=(0, 3, 4))  # (H, W)
    assert diff[1, 4] > 0
    diff[1, 4] = 0
    assert not diff.any()


def test_necks_concatenate_upsampled_route_first():
    """With the weights on the backbone half of the concat zeroed, that feature must not matter."""
    neck = init(YOLOv3TinyNeck((16, 32), width=0.125))  # reduce: 16 channels
    w = neck.tip16.conv.weight.data()
    w[:, 16:] = 0
    neck.tip16.conv.weight.set_data(w)
    c5 = randn(1, 32, 2, 2, seed=6)
    a = neck(randn(1, 16, 4, 4, seed=7), c5)[0].asnumpy()
    b = neck(randn(1, 16, 4, 4, seed=8), c5)[0].asnumpy()
    np.testing.assert_array_equal(a, b)

    neck = init(YOLOv3Neck((8, 16)))  # coarse block c=8, reduce to 4, finer block sees 4 + 8
    first = neck.blocks[1].body[0].conv
    assert first.weight.shape == (4, 12, 1, 1)
    w = first.weight.data()
    w[:, 4:] = 0
    first.weight.set_data(w)
    c5 = randn(1, 16, 2, 2, seed=9)
    a = neck(randn(1, 8, 4, 4, seed=10), c5)[0].asnumpy()
    b = neck(randn(1, 8, 4, 4, seed=11), c5)[0].asnumpy()
    np.testing.assert_array_equal(a, b)


def test_darknet_stride1_maxpool_keeps_size_and_pads_right_bottom():
    x = np.random.RandomState(12).standard_normal((1, 2, 5, 4)).astype("float32")
    out = DarknetPadPool()(mx.nd.array(x)).asnumpy()
    assert out.shape == x.shape
    H, W = x.shape[2:]
    expected = np.empty_like(x)
    for i in range(H):  # Darknet: window [i, i+1] x [j, j+1], cells outside the image ignored
        for j in range(W):
            expected[:, :, i, j] = x[:, :, i:i + 2, j:j + 2].max(axis=(2, 3))
    np.testing.assert_array_equal(out, expected)


def _stats(bn):
    return bn.running_mean.data().asnumpy().copy(), bn.running_var.data().asnumpy().copy()


@pytest.mark.parametrize("kind, frozen", [("frozen", True), ("batchnorm", False)])
def test_norm_running_stats_after_training_step(kind, frozen):
    bn = make_norm({"type": kind, "momentum": 0.5})
    bn.initialize()
    x = randn(4, 3, 5, 5, seed=13) * 3 + 2
    bn(x)  # inference forward: shapes
    before = _stats(bn)
    with autograd.record():
        y = bn(x)
    y.backward()
    after = _stats(bn)
    same = all(np.array_equal(a, b) for a, b in zip(before, after))
    assert same == frozen
    if frozen:  # frozen BN normalises with the running stats even in training
        np.testing.assert_allclose(y.asnumpy(), x.asnumpy() / np.sqrt(1 + 1e-5), rtol=1e-5, atol=1e-5)


def test_make_norm_types_and_errors():
    bn = make_norm(None)
    assert isinstance(bn, gluon.nn.BatchNorm) and bn._kwargs["eps"] == 1e-5
    assert bn._kwargs["momentum"] == 0.9 and not bn._kwargs["use_global_stats"]
    assert make_norm({"type": "frozen"})._kwargs["use_global_stats"]
    sync = make_norm({"type": "syncbn", "num_devices": 2, "eps": 1e-6})
    assert isinstance(sync, mx.gluon.contrib.nn.SyncBatchNorm)
    assert sync._kwargs["ndev"] == 2 and sync._kwargs["eps"] == 1e-6
    with pytest.raises(ValueError, match=r"model\.norm\.type.*batchnorm, frozen, syncbn"):
        make_norm({"type": "groupnorm"})
    with pytest.raises(ValueError, match=r"model\.norm\.momentun.*momentum"):
        make_norm({"momentun": 0.9})
    conv = ConvBNLeaky(8, 3, 2, {"type": "frozen"})
    assert conv.bn._kwargs["use_global_stats"]
    assert conv.conv._kwargs["pad"] == (1, 1) and conv.conv.bias is None


def test_components_build_from_registries():
    backbone = BACKBONES.build({"type": "darknet_tiny", "width": 0.25, "norm": {"type": "frozen"}})
    neck = NECKS.build({"type": "yolov3_tiny", "width": 0.25}, in_channels=backbone.channels)
    head = HEADS.build({"type": "yolov3", "num_anchors": [3, 3], "num_classes": 1},
                       in_channels=neck.channels)
    net = init(Chain(backbone, neck, head))
    check_shapes(net(mx.nd.zeros((1, 3, 64, 64))), 1, 64, (16, 32), (3, 3), 1)
    assert "darknet53" in BACKBONES and "yolov3" in NECKS
