"""IoU-family measures and box terms (giou, diou, ciou), and the guide's terms (xy_mse, wh_mse).

Values are checked on hand-computed boxes; gradients against central finite differences of a float64
numpy reference written here from the papers' formulas.
"""
import math

import mxnet as mx
import numpy as np
import pytest

from gluon_yolo3 import api
from gluon_yolo3.losses.composer import YOLOLoss
from gluon_yolo3.losses.guide import WHMSE, XYMSE
from gluon_yolo3.boxes import iou_family
from gluon_yolo3.losses.iou import CIoULoss, DIoULoss, GIoULoss
from gluon_yolo3.registry import LOSSES

# hybridized single terms do not read every input (e.g. noobj); MXNet warns about it
pytestmark = pytest.mark.filterwarnings("ignore:.*is not used by any computation")

KINDS = ("iou", "giou", "diou", "ciou")


# ----------------------------------------------------------------------------------------------------
# numpy reference (float64), straight from the definitions

def reference(a, b, kind, alpha=None):
    """IoU / GIoU / DIoU / CIoU of x1y1x2y2 boxes `(..., 4)`; `alpha` fixes CIoU's trade-off weight."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    aw, ah = a[..., 2] - a[..., 0], a[..., 3] - a[..., 1]
    bw, bh = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    iou = inter / union
    if kind == "iou":
        return iou
    cw = np.maximum(a[..., 2], b[..., 2]) - np.minimum(a[..., 0], b[..., 0])
    ch = np.maximum(a[..., 3], b[..., 3]) - np.minimum(a[..., 1], b[..., 1])
    if kind == "giou":
        return iou - (cw * ch - union) / (cw * ch)
    d2 = ((a[..., 0] + a[..., 2] - b[..., 0] - b[..., 2]) / 2) ** 2 \
        + ((a[..., 1] + a[..., 3] - b[..., 1] - b[..., 3]) / 2) ** 2
    diou = iou - d2 / (cw ** 2 + ch ** 2)
    if kind == "diou":
        return diou
    v = 4 / math.pi ** 2 * (np.arctan(bw / bh) - np.arctan(aw / ah)) ** 2
    if alpha is None:
        alpha = np.where(v > 0, v / np.maximum(1 - iou + v, 1e-300), 0.0)   # identical boxes: v = 0
    return diou - alpha * v


def mx_family(a, b, kind, dtype="float32"):
    return iou_family(mx.nd, mx.nd.array(a, dtype=dtype), mx.nd.array(b, dtype=dtype), kind).asnumpy()


# ----------------------------------------------------------------------------------------------------
# hand values

V = 4 / math.pi ** 2 * (math.pi / 4 - math.atan(0.5)) ** 2   # = 0.405285 * 0.321751^2 = 0.041956
HAND = [
    # identical: every measure is 1 (no gap, no distance, same aspect)
    ([0, 0, 4, 4], [0, 0, 4, 4], {"iou": 1, "giou": 1, "diou": 1, "ciou": 1}),
    # disjoint, 2x2 boxes at (0,0) and (4,4): IoU 0; enclosing 6x6 = 36, union 8:
    # GIoU = -(36 - 8)/36 = -7/9 = -0.7778; centres (1,1),(5,5): d^2 = 32, c^2 = 72: DIoU = -4/9 = -0.4444;
    # same aspect: v = 0, CIoU = DIoU
    ([0, 0, 2, 2], [4, 4, 6, 6], {"iou": 0, "giou": -7 / 9, "diou": -4 / 9, "ciou": -4 / 9}),
    # nested, 2x2 in the middle of 4x4: IoU = 4/16 = 0.25; enclosing = outer = union: GIoU 0.25;
    # same centre: DIoU 0.25; same aspect: CIoU 0.25
    ([0, 0, 4, 4], [1, 1, 3, 3], {"iou": 0.25, "giou": 0.25, "diou": 0.25, "ciou": 0.25}),
    # touching along x = 2: IoU 0; enclosing 4x2 = 8 = union: GIoU 0; centres (1,1),(3,1): d^2 = 4,
    # c^2 = 16 + 4 = 20: DIoU = -0.2; same aspect: CIoU -0.2
    ([0, 0, 2, 2], [2, 0, 4, 2], {"iou": 0, "giou": 0, "diou": -0.2, "ciou": -0.2}),
    # nested, other aspect: 2x4 in the left half of 4x4: IoU = 8/16 = 0.5 = GIoU (enclosing = union);
    # centres (2,2),(1,2): d^2 = 1, c^2 = 32: DIoU = 0.5 - 1/32 = 0.46875;
    # v = 4/pi^2 (atan(2/4) - atan(4/4))^2 = 0.041956, alpha = v / (1 - 0.5 + v) = 0.077417,
    # CIoU = 0.46875 - 0.077417 * 0.041956 = 0.46875 - 0.003248 = 0.465502
    ([0, 0, 4, 4], [0, 0, 2, 4], {"iou": 0.5, "giou": 0.5, "diou": 0.46875,
                                  "ciou": 0.46875 - V * V / (0.5 + V)}),
    # partial overlap: 4x2 at (0,0), 4x4 at (2,1): intersection [2,1,4,2] = 2, union 8 + 16 - 2 = 22:
    # IoU = 1/11 = 0.090909; enclosing [0,0,6,5] = 30: GIoU = 1/11 - 8/30 = -0.175758;
    # centres (2,1),(4,3): d^2 = 8, c^2 = 36 + 25 = 61: DIoU = 1/11 - 8/61 = -0.040238;
    # v = 4/pi^2 (atan(4/4) - atan(4/2))^2 = 0.041956 (= V), alpha = V / (10/11 + V) = 0.044116:
    # CIoU = -0.040238 - 0.001851 = -0.042089
    ([0, 0, 4, 2], [2, 1, 6, 5], {"iou": 1 / 11, "giou": 1 / 11 - 8 / 30, "diou": 1 / 11 - 8 / 61,
                                  "ciou": 1 / 11 - 8 / 61 - V * V / (10 / 11 + V)}),
]


@pytest.mark.parametrize("kind", KINDS)
def test_hand_values(kind):
    a = np.array([h[0] for h in HAND], np.float32)
    b = np.array([h[1] for h in HAND], np.float32)
    expected = [h[2][kind] for h in HAND]
    np.testing.assert_allclose(mx_family(a, b, kind), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(mx_family(b, a, kind), expected, rtol=0, atol=1e-6)   # symmetric
    np.testing.assert_allclose(reference(a, b, kind), expected, rtol=0, atol=1e-12)  # the reference too


def test_hand_decimals_in_comments():
    """The decimals quoted in the comments above are what the fractions give."""
    assert round(V, 6) == 0.041956
    assert round(0.46875 - V * V / (0.5 + V), 6) == 0.465502
    assert round(1 / 11 - 8 / 61 - V * V / (10 / 11 + V), 6) == -0.042089


@pytest.mark.parametrize("kind", KINDS)
def test_symbolic_and_broadcasting(kind):
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, (2, 5)), random_boxes(rng, (2, 6))
    # all pairs (2, 5, 6) through broadcasting, imperative and symbolic
    pairs = mx_family(a[:, :, None], b[:, None], kind)
    assert pairs.shape == (2, 5, 6)
    np.testing.assert_allclose(pairs, reference(a[:, :, None], b[:, None], kind), rtol=1e-5, atol=1e-6)
    sym = iou_family(mx.sym, mx.sym.expand_dims(mx.sym.var("a"), 2), mx.sym.expand_dims(mx.sym.var("b"), 1), kind)
    out = sym.bind(mx.cpu(), {"a": mx.nd.array(a), "b": mx.nd.array(b)}).forward()[0].asnumpy()
    np.testing.assert_allclose(out, pairs, rtol=1e-6, atol=1e-7)


def test_zero_size_boxes_stay_finite():
    """Unassigned target rows hold the box 0,0,0,0; the loss masks them but they must not make NaNs."""
    a = mx.nd.array([[3, 4, 9, 10], [0, 0, 0, 0]])
    b = mx.nd.zeros((2, 4))
    a.attach_grad()
    with mx.autograd.record():
        out = sum(iou_family(mx.nd, a, b, kind).sum() for kind in KINDS)
    out.backward()
    assert np.isfinite(out.asnumpy()).all() and np.isfinite(a.grad.asnumpy()).all()


def test_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        iou_family(mx.nd, mx.nd.zeros((1, 4)), mx.nd.zeros((1, 4)), "eiou")


# ----------------------------------------------------------------------------------------------------
# gradients against finite differences

def random_boxes(rng, shape, low=0.0, high=40.0):
    xy = rng.uniform(low, high, shape + (2,))
    wh = rng.uniform(3, 25, shape + (2,))
    return np.concatenate([xy, xy + wh], axis=-1)


def numeric_grad(f, x, h=1e-6):
    grad = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += h
        down[idx] -= h
        grad[idx] = (f(up) - f(down)) / (2 * h)
    return grad


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradients_match_finite_differences(kind, seed):
    rng = np.random.default_rng(seed)
    a, b = random_boxes(rng, (12,)), random_boxes(rng, (12,))
    iou = reference(a, b, "iou")
    assert (iou > 0).sum() >= 2 and (iou == 0).sum() >= 2, "want overlapping and disjoint pairs"
    weights = rng.uniform(0.5, 1.5, 12)        # a random linear functional: checks every element
    xa, xb = mx.nd.array(a, dtype="float64"), mx.nd.array(b, dtype="float64")
    xa.attach_grad()
    xb.attach_grad()
    with mx.autograd.record():
        out = (iou_family(mx.nd, xa, xb, kind) * mx.nd.array(weights, dtype="float64")).sum()
    out.backward()
    # CIoU holds alpha constant in back-propagation: differentiate with alpha frozen at (a, b)
    alpha = None
    if kind == "ciou":
        v = reference(a, b, "diou") - reference(a, b, "ciou", alpha=1.0)
        alpha = v / (1 - iou + v)
    np.testing.assert_allclose(out.asscalar(), (weights * reference(a, b, kind)).sum(), rtol=1e-9)
    grad_a = numeric_grad(lambda x: (weights * reference(x, b, kind, alpha)).sum(), a)
    grad_b = numeric_grad(lambda x: (weights * reference(a, x, kind, alpha)).sum(), b)
    assert np.abs(grad_a).max() > 1e-3
    np.testing.assert_allclose(xa.grad.asnumpy(), grad_a, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(xb.grad.asnumpy(), grad_b, rtol=1e-5, atol=1e-8)


# ----------------------------------------------------------------------------------------------------
# the box terms

def term_inputs():
    """B = 2, T = 3; image 0 has anchors 0 and 2 assigned, image 1 none."""
    target = np.zeros((2, 3, 12), np.float32)
    target[0, 0, [0, 5]] = 1, 1.5
    target[0, 0, 6:10] = [0, 0, 4, 4]
    target[0, 2, [0, 5]] = 1, 1.25
    target[0, 2, 6:10] = [2, 1, 6, 5]
    pred_boxes = np.array([[[0, 0, 2, 4], [10, 10, 20, 20], [0, 0, 4, 2]],
                           [[1, 1, 5, 5], [0, 0, 3, 3], [7, 7, 9, 9]]], np.float32)
    pred = np.random.default_rng(0).normal(size=(2, 3, 7)).astype(np.float32)
    noobj = 1 - target[..., :1]
    return [mx.nd.array(x) for x in (pred, target, pred_boxes, noobj)]


# metric of row 0 (pred [0,0,2,4] vs [0,0,4,4]) and row 2 (pred [0,0,4,2] vs [2,1,6,5]): see HAND above
ROW0 = {"giou": 0.5, "diou": 0.46875, "ciou": 0.46875 - V * V / (0.5 + V)}
ROW2 = {"giou": 1 / 11 - 8 / 30, "diou": 1 / 11 - 8 / 61, "ciou": 1 / 11 - 8 / 61 - V * V / (10 / 11 + V)}


@pytest.mark.parametrize("hybridize", [False, True])
@pytest.mark.parametrize("use_box_weight", [True, False])
@pytest.mark.parametrize("name, cls", [("giou", GIoULoss), ("diou", DIoULoss), ("ciou", CIoULoss)])
def test_box_terms_hand_values(name, cls, use_box_weight, hybridize):
    term = LOSSES.build({"type": name, "use_box_weight": use_box_weight})
    assert type(term) is cls and term.short_name == name
    term.initialize()
    if hybridize:
        term.hybridize()
    out = term(*term_inputs()).asnumpy()
    w0, w2 = (1.5, 1.25) if use_box_weight else (1.0, 1.0)
    # row 1 of image 0 and all of image 1 are unassigned: they add nothing
    expected = [w0 * (1 - ROW0[name]) + w2 * (1 - ROW2[name]), 0.0]
    assert out.shape == (2,)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["giou", "diou", "ciou"])
def test_box_term_gradient_on_pred_boxes(name):
    pred, target, pred_boxes, noobj = term_inputs()
    # move the corners off the hand case's shared edges (min/max ties have no derivative)
    pred_boxes = pred_boxes + mx.nd.array(np.random.default_rng(3).uniform(0.1, 0.4, pred_boxes.shape))
    term = LOSSES.build({"type": name})
    term.initialize()
    pred_boxes.attach_grad()
    with mx.autograd.record():
        loss = term(pred, target, pred_boxes, noobj).sum()
    loss.backward()
    grad = pred_boxes.grad.asnumpy()
    t, p = target.asnumpy().astype(np.float64), pred_boxes.asnumpy().astype(np.float64)
    weight = t[..., 0] * t[..., 5]
    alpha = None
    if name == "ciou":
        iou = reference(p, t[..., 6:10], "iou")
        with np.errstate(all="ignore"):   # unassigned rows hold zero-size boxes: 0/0, not used
            v = reference(p, t[..., 6:10], "diou") - reference(p, t[..., 6:10], "ciou", alpha=1.0)
            alpha = v / (1 - iou + v)
    rows = weight > 0

    def loss_of(x):
        return (weight[rows] * (1 - reference(x[rows], t[..., 6:10][rows], name, alpha if alpha is None
                                              else alpha[rows]))).sum()
    expected = np.zeros_like(p)
    expected[rows] = numeric_grad(lambda x: loss_of(np.where(rows[..., None], x, p)), p)[rows]
    np.testing.assert_allclose(grad, expected, rtol=1e-3, atol=1e-5)
    assert (grad[~rows] == 0).all() and np.abs(grad[rows]).max() > 1e-2


def test_iou_term_in_composer_trains_the_box():
    """In YOLOLoss the IoU terms see the decoded boxes: their gradient reaches tx, ty, tw, th."""
    loss = YOLOLoss([{"type": "ciou"}], anchors=[[[8, 8]]], strides=[8], ignore_iou=0.5)
    loss.initialize()
    target = np.zeros((1, 4, 11), np.float32)      # 2x2 grid, one anchor, one class
    target[0, 3, [0, 5]] = 1, 1.0
    target[0, 3, 6:10] = [9, 10, 15, 14]            # in cell (row 1, col 1)
    raw = mx.nd.array(np.random.default_rng(1).normal(scale=0.3, size=(1, 2, 2, 1, 6)))
    raw.attach_grad()
    with mx.autograd.record():
        out = loss(mx.nd.array(target), mx.nd.array([[[9, 10, 15, 14]]]), raw)
    out.backward()
    g = raw.grad.asnumpy()
    assert np.isfinite(out.asnumpy()).all() and out.asnumpy()[0, 0] > 0
    assert (np.abs(g[0, 1, 1, 0, :4]) > 0).all()    # the assigned cell's box outputs get a gradient
    assert (g[0, 0, :, 0, :] == 0).all() and (g[0, 1, 1, 0, 4:] == 0).all()


# ----------------------------------------------------------------------------------------------------
# the guide's terms: xy_mse, wh_mse

def guide_inputs():
    """B = 2, T = 2: image 0 row 0 assigned; row 1 and image 1 hold garbage that must not count."""
    pred = np.zeros((2, 2, 7), np.float32)
    pred[0, 0, :4] = [0.0, math.log(3), 0.5, -0.1]   # sigmoid(0) = 0.5, sigmoid(log 3) = 3/4
    pred[0, 1, :4] = [3, -2, 4, 1]
    pred[1, :, :4] = [[1, 1, 1, 1], [-1, 2, 0, 3]]
    target = np.zeros((2, 2, 12), np.float32)
    target[0, 0, :6] = [1, 0.25, 0.5, 0.2, 0.3, 1.5]  # obj, x, y, log w/aw, log h/ah, box weight
    target[0, 1, 1:5] = [0.9, 0.1, -1, 2]           # unassigned (obj 0)
    noobj = 1 - target[..., :1]
    return [mx.nd.array(x) for x in (pred, target, np.zeros((2, 2, 4), np.float32), noobj)]


@pytest.mark.parametrize("hybridize", [False, True])
def test_xy_mse_hand_values(hybridize):
    term = XYMSE()
    term.initialize()
    if hybridize:
        term.hybridize()
    # (0.5 - 0.25)^2 + (0.75 - 0.5)^2 = 0.0625 + 0.0625 = 0.125; x lambda_coord 5 = 0.625
    np.testing.assert_allclose(term(*guide_inputs()).asnumpy(), [0.625, 0], rtol=1e-6)
    # with the box weight 1.5: 0.9375; with lambda_coord 1: 0.125
    term = LOSSES.build({"type": "xy_mse", "use_box_weight": True})
    term.initialize()
    np.testing.assert_allclose(term(*guide_inputs()).asnumpy(), [0.9375, 0], rtol=1e-6)
    term = LOSSES.build({"type": "xy_mse", "lambda_coord": 1.0})
    term.initialize()
    np.testing.assert_allclose(term(*guide_inputs()).asnumpy(), [0.125, 0], rtol=1e-6)


@pytest.mark.parametrize("hybridize", [False, True])
def test_wh_mse_hand_values(hybridize):
    term = WHMSE()
    term.initialize()
    if hybridize:
        term.hybridize()
    # (0.5 - 0.2)^2 + (-0.1 - 0.3)^2 = 0.09 + 0.16 = 0.25; x lambda_coord 5 = 1.25
    np.testing.assert_allclose(term(*guide_inputs()).asnumpy(), [1.25, 0], rtol=1e-6)
    term = LOSSES.build({"type": "wh_mse", "lambda_coord": 2.0, "use_box_weight": True})
    term.initialize()
    np.testing.assert_allclose(term(*guide_inputs()).asnumpy(), [0.25 * 2 * 1.5, 0], rtol=1e-6)


def test_guide_terms_gradient_hand_values():
    """d/dtx 5 (sigmoid(tx) - x)^2 = 10 (sigmoid(tx) - x) sigmoid'(tx): at tx = 0, x = 0.25:
    10 * 0.25 * 0.25 = 0.625; ty = log 3, y = 0.5: 10 * 0.25 * (3/4 * 1/4) = 0.46875.
    d/dtw 5 (tw - t)^2 = 10 (tw - t): 10 * 0.3 = 3, 10 * (-0.4) = -4."""
    pred, target, boxes, noobj = guide_inputs()
    pred.attach_grad()
    xy, wh = XYMSE(), WHMSE()
    with mx.autograd.record():
        loss = xy(pred, target, boxes, noobj).sum() + wh(pred, target, boxes, noobj).sum()
    loss.backward()
    g = pred.grad.asnumpy()
    np.testing.assert_allclose(g[0, 0, :4], [0.625, 0.46875, 3, -4], rtol=1e-5)
    assert (g[0, 1] == 0).all() and (g[1] == 0).all() and (g[0, 0, 4:] == 0).all()


def test_guide_recipe(recipes):
    recipe = api.load(recipes / "demo_tiny_guide.yaml")
    assert recipe["name"] == "demo_tiny_guide"
    assert recipe["model"]["input_size"] == 128                 # from demo_tiny.yaml
    assert recipe["loss"]["ignore_iou"] == 0.5
    terms = recipe["loss"]["terms"]
    assert [t["type"] for t in terms] == ["xy_mse", "wh_mse", "objectness_bce", "class_bce"]
    assert terms[0]["lambda_coord"] == terms[1]["lambda_coord"] == 5.0
    assert terms[2]["noobj_weight"] == 0.5
    loss = YOLOLoss(terms, recipe["model"]["anchors"], [16, 32], recipe["loss"]["ignore_iou"])
    assert loss.names == ["xy", "wh", "obj", "cls"] and loss.ignore_iou == 0.5
    assert loss.terms[2].noobj_weight == 0.5 and loss.terms[0].lambda_coord == 5.0
