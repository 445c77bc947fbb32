"""Loss terms and the YOLOLoss composer against hand-computed values and plain numpy references.

The references below are written from the textbook formulas and DEVELOPERS.md (decoding, target layout,
ignore rule), with explicit loops; they never call the code under test.
"""
import math

import mxnet as mx
import numpy as np
import pytest

from gluon_yolo3.boxes import pairwise_iou
from gluon_yolo3.data.pipeline import trim_padding
from gluon_yolo3.losses.composer import YOLOLoss
from gluon_yolo3.losses.terms import WHL1, XYBCE, ClassBCE, ObjectnessBCE, bce_with_logits
from gluon_yolo3.registry import LOSSES

# hybridized single terms do not read every input (e.g. pred_boxes); MXNet warns about it
pytestmark = pytest.mark.filterwarnings("ignore:.*is not used by any computation")


def sigmoid(x):
    return 1 / (1 + np.exp(-np.asarray(x, dtype=np.float64)))


def textbook_bce(x, z):
    """-z log(sigmoid(x)) - (1 - z) log(1 - sigmoid(x)), float64, moderate x only."""
    p = sigmoid(x)
    return -z * np.log(p) - (1 - z) * np.log(1 - p)


# ----------------------------------------------------------------------------------------------------
# bce_with_logits


def test_bce_with_logits_matches_textbook_formula():
    x = np.linspace(-6, 6, 25)
    for z in (0.0, 0.3, 1.0):
        out = bce_with_logits(mx.nd, mx.nd.array(x), mx.nd.full(x.shape, z)).asnumpy()
        np.testing.assert_allclose(out, textbook_bce(x, z), rtol=1e-5, atol=1e-6)
    # a hand value: x = 0 -> -log(0.5) = log 2 for any z
    out = bce_with_logits(mx.nd, mx.nd.zeros(3), mx.nd.array([0, 0.5, 1])).asnumpy()
    np.testing.assert_allclose(out, [math.log(2)] * 3, rtol=1e-6)


def test_bce_with_logits_is_finite_for_extreme_logits():
    x = np.array([100, 100, -100, -100], np.float32)
    z = np.array([1, 0, 1, 0], np.float32)
    with np.errstate(all="ignore"):
        p = (1 / (1 + np.exp(-x))).astype(np.float32)
        naive = -z * np.log(p) - (1 - z) * np.log(1 - p)
    assert not np.isfinite(naive).all()          # the naive formula breaks here (log 0 -> inf / nan)
    out = bce_with_logits(mx.nd, mx.nd.array(x), mx.nd.array(z)).asnumpy()
    assert np.isfinite(out).all()
    # exact limits: confident and right -> ~0; confident and wrong -> |x| = 100
    np.testing.assert_allclose(out, [0, 100, 100, 0], rtol=1e-6, atol=1e-6)


def test_bce_with_logits_symbolic_equals_imperative():
    x = np.array([-3, -0.5, 0, 2, 50], np.float32)
    z = np.array([0, 1, 0.5, 1, 0], np.float32)
    sym = bce_with_logits(mx.sym, mx.sym.var("x"), mx.sym.var("z"))
    out = sym.bind(mx.cpu(), {"x": mx.nd.array(x), "z": mx.nd.array(z)}).forward()[0].asnumpy()
    np.testing.assert_allclose(out, bce_with_logits(mx.nd, mx.nd.array(x), mx.nd.array(z)).asnumpy(),
                               rtol=1e-6)


# ----------------------------------------------------------------------------------------------------
# the four terms on a tiny case: B = 2, T = 3, C = 2

# pred: tx, ty, tw, th, obj, cls0, cls1
PRED = np.array([
    [[0.5, -1.0, 0.2, -0.3, 2.0, 1.0, -2.0],
     [1.5, 0.3, -0.7, 0.4, -1.0, 0.5, 0.5],
     [-0.2, 0.8, 0.1, 0.9, 0.3, -1.5, 2.5]],
    [[2.0, -2.0, 1.0, -1.0, -3.0, 0.0, 1.0],
     [0.7, -0.1, 0.3, 0.2, 0.4, 0.6, -0.6],
     [-1.0, 1.0, -0.5, 0.5, 1.2, 2.0, -0.5]]], np.float32)
# target: obj, x, y, log w/aw, log h/ah, weight, x1, y1, x2, y2, cls0, cls1
TARGET = np.array([
    [[1, 0.3, 0.7, 0.1, -0.2, 1.5, 10, 10, 20, 30, 1, 0],
     [0] * 12,
     [1, 0.9, 0.1, 0.5, 0.5, 1.9, 0, 0, 5, 5, 1, 1]],
    [[0] * 12,
     [0] * 12,
     [1, 0.5, 0.5, -0.4, 0.3, 1.2, 40, 40, 60, 50, 0, 1]]], np.float32)
# image 0: t1 is background; image 1: t0 is ignored (no object, overlaps a gt), t1 background
NOOBJ = np.array([[[0], [1], [0]], [[0], [1], [0]]], np.float32)
BOXES = np.zeros((2, 3, 4), np.float32)   # unused by these terms


def run_term(term, hybridize=False):
    term.initialize()
    if hybridize:
        term.hybridize()
    out = term(*[mx.nd.array(a) for a in (PRED, TARGET, BOXES, NOOBJ)]).asnumpy()
    assert out.shape == (2,)
    return out


def reference_xy(pred, target):
    out = np.zeros(len(pred))
    for b in range(len(pred)):
        for t in range(pred.shape[1]):
            if target[b, t, 0] == 1:
                w = target[b, t, 5]
                out[b] += w * (textbook_bce(pred[b, t, 0], target[b, t, 1])
                               + textbook_bce(pred[b, t, 1], target[b, t, 2]))
    return out


def reference_wh(pred, target):
    out = np.zeros(len(pred))
    for b in range(len(pred)):
        for t in range(pred.shape[1]):
            if target[b, t, 0] == 1:
                out[b] += target[b, t, 5] * (abs(float(pred[b, t, 2]) - float(target[b, t, 3]))
                                             + abs(float(pred[b, t, 3]) - float(target[b, t, 4])))
    return out


def reference_obj(pred, target, noobj, noobj_weight):
    out = np.zeros(len(pred))
    for b in range(len(pred)):
        for t in range(pred.shape[1]):
            o = pred[b, t, 4]
            if target[b, t, 0] == 1:
                out[b] += -np.log(sigmoid(o))
            elif noobj[b, t, 0] == 1:
                out[b] += noobj_weight * -np.log(1 - sigmoid(o))
    return out


def reference_cls(pred, target):
    out = np.zeros(len(pred))
    for b in range(len(pred)):
        for t in range(pred.shape[1]):
            if target[b, t, 0] == 1:
                for c in range(pred.shape[2] - 5):
                    out[b] += textbook_bce(pred[b, t, 5 + c], target[b, t, 10 + c])
    return out


@pytest.mark.parametrize("hybridize", [False, True])
def test_xy_bce(hybridize):
    expected = reference_xy(PRED, TARGET)
    # image 1 by hand: only t2, weight 1.2, tx = -1, ty = 1, both targets 0.5:
    # bce(-1, .5) = bce(1, .5) = 0.5 * (log(1 + e) + log(1 + 1/e)) = 0.5 * (1.31326 + 0.31326) = 0.81326
    assert expected[1] == pytest.approx(1.2 * 2 * 0.813262, rel=1e-5)
    np.testing.assert_allclose(run_term(XYBCE(), hybridize), expected, rtol=1e-5)


@pytest.mark.parametrize("hybridize", [False, True])
def test_wh_l1(hybridize):
    # image 0: t0 1.5 * (|0.2 - 0.1| + |-0.3 + 0.2|) = 0.3; t2 1.9 * (|0.1 - 0.5| + |0.9 - 0.5|) = 1.52
    # image 1: t2 1.2 * (|-0.5 + 0.4| + |0.5 - 0.3|) = 0.36
    expected = [1.82, 0.36]
    np.testing.assert_allclose(reference_wh(PRED, TARGET), expected, rtol=1e-6)
    np.testing.assert_allclose(run_term(WHL1(), hybridize), expected, rtol=1e-5)


@pytest.mark.parametrize("hybridize", [False, True])
@pytest.mark.parametrize("noobj_weight", [1.0, 0.5])
def test_objectness_bce(noobj_weight, hybridize):
    expected = reference_obj(PRED, TARGET, NOOBJ, noobj_weight)
    # image 1 by hand: t2 positive, -log(sigmoid(1.2)) = log(1 + e^-1.2) = 0.263282;
    # t1 background, -log(1 - sigmoid(0.4)) = log(1 + e^0.4) = 0.913015; t0 ignored (the -3 is not used)
    assert expected[1] == pytest.approx(0.263282 + noobj_weight * 0.913015, rel=1e-5)
    np.testing.assert_allclose(run_term(ObjectnessBCE(noobj_weight=noobj_weight), hybridize), expected,
                               rtol=1e-5)


def test_objectness_noobj_weight_from_registry():
    term = LOSSES.build({"type": "objectness_bce", "noobj_weight": 0.25})
    np.testing.assert_allclose(run_term(term), reference_obj(PRED, TARGET, NOOBJ, 0.25), rtol=1e-5)


@pytest.mark.parametrize("hybridize", [False, True])
@pytest.mark.parametrize("iou_target", [1.0, 0.5])
def test_objectness_iou_target_by_hand(iou_target, hybridize):
    """One assigned anchor whose decoded box (0, 0, 10, 10) has IoU 0.5 with its ground truth (0, 0, 10, 20):
    the positive target is 1 - r + r * 0.5; the loss sends no gradient into the box through that IoU."""
    logit = 0.7
    pred = mx.nd.array([[[0, 0, 0, 0, logit, 0]]])                  # (1, 1, 5 + 1)
    target = mx.nd.zeros((1, 1, 11))
    target[0, 0, 0] = 1                                              # assigned
    target[0, 0, 6:10] = mx.nd.array([0, 0, 10, 20])                # its box, x1y1x2y2 pixels
    boxes = mx.nd.array([[[0, 0, 10, 10]]])
    noobj = mx.nd.zeros((1, 1, 1))
    goal = 1 - iou_target + iou_target * 0.5
    term = LOSSES.build({"type": "objectness_bce", "iou_target": iou_target})
    if hybridize:
        term.hybridize()
    pred.attach_grad()
    boxes.attach_grad()
    with mx.autograd.record():
        loss = term(pred, target, boxes, noobj)
    loss.backward()
    assert loss.asscalar() == pytest.approx(textbook_bce(logit, goal), rel=1e-5)
    np.testing.assert_allclose(pred.grad.asnumpy()[0, 0, 4], sigmoid(logit) - goal, rtol=1e-5)
    np.testing.assert_array_equal(boxes.grad.asnumpy(), 0)
    # r = 0 is YOLOv3's target 1: the numpy reference of the classic term
    np.testing.assert_allclose(run_term(ObjectnessBCE(iou_target=0.0)), reference_obj(PRED, TARGET, NOOBJ, 1.0),
                               rtol=1e-5)
    with pytest.raises(ValueError, match="iou_target"):
        ObjectnessBCE(iou_target=1.5)


@pytest.mark.parametrize("hybridize", [False, True])
def test_class_bce(hybridize):
    expected = reference_cls(PRED, TARGET)
    # image 1 by hand: t2 only, logits (2, -0.5) vs (0, 1): log(1 + e^2) + log(1 + e^0.5) = 2.126928 + 0.974077
    assert expected[1] == pytest.approx(2.126928 + 0.974077, rel=1e-5)
    np.testing.assert_allclose(run_term(ClassBCE(), hybridize), expected, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------
# pairwise_iou


def test_pairwise_iou_hand_values_and_padding():
    a = np.array([[[0, 0, 10, 10], [5, 5, 15, 15], [-24, -24, 40, 40]]], np.float32)
    b = np.array([[[0, 0, 10, 10], [0, 5, 10, 10], [-1, -1, -1, -1]]], np.float32)
    # (0,0,10,10) vs (0,0,10,10): 1; vs (0,5,10,10): 50 / 100 = 0.5
    # (5,5,15,15) vs (0,0,10,10): 25 / 175; vs (0,5,10,10): 25 / (100 + 50 - 25) = 0.2
    # (-24,-24,40,40) vs (0,0,10,10): 100 / 4096; vs (0,5,10,10): 50 / 4096
    # anything vs the padded (-1,-1,-1,-1), even a box that contains the point (-1, -1): 0
    expected = [[[1, 0.5, 0], [25 / 175, 0.2, 0], [100 / 4096, 50 / 4096, 0]]]
    out = pairwise_iou(mx.nd, mx.nd.array(a), mx.nd.array(b)).asnumpy()
    assert out.shape == (1, 3, 3)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------------------------------
# YOLOLoss, one scale: input 32 x 32, stride 16 -> grid 2 x 2, anchors (16, 16), (8, 8), C = 1
# flat index t = (row * 2 + col) * 2 + anchor, T = 8

ANCHORS = [[(16, 16), (8, 8)]]
STRIDES = (16,)
ALL_TERMS = [{"type": "xy_bce"}, {"type": "wh_l1"}, {"type": "objectness_bce"}, {"type": "class_bce"}]
OBJ_ONLY = [{"type": "objectness_bce"}]

# image 0: one gt G = (12, 0, 28, 15), centre (20, 7.5), 16 x 15, class 0: assigned to cell (row 0, col 1),
# anchor 0 -> t = 2; in cell 20/16 - 1 = 0.25, 7.5/16 = 0.46875; log(16/16) = 0, log(15/16); 2 - 240/1024
G = (12, 0, 28, 15)
OBJ_LOGITS = np.array([[0.3, -0.4, 0.9, 1.7, -1.1, 0.2, -2.3, 0.6],
                       [-0.8, 0.1, 1.4, -0.2, 0.5, -1.6, 0.7, -0.3]], np.float32)


def tiny_inputs():
    raw = np.zeros((2, 2, 2, 2, 6), np.float32)           # (B, H, W, A, 5 + C)
    raw[..., 4] = OBJ_LOGITS.reshape(2, 2, 2, 2)           # objectness, distinct per prediction
    raw[..., 5] = 0.25
    # image 0
    # t = 0 (row 0, col 0, anchor 16x16): tx = 20 -> centre x = 16 (sigmoid(20) = 1 - 2e-9), y = 8:
    #   box (8, 0, 24, 16); with G: inter 12 * 15 = 180, union 256 + 240 - 180 = 316 -> IoU 0.5696
    raw[0, 0, 0, 0, 0] = 20.0
    # t = 2 (row 0, col 1, anchor 16x16), the assigned one: tw = th = -2 -> a tiny box, IoU ~ 0;
    #   an assigned prediction is never background whatever its IoU
    raw[0, 0, 1, 0, 2:4] = -2.0
    # t = 3 (row 0, col 1, anchor 8x8): sigmoid(tx) = 0.25 -> centre (20, 8); tw = th = log 2 -> 16 x 16:
    #   box (12, 0, 28, 16); with G: inter 16 * 15 = 240, union 256 -> IoU 0.9375 -> ignored
    raw[0, 0, 1, 1, 0] = -math.log(3)
    raw[0, 0, 1, 1, 2:4] = math.log(2)
    # t = 1 (row 0, col 0, anchor 8x8): box (4, 4, 12, 12), touches G at x = 12 only -> IoU 0
    # t = 4..7 (row 1): (0, 8, 16, 24) IoU 4*7 / (256+240-28) = 0.06; (4, 20, 12, 28) 0;
    #   (16, 8, 32, 24) 12*7 / (256+240-84) = 0.20; (20, 20, 28, 28) 0       -> background
    # image 1: no objects, gt all padding; t = 0 (row 0, col 0, anchor 16x16) tw = th = log 4 -> a 64 x 64
    #   box (-24, -24, 40, 40) around the padded "box" (-1, -1, -1, -1): still background
    raw[1, 0, 0, 0, 2:4] = math.log(4)
    target = np.zeros((2, 8, 11), np.float32)
    target[0, 2] = [1, 0.25, 0.46875, 0, math.log(15 / 16), 2 - 240 / 1024, *G, 1]
    gt_boxes = -np.ones((2, 2, 4), np.float32)
    gt_boxes[0, 0] = G
    return raw, target, gt_boxes


def build_loss(terms, ignore_iou=0.7, hybridize=False):
    loss = YOLOLoss(terms, ANCHORS, STRIDES, ignore_iou=ignore_iou)
    loss.initialize()
    if hybridize:
        loss.hybridize()
    return loss


def run_loss(loss, raw, target, gt_boxes):
    return loss(mx.nd.array(target), mx.nd.array(gt_boxes), mx.nd.array(raw)).asnumpy()


def softplus(x):
    return np.log1p(np.exp(np.asarray(x, np.float64)))


def obj_by_hand(positive, background, image):
    """Objectness sum for the listed flat indices of one image: -log s(o) and -log(1 - s(o))."""
    o = OBJ_LOGITS[image]
    return sum(softplus(-o[t]) for t in positive) + sum(softplus(o[t]) for t in background)


@pytest.mark.parametrize("hybridize", [False, True])
def test_ignore_mask_hand_case(hybridize):
    raw, target, gt_boxes = tiny_inputs()
    out = run_loss(build_loss(OBJ_ONLY, 0.7, hybridize), raw, target, gt_boxes)
    assert out.shape == (2, 1)
    # ignore 0.7: image 0 positive {2}, ignored {3} (IoU 0.94), background {0 (IoU 0.57), 1, 4, 5, 6, 7}
    #             image 1 (padding only): every prediction is background
    expected = [obj_by_hand([2], [0, 1, 4, 5, 6, 7], 0), obj_by_hand([], range(8), 1)]
    np.testing.assert_allclose(out[:, 0], expected, rtol=1e-5)


@pytest.mark.parametrize("hybridize", [False, True])
def test_ignore_threshold_is_respected(hybridize):
    raw, target, gt_boxes = tiny_inputs()
    out = run_loss(build_loss(OBJ_ONLY, 0.5, hybridize), raw, target, gt_boxes)
    # ignore 0.5: t = 0 (IoU 0.57) is now ignored too
    expected = [obj_by_hand([2], [1, 4, 5, 6, 7], 0), obj_by_hand([], range(8), 1)]
    np.testing.assert_allclose(out[:, 0], expected, rtol=1e-5)
    # ignore 0.95: nothing unassigned is ignored (best IoU 0.9375)
    out = run_loss(build_loss(OBJ_ONLY, 0.95, hybridize), raw, target, gt_boxes)
    expected = [obj_by_hand([2], [0, 1, 3, 4, 5, 6, 7], 0), obj_by_hand([], range(8), 1)]
    np.testing.assert_allclose(out[:, 0], expected, rtol=1e-5)


def test_padding_rows_never_cause_ignores():
    # the same image 0 with many padded gt rows, and an image whose every prediction is a huge box
    raw, target, gt_boxes = tiny_inputs()
    padded = -np.ones((2, 6, 4), np.float32)
    padded[0, 3] = G                                      # the real box somewhere in the middle
    raw[1, ..., 2:4] = math.log(8)                       # image 1: all boxes >= 64 x 64, around (-1, -1)
    out = run_loss(build_loss(OBJ_ONLY), raw, target, padded)
    expected = [obj_by_hand([2], [0, 1, 4, 5, 6, 7], 0), obj_by_hand([], range(8), 1)]
    np.testing.assert_allclose(out[:, 0], expected, rtol=1e-5)


def test_noobj_weight_in_composer():
    raw, target, gt_boxes = tiny_inputs()
    out = run_loss(build_loss([{"type": "objectness_bce", "noobj_weight": 0.5}]), raw, target, gt_boxes)
    o = OBJ_LOGITS
    expected = [softplus(-o[0, 2]) + 0.5 * sum(softplus(o[0, t]) for t in [0, 1, 4, 5, 6, 7]),
                0.5 * sum(softplus(o[1, t]) for t in range(8))]
    np.testing.assert_allclose(out[:, 0], expected, rtol=1e-5)


def test_positive_terms_hand_case():
    raw, target, gt_boxes = tiny_inputs()
    out = run_loss(build_loss(ALL_TERMS), raw, target, gt_boxes)
    assert out.shape == (2, 4)
    w = 2 - 240 / 1024
    # the assigned prediction t = 2 has tx = ty = 0, tw = th = -2, class logit 0.25, target class 1
    xy = w * (textbook_bce(0, 0.25) + textbook_bce(0, 0.46875))
    wh = w * (abs(-2 - 0) + abs(-2 - math.log(15 / 16)))
    cls = softplus(-0.25)
    np.testing.assert_allclose(out[0, [0, 1, 3]], [xy, wh, cls], rtol=1e-5)
    np.testing.assert_allclose(out[1, [0, 1, 3]], [0, 0, 0], atol=1e-7)   # no objects in image 1


# a full numpy reference of the composer, for random inputs


def reference_iou(a, b):
    """IoU of two x1y1x2y2 boxes, 0 when either is empty."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - iw * ih
    return iw * ih / union if union > 0 else 0.0


def reference_loss(raw, target, gt_boxes, anchors, stride, ignore_iou, weights, noobj_weight=1.0):
    batch, height, width, num_a, _ = raw.shape
    out = np.zeros((batch, 4))
    for b in range(batch):
        t = 0
        for i in range(height):
            for j in range(width):
                for a in range(num_a):
                    p = raw[b, i, j, a].astype(np.float64)
                    y = target[b, t].astype(np.float64)
                    t += 1
                    cx, cy = (sigmoid(p[0]) + j) * stride, (sigmoid(p[1]) + i) * stride
                    bw, bh = anchors[a][0] * np.exp(p[2]), anchors[a][1] * np.exp(p[3])
                    box = (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)
                    best = max(reference_iou(box, g) for g in gt_boxes[b] if g[2] > g[0])  \
                        if (gt_boxes[b, :, 2] > gt_boxes[b, :, 0]).any() else 0.0
                    if y[0] == 1:
                        out[b, 0] += y[5] * (textbook_bce(p[0], y[1]) + textbook_bce(p[1], y[2]))
                        out[b, 1] += y[5] * (abs(p[2] - y[3]) + abs(p[3] - y[4]))
                        out[b, 2] += -np.log(sigmoid(p[4]))
                        out[b, 3] += sum(textbook_bce(p[5 + c], y[10 + c]) for c in range(len(p) - 5))
                    elif best <= ignore_iou:
                        out[b, 2] += noobj_weight * -np.log(1 - sigmoid(p[4]))
    return out * np.asarray(weights)


def random_case(seed, batch=2, num_classes=2):
    """Random raw outputs (3 x 4 grid, 2 anchors, stride 16) and targets at hand-picked slots."""
    rng = np.random.default_rng(seed)
    raw = rng.normal(0, 1, (batch, 3, 4, 2, 5 + num_classes)).astype(np.float32)
    target = np.zeros((batch, 24, 10 + num_classes), np.float32)
    gt_boxes = -np.ones((batch, 3, 4), np.float32)
    slots = {0: [(1, 2, 0), (0, 3, 1)], 1: [(2, 0, 1)]}     # (row, col, anchor) per image
    for b, cells in slots.items():
        for k, (i, j, a) in enumerate(cells):
            fx, fy = rng.uniform(0.1, 0.9, 2)
            w, h = np.asarray(ANCHORS[0][a]) * np.exp(rng.uniform(-0.5, 0.5, 2))
            cx, cy = (j + fx) * 16, (i + fy) * 16
            box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
            row = (i * 4 + j) * 2 + a
            target[b, row, :10] = [1, fx, fy, np.log(w / ANCHORS[0][a][0]), np.log(h / ANCHORS[0][a][1]),
                                   2 - w * h / (48 * 64), *box]
            target[b, row, 10 + rng.integers(num_classes)] = 1
            gt_boxes[b, k] = box
    # make some unassigned predictions overlap the gt strongly: the other anchor of each assigned cell
    # predicts nearly the gt box (IoU close to 1), so that the ignore rule has work to do
    for b, cells in slots.items():
        for i, j, a in cells:
            fx, fy = target[b, (i * 4 + j) * 2 + a, 1:3]
            raw[b, i, j, 1 - a, :2] = np.log([fx / (1 - fx), fy / (1 - fy)]) + rng.normal(0, 0.1, 2)
            size = np.asarray(ANCHORS[0][a]) / np.asarray(ANCHORS[0][1 - a])
            raw[b, i, j, 1 - a, 2:4] = target[b, (i * 4 + j) * 2 + a, 3:5] + np.log(size)
    return raw, target, gt_boxes


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("ignore_iou", [0.5, 0.7])
def test_composer_matches_numpy_reference(seed, ignore_iou):
    raw, target, gt_boxes = random_case(seed)
    weights = [2.0, 0.5, 1.5, 3.0]
    terms = [dict(cfg, weight=w) for cfg, w in zip(ALL_TERMS, weights)]
    loss = build_loss(terms, ignore_iou)
    expected = reference_loss(raw, target, gt_boxes, ANCHORS[0], 16, ignore_iou, weights)
    out = run_loss(loss, raw, target, gt_boxes)
    assert out.shape == (2, 4)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    # hybridized gives the same
    loss.hybridize()
    np.testing.assert_allclose(run_loss(loss, raw, target, gt_boxes), out, rtol=1e-5, atol=1e-6)


def test_random_case_exercises_the_ignore_rule():
    # guard for the test above: the near-copies of the gt boxes are unassigned predictions ignored at 0.7
    raw, target, gt_boxes = random_case(0)
    ignored = 0
    for b in range(2):
        flat = raw[b].reshape(24, -1)
        for t in range(24):
            if target[b, t, 0] == 1:
                continue
            i, j, a = t // 8, (t // 2) % 4, t % 2
            cx, cy = (sigmoid(flat[t, 0]) + j) * 16, (sigmoid(flat[t, 1]) + i) * 16
            w, h = np.asarray(ANCHORS[0][a]) * np.exp(flat[t, 2:4].astype(np.float64))
            box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            ignored += max(reference_iou(box, g) for g in gt_boxes[b] if g[2] > g[0]) > 0.7
    assert ignored >= 2


def test_weights_multiply_terms():
    raw, target, gt_boxes = tiny_inputs()
    plain = run_loss(build_loss(ALL_TERMS), raw, target, gt_boxes)
    assert (plain[0] > 0).all()                            # every term is non-zero in image 0
    weights = [0.5, 2.0, 3.0, 0.25]
    weighted = run_loss(build_loss([dict(c, weight=w) for c, w in zip(ALL_TERMS, weights)]),
                        raw, target, gt_boxes)
    np.testing.assert_allclose(weighted, plain * np.asarray(weights), rtol=1e-6)
    zero = run_loss(build_loss([dict(c, weight=0.0) for c in ALL_TERMS]), raw, target, gt_boxes)
    np.testing.assert_array_equal(zero, np.zeros((2, 4)))


def test_names_order_and_custom_names():
    loss = build_loss(ALL_TERMS)
    assert loss.names == ["xy", "wh", "obj", "cls"]
    terms = [{"type": "class_bce"}, {"type": "objectness_bce", "name": "background", "noobj_weight": 2.0},
             {"type": "xy_bce", "weight": 2.0}]
    loss = build_loss(terms)
    assert loss.names == ["cls", "background", "xy"]
    assert loss.weights == [1.0, 1.0, 2.0]
    # the columns follow the names: compare with single-term composers
    raw, target, gt_boxes = tiny_inputs()
    out = run_loss(loss, raw, target, gt_boxes)
    assert out.shape == (2, 3)
    for k, cfg in enumerate(terms):
        alone = run_loss(build_loss([cfg]), raw, target, gt_boxes)
        np.testing.assert_allclose(out[:, k], alone[:, 0], rtol=1e-6)
    # the given configs are not consumed (a recipe may be reused)
    assert terms[1] == {"type": "objectness_bce", "name": "background", "noobj_weight": 2.0}


def test_duplicate_names_raise():
    with pytest.raises(ValueError, match="unique"):
        YOLOLoss([{"type": "xy_bce"}, {"type": "xy_bce"}], ANCHORS, STRIDES)
    with pytest.raises(ValueError, match="unique"):
        YOLOLoss([{"type": "xy_bce"}, {"type": "wh_l1", "name": "xy"}], ANCHORS, STRIDES)
    loss = YOLOLoss([{"type": "xy_bce"}, {"type": "xy_bce", "name": "xy2"}], ANCHORS, STRIDES)
    assert loss.names == ["xy", "xy2"]


@pytest.mark.parametrize("ignore_iou", [0.5, 0.7])
def test_hybridized_equals_imperative(ignore_iou):
    raw, target, gt_boxes = tiny_inputs()
    imperative = run_loss(build_loss(ALL_TERMS, ignore_iou), raw, target, gt_boxes)
    hybrid = build_loss(ALL_TERMS, ignore_iou, hybridize=True)
    np.testing.assert_allclose(run_loss(hybrid, raw, target, gt_boxes), imperative, rtol=1e-6, atol=1e-7)
    # a second call on the cached graph with other inputs still agrees
    raw2, target2, gt2 = random_case(3)
    loss2 = build_loss(ALL_TERMS, ignore_iou, hybridize=True)
    first = run_loss(loss2, raw2, target2, gt2)
    second = run_loss(loss2, raw2, target2, gt2)
    np.testing.assert_allclose(first, second, rtol=0, atol=0)
    np.testing.assert_allclose(first, run_loss(build_loss(ALL_TERMS, ignore_iou), raw2, target2, gt2),
                               rtol=1e-5, atol=1e-6)


def expected_objectness_gradient():
    """d loss / d raw for the objectness-only loss of `tiny_inputs` at ignore 0.7, by hand.

    d/do softplus(o) = sigmoid(o) on background, d/do softplus(-o) = sigmoid(o) - 1 on the positive t = 2,
    0 on the ignored t = 3; the box values tx..th get no gradient (the ignore mask is a constant).
    """
    expected = np.zeros((2, 8, 6))
    expected[..., 4] = sigmoid(OBJ_LOGITS)
    expected[0, 2, 4] -= 1
    expected[0, 3, 4] = 0
    return expected


def objectness_gradient(hybridize):
    raw, target, gt_boxes = tiny_inputs()
    loss = build_loss(OBJ_ONLY, 0.7, hybridize)
    raw_nd = mx.nd.array(raw)
    raw_nd.attach_grad()
    with mx.autograd.record():
        out = loss(mx.nd.array(target), mx.nd.array(gt_boxes), raw_nd)
    out.backward()
    return raw_nd.grad.asnumpy().reshape(2, 8, 6)


def test_gradient_hybridized():
    np.testing.assert_allclose(objectness_gradient(hybridize=True), expected_objectness_gradient(),
                               rtol=1e-5, atol=1e-7)


# the child loads this file by its path (no test folder on sys.path)
GRADIENT_SCRIPT = """
import importlib.util, json
spec = importlib.util.spec_from_file_location("test_losses", {path!r})
test_losses = importlib.util.module_from_spec(spec)
spec.loader.exec_module(test_losses)
print(json.dumps(test_losses.objectness_gradient(hybridize=False).tolist()))
"""


@pytest.mark.slow
def test_gradient_imperative():
    # run in a child process: the failure mode is a segfault, which would take pytest down with it
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = GRADIENT_SCRIPT.format(path=str(Path(__file__).resolve()))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"child exited with {done.returncode}: {done.stderr[-2000:]}"
    grad = np.asarray(json.loads(done.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(grad, expected_objectness_gradient(), rtol=1e-5, atol=1e-7)


def test_trim_padding_keeps_every_box_in_a_few_shapes():
    boxes = -np.ones((3, 100, 4), np.float32)
    boxes[0, :5] = [0, 0, 10, 10]
    boxes[2, :40] = [0, 0, 4, 4]                         # the fullest image: 40 boxes -> 64 columns
    boxes[2, 39] = [0, 0, 0, 0]                          # a degenerate box is still a box, not padding
    out = trim_padding(mx.nd.array(boxes))
    assert out.shape == (3, 64, 4)
    np.testing.assert_array_equal(out.asnumpy(), boxes[:, :64])
    assert trim_padding(mx.nd.array(boxes[:, :50])).shape == (3, 50, 4)          # never more than M
    assert trim_padding(mx.nd.array(-np.ones((2, 100, 4), np.float32))).shape == (2, 32, 4)   # no box at all
    assert trim_padding(mx.nd.array(boxes), multiple=8).shape == (3, 40, 4)
    boxes[1, 70] = [5, 5, 9, 9]                          # a box after padding rows is kept too
    assert trim_padding(mx.nd.array(boxes)).shape == (3, 96, 4)


@pytest.mark.parametrize("hybridize", [False, True])
def test_trimmed_padding_gives_the_hand_loss(hybridize):
    """The trainer's trim (`trim_padding`) in front of the loss: the ignore-mask hand case, unchanged, with the
    ground truth padded to 70 columns and trimmed to 32, through one (hybridized) loss that saw both widths."""
    raw, target, gt_boxes = tiny_inputs()
    wide = -np.ones((2, 70, 4), np.float32)
    wide[:, :2] = gt_boxes
    loss = build_loss(OBJ_ONLY, 0.7, hybridize)
    full = run_loss(loss, raw, target, wide)
    trimmed = trim_padding(mx.nd.array(wide))
    assert trimmed.shape == (2, 32, 4)
    out = run_loss(loss, raw, target, trimmed.asnumpy())
    expected = [obj_by_hand([2], [0, 1, 4, 5, 6, 7], 0), obj_by_hand([], range(8), 1)]
    np.testing.assert_allclose(out[:, 0], expected, rtol=1e-5)
    np.testing.assert_allclose(full, out, rtol=1e-6)
