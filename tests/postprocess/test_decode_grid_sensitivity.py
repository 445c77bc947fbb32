"""The decoder's grid sensitivity (Darknet's [yolo] `scale_x_y`) against Darknet's definition, by hand and by a
plain numpy loop: the centre in its cell is x = sigmoid(t) * s - (s - 1) / 2, then (x + j) * stride."""
import math

import mxnet as mx
import numpy as np
import pytest

from gluon_yolo3.postprocess.decode import YOLODecoder, per_scale

# two scales, as tests/targets: input 64 x 96, strides 16 and 32, 2 and 3 anchors
ANCHORS = [[(8, 10), (20, 14)], [(30, 44), (44, 30), (60, 62)]]
STRIDES = (16, 32)
SHAPES = [(4, 6, 2), (2, 3, 3)]


def decode(raw, scale_x_y, hybridize=False):
    decoder = YOLODecoder(ANCHORS, STRIDES, scale_x_y)
    decoder.initialize()
    if hybridize:
        decoder.hybridize()
    return decoder(*[mx.nd.array(r) for r in raw]).asnumpy()


def zero_raw(batch=1):
    return [np.zeros((batch, h, w, a, 6), np.float32) for h, w, a in SHAPES]


@pytest.mark.parametrize("hybridize", [False, True])
def test_known_cells(hybridize):
    raw = zero_raw()
    # scale 0 (s = 1.05), row 3, col 0, anchor 0 (8 x 10), flat index (3 * 6 + 0) * 2 = 36:
    # sigmoid(tx) = 0.75 -> 0.75 * 1.05 - 0.025 = 0.7625 -> x = 12.2; sigmoid(ty) = 0.25 -> 0.2375 -> y = 51.8
    raw[0][0, 3, 0, 0, 0], raw[0][0, 3, 0, 0, 1] = math.log(3), -math.log(3)
    # scale 1 (s = 1.2), row 1, col 2, anchor 2 (60 x 62), flat index 48 + (1 * 3 + 2) * 3 + 2 = 65:
    # tx = 30 (sigmoid 1) -> 1.2 - 0.1 = 1.1: past the cell's right edge, x = (1.1 + 2) * 32 = 99.2;
    # ty = -30 (sigmoid 0) -> -0.1: past its top edge, y = (-0.1 + 1) * 32 = 28.8
    raw[1][0, 1, 2, 2, 0], raw[1][0, 1, 2, 2, 1] = 30, -30
    boxes = decode(raw, [1.05, 1.2], hybridize)[0]
    np.testing.assert_allclose(boxes[36], [12.2 - 4, 51.8 - 5, 12.2 + 4, 51.8 + 5], atol=1e-4)
    np.testing.assert_allclose(boxes[65], [99.2 - 30, 28.8 - 31, 99.2 + 30, 28.8 + 31], atol=1e-4)
    # sigmoid 0.5 is the cell's middle whatever s: scale 0, row 0, col 1, anchor 1 (20 x 14), index 3
    np.testing.assert_allclose(boxes[3], [24 - 10, 8 - 7, 24 + 10, 8 + 7], atol=1e-4)


def reference(raw, scale_x_y):
    """Darknet's yolo layer as a loop: scale, y (i), x (j), anchor."""
    out = []
    for raw_s, anchors, stride, s in zip(raw, ANCHORS, STRIDES, scale_x_y):
        _, height, width, num_a, _ = raw_s.shape
        for i in range(height):
            for j in range(width):
                for a in range(num_a):
                    tx, ty, tw, th = raw_s[:, i, j, a, :4].astype(np.float64).T
                    bx = (1 / (1 + np.exp(-tx)) * s - (s - 1) / 2 + j) * stride
                    by = (1 / (1 + np.exp(-ty)) * s - (s - 1) / 2 + i) * stride
                    bw, bh = anchors[a][0] * np.exp(tw), anchors[a][1] * np.exp(th)
                    out.append(np.stack([bx - bw / 2, by - bh / 2, bx + bw / 2, by + bh / 2], axis=-1))
    return np.stack(out, axis=1)


@pytest.mark.parametrize("scale_x_y", [1.0, 1.05, [1.2, 1.1]])
def test_matches_loop_reference(scale_x_y):
    rng = np.random.default_rng(3)
    raw = [rng.normal(0, 2, r.shape).astype(np.float32) for r in zero_raw(batch=2)]
    expected = reference(raw, per_scale(scale_x_y, 2))
    np.testing.assert_allclose(decode(raw, scale_x_y, hybridize=True), expected, rtol=1e-5, atol=1e-3)


def test_per_scale_values():
    assert per_scale(1.05, 2) == (1.05, 1.05)
    assert per_scale([1.2, 1.1], 2) == (1.2, 1.1)
    with pytest.raises(ValueError, match=r"model.scale_x_y: 3 values .* for 2 scales"):
        per_scale([1.2, 1.1, 1.05], 2)
