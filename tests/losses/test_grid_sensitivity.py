"""YOLOLoss with a grid sensitivity (`scale_x_y` s): the centre target reaches the terms as the target of
sigmoid(tx, ty), (x + (s - 1) / 2) / s, so that a prediction decoding exactly onto the box centre is the
minimum of the centre loss (hand-computed values)."""
import math

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd

from gluon_yolo3.losses.composer import YOLOLoss

# one scale: input 32 x 32, stride 16 -> grid 2 x 2, anchors (16, 16), (8, 8), C = 1; T = 8
ANCHORS = [[(16, 16), (8, 8)]]
STRIDES = (16,)
XY = [{"type": "xy_bce"}]


def case(x_in_cell, y_in_cell):
    """One box centred at in-cell (x, y) of cell (row 0, col 1), anchor 0 -> flat index 2; 16 x 16 px."""
    cx, cy = (1 + x_in_cell) * 16, y_in_cell * 16
    box = (cx - 8, cy - 8, cx + 8, cy + 8)
    target = np.zeros((1, 8, 11), np.float32)
    target[0, 2] = [1, x_in_cell, y_in_cell, 0, 0, 2 - 256 / 1024, *box, 1]
    gt = np.asarray([box], np.float32)[None]
    return target, gt


def xy_loss_and_grad(scale_x_y, txy, target, gt, hybridize):
    loss = YOLOLoss(XY, ANCHORS, STRIDES, scale_x_y=scale_x_y)
    loss.initialize()
    if hybridize:
        loss.hybridize()
    raw = np.zeros((1, 2, 2, 2, 6), np.float32)
    raw[0, 0, 1, 0, 0:2] = txy
    raw = mx.nd.array(raw)
    raw.attach_grad()
    with autograd.record():
        out = loss(mx.nd.array(target), mx.nd.array(gt), raw)
    out.backward()
    return float(out.asnumpy()[0, 0]), raw.grad.asnumpy()[0, 0, 1, 0, 0:2]


def bce(p, z):
    return -(z * math.log(p) + (1 - z) * math.log(1 - p))


@pytest.mark.parametrize("hybridize", [False, True])
def test_centre_target_is_mapped_through_the_grid_sensitivity(hybridize):
    # centre at in-cell (0.01, 0.9): s = 1.05 -> sigmoid targets (0.01 + 0.025) / 1.05 = 1/30 and 0.925 / 1.05
    target, gt = case(0.01, 0.9)
    z = np.array([0.035 / 1.05, 0.925 / 1.05])
    w = 2 - 256 / 1024
    value, _ = xy_loss_and_grad(1.05, [0.0, 0.0], target, gt, hybridize)        # sigmoid 0.5 each
    assert value == pytest.approx(w * (bce(0.5, z[0]) + bce(0.5, z[1])), rel=1e-5)
    # at logits whose decoded centre is exactly the box's, the centre loss is at its minimum: zero gradient
    logits = np.log(z / (1 - z)).astype(np.float32)
    _, grad = xy_loss_and_grad(1.05, logits, target, gt, hybridize)
    np.testing.assert_allclose(grad, 0, atol=1e-6)
    # ... whereas the plain target (s = 1) pulls the same logits towards sigmoid 0.01 and 0.9
    _, grad = xy_loss_and_grad(1.0, logits, target, gt, hybridize)
    np.testing.assert_allclose(grad, w * (z - [0.01, 0.9]), rtol=1e-4)
