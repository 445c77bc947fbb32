"""The whole detector: train-mode raw outputs, inference-mode detections, hybridized mode switches."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd

from gluon_yolo3 import api
from gluon_yolo3.engine.builders import build_model


@pytest.fixture
def make_net(demo_recipe):
    """make_net(overrides, classes) -> (recipe, net): the demo detector built for the classes."""
    def make_net(overrides=(), classes=3):
        recipe = api.load(demo_recipe, list(overrides))
        net = build_model(recipe, [f"class{i}" for i in range(classes)], [mx.cpu()])
        return recipe, net
    return make_net


@pytest.mark.parametrize("size", [64, 96])
def test_train_and_inference_shapes_at_two_sizes(size, make_net):
    _, net = make_net()
    net.hybridize()
    x = mx.nd.random.uniform(shape=(2, 3, size, size))
    with autograd.train_mode():
        raw = net(x)
    assert [r.shape for r in raw] == [(2, size // 16, size // 16, 3, 8), (2, size // 32, size // 32, 3, 8)]
    ids, scores, boxes = net(x)
    assert ids.shape == (2, 100, 1) and scores.shape == (2, 100, 1) and boxes.shape == (2, 100, 4)
    ids, scores = ids.asnumpy(), scores.asnumpy()
    valid = ids >= 0
    assert np.all(scores[~valid] == -1)                              # padding is -1
    assert np.all((ids[valid] >= 0) & (ids[valid] < 3))
    assert np.all(np.diff(scores[0, :, 0][valid[0, :, 0]]) <= 0)    # sorted by score


def test_hybridized_switches_modes_and_matches_imperative(make_net):
    _, net = make_net(["model.nms.score_thresh=0.0"])
    x = mx.nd.random.uniform(shape=(1, 3, 64, 64))
    plain = [o.asnumpy() for o in net(x)]
    with autograd.train_mode():
        plain_raw = [o.asnumpy() for o in net(x)]
    net.hybridize(static_alloc=True, static_shape=True)
    for _ in range(2):                      # inference -> train -> inference -> train on one cached graph
        hybrid = [o.asnumpy() for o in net(x)]
        with autograd.train_mode():
            hybrid_raw = [o.asnumpy() for o in net(x)]
        for a, b in zip(plain_raw, hybrid_raw):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(plain[0], hybrid[0])
        np.testing.assert_allclose(plain[1], hybrid[1], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(plain[2], hybrid[2], rtol=1e-4, atol=1e-3)


def test_inference_decodes_the_raw_outputs(make_net):
    """The top detection equals the best (anchor, class) score decoded by hand from the raw outputs.

    Frozen BatchNorm, so that the train-mode raw outputs are those the inference graph sees."""
    _, net = make_net(["model.nms.score_thresh=0.0", "model.norm.type=frozen"])
    x = mx.nd.random.uniform(shape=(1, 3, 64, 64))
    with autograd.train_mode():
        raw = [r.asnumpy()[0] for r in net(x)]
    ids, scores, boxes = [o.asnumpy()[0] for o in net(x)]

    def sig(v):
        return 1 / (1 + np.exp(-v))
    best = (-1.0, None)
    for s, r in enumerate(raw):                                     # r: (H, W, A, 5 + C)
        stride = net.strides[s]
        h, w, a_count, _ = r.shape
        for i in range(h):                                          # row = y
            for j in range(w):                                      # column = x
                for a in range(a_count):
                    p = r[i, j, a]
                    cls_scores = sig(p[4]) * sig(p[5:])
                    c = int(cls_scores.argmax())
                    if cls_scores[c] > best[0]:
                        aw, ah = net.anchors[s][a]
                        cx, cy = (sig(p[0]) + j) * stride, (sig(p[1]) + i) * stride
                        bw, bh = aw * np.exp(p[2]), ah * np.exp(p[3])
                        best = (cls_scores[c], (c, [cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]))
    score, (cls, box) = best
    assert ids[0, 0] == cls
    assert scores[0, 0] == pytest.approx(score, rel=1e-5)
    np.testing.assert_allclose(boxes[0], box, rtol=1e-4, atol=1e-3)


def test_anchor_count_must_match_backbone_scales(demo_recipe):
    recipe = api.load(demo_recipe, ["model.anchors=[[[10, 13]], [[30, 61]], [[116, 90]]]"])
    with pytest.raises(ValueError, match="model.anchors has 3 scales but backbone 'darknet_tiny' gives 2"):
        api.build(recipe, 3)
