"""Box conversions, shape IoU, the best-anchor assigner and its agreement with decoding.

Every expected value is worked out by hand (in the comments) or by a plain numpy loop written here from
the conventions of DEVELOPERS.md, never by calling the code under test.

Assigner set-up used throughout (non-square on purpose, so that a [x][y] or H/W mix-up moves the row):
input (h, w) = (64, 96); strides (16, 32)
  scale 0: grid H=4, W=6, A=2, anchors (8, 10), (20, 14)              -> rows  0..47
  scale 1: grid H=2, W=3, A=3, anchors (30, 44), (44, 30), (60, 62)   -> rows 48..65
row = offset(scale) + (row * W + col) * A + anchor
"""
import math

import mxnet as mx
import numpy as np
import pytest

from gluon_yolo3.boxes import cxcywh_to_xyxy, shape_iou, xyxy_to_cxcywh
from gluon_yolo3.postprocess.decode import YOLODecoder, flatten_raw
from gluon_yolo3.registry import ASSIGNERS
from gluon_yolo3.targets.assigner import BestAnchorAssigner

ANCHORS = [[(8, 10), (20, 14)], [(30, 44), (44, 30), (60, 62)]]
STRIDES = (16, 32)
INPUT_HW = (64, 96)
NUM_CLASSES = 3
T = 4 * 6 * 2 + 2 * 3 * 3          # 48 + 18 = 66
AREA = 64 * 96                      # 6144


def make_assigner():
    return BestAnchorAssigner(ANCHORS, STRIDES, NUM_CLASSES)


def expected_row(cell_x, cell_y, log_w, log_h, box, classes):
    """One target row from hand-computed values (the layout of DEVELOPERS.md)."""
    x1, y1, x2, y2 = box
    row = np.zeros(10 + NUM_CLASSES, dtype=np.float64)
    row[0] = 1
    row[1:3] = cell_x, cell_y
    row[3:5] = log_w, log_h
    row[5] = 2 - (x2 - x1) * (y2 - y1) / AREA
    row[6:10] = box
    for c in classes:
        row[10 + c] = 1
    return row


def check_targets(targets, expected_rows):
    """`expected_rows`: {flat index: row}; every other entry of `targets` must be exactly zero."""
    assert targets.shape == (T, 10 + NUM_CLASSES)
    assert targets.dtype == np.float32
    expected = np.zeros((T, 10 + NUM_CLASSES))
    for index, row in expected_rows.items():
        expected[index] = row
    np.testing.assert_array_equal(np.nonzero(targets[:, 0])[0], sorted(expected_rows))
    np.testing.assert_allclose(targets, expected, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------------------
# boxes.py


def test_xyxy_to_cxcywh_hand_values():
    boxes = np.array([[10, 20, 50, 40],      # centre (30, 30), 40 x 20
                      [0, 0, 1, 3],          # centre (0.5, 1.5), 1 x 3
                      [-4, 6, 4, 7.5]])      # centre (0, 6.75), 8 x 1.5
    expected = np.array([[30, 30, 40, 20],
                         [0.5, 1.5, 1, 3],
                         [0, 6.75, 8, 1.5]])
    np.testing.assert_allclose(xyxy_to_cxcywh(boxes), expected, rtol=0, atol=1e-6)


def test_cxcywh_to_xyxy_hand_values():
    boxes = np.array([[30, 30, 40, 20], [0.5, 1.5, 1, 3], [0, 6.75, 8, 1.5]])
    expected = np.array([[10, 20, 50, 40], [0, 0, 1, 3], [-4, 6, 4, 7.5]])
    np.testing.assert_allclose(cxcywh_to_xyxy(boxes), expected, rtol=0, atol=1e-6)


def test_box_conversions_keep_leading_axes_and_round_trip():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 400, (2, 5, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 200, (2, 5, 2))], axis=-1).astype(np.float32)
    centre = xyxy_to_cxcywh(boxes)
    assert centre.shape == (2, 5, 4)
    # plain reference: centre = (x1 + x2) / 2, size = x2 - x1
    np.testing.assert_allclose(centre[..., 0], (boxes[..., 0] + boxes[..., 2]) / 2, rtol=1e-6)
    np.testing.assert_allclose(centre[..., 3], boxes[..., 3] - boxes[..., 1], rtol=1e-6)
    np.testing.assert_allclose(cxcywh_to_xyxy(centre), boxes, rtol=0, atol=1e-4)
    np.testing.assert_allclose(xyxy_to_cxcywh(cxcywh_to_xyxy(centre)), centre, rtol=0, atol=1e-4)


def test_shape_iou_hand_values():
    a = np.array([[10, 10], [4, 8], [2, 6]])
    b = np.array([[10, 10], [5, 20], [8, 4]])
    # (10,10)/(10,10): 1
    # (10,10)/(5,20):  inter 5*10=50,  union 100+100-50=150 -> 1/3
    # (10,10)/(8,4):   inter 8*4=32,   union 100+32-32=100  -> 0.32
    # (4,8)/(10,10):   inter 4*8=32,   union 32+100-32=100  -> 0.32
    # (4,8)/(5,20):    inter 4*8=32,   union 32+100-32=100  -> 0.32
    # (4,8)/(8,4):     inter 4*4=16,   union 32+32-16=48    -> 1/3
    # (2,6)/(10,10):   inter 2*6=12,   union 12+100-12=100  -> 0.12
    # (2,6)/(5,20):    inter 2*6=12,   union 12+100-12=100  -> 0.12
    # (2,6)/(8,4):     inter 2*4=8,    union 12+32-8=36     -> 2/9
    expected = np.array([[1, 1 / 3, 0.32],
                         [0.32, 0.32, 1 / 3],
                         [0.12, 0.12, 2 / 9]])
    iou = shape_iou(a, b)
    assert iou.shape == (3, 3)
    np.testing.assert_allclose(iou, expected, rtol=1e-9)
    # symmetric
    np.testing.assert_allclose(shape_iou(b, a), expected.T, rtol=1e-9)


# ----------------------------------------------------------------------------------------------------
# BestAnchorAssigner


def test_registered_as_best_anchor():
    assigner = ASSIGNERS.build({"type": "best_anchor", "anchors": ANCHORS, "strides": STRIDES,
                                "num_classes": NUM_CLASSES})
    assert isinstance(assigner, BestAnchorAssigner)
    assert assigner.num_predictions(INPUT_HW) == T
    assert assigner.grid_shapes(INPUT_HW) == [(4, 6, 2), (2, 3, 3)]


def test_box_whose_x_and_y_cells_differ():
    # box (35, 14, 45, 26): centre (40, 20), 10 x 12, class 1
    # shape IoU: (8,10): 80/120 = 0.667; (20,14): 120/280 = 0.43; coarse anchors are far worse
    # -> scale 0, anchor 0; col = floor(40/16) = 2, row = floor(20/16) = 1
    # index = 0 + (1 * 6 + 2) * 2 + 0 = 16   ([x][y] swap would give (2*6+1)*2 = 26; H for W: 12)
    # in cell: 40/16 - 2 = 0.5, 20/16 - 1 = 0.25; log(10/8), log(12/10); weight 2 - 120/6144
    box = (35, 14, 45, 26)
    targets = make_assigner()(np.array([box]), np.array([1]), INPUT_HW)
    check_targets(targets, {16: expected_row(0.5, 0.25, math.log(10 / 8), math.log(12 / 10), box, [1])})
    assert targets[16, 5] == pytest.approx(2 - 120 / 6144, abs=1e-6)


def test_box_centred_on_a_cell_border():
    # box (38, 25, 58, 39): centre (48, 32) exactly on a cell corner, 20 x 14, class 0
    # shape IoU with (20,14) = 1 -> scale 0, anchor 1; col = floor(48/16) = 3, row = floor(32/16) = 2
    # index = (2 * 6 + 3) * 2 + 1 = 31; in cell (0, 0); log(20/20) = log(14/14) = 0
    box = (38, 25, 58, 39)
    targets = make_assigner()(np.array([box]), np.array([0]), INPUT_HW)
    check_targets(targets, {31: expected_row(0.0, 0.0, 0.0, 0.0, box, [0])})


def test_box_centre_on_image_edge_is_clipped_into_last_cell():
    # box (86, 57, 106, 71): centre (96, 64) = the bottom-right image corner, 20 x 14, class 2
    # scale 0, anchor 1; floor(96/16) = 6 -> clipped to col 5; floor(64/16) = 4 -> clipped to row 3
    # index = (3 * 6 + 5) * 2 + 1 = 47 (the last row of scale 0); in cell 96/16 - 5 = 1, 64/16 - 3 = 1
    box = (86, 57, 106, 71)
    targets = make_assigner()(np.array([box]), np.array([2]), INPUT_HW)
    check_targets(targets, {47: expected_row(1.0, 1.0, 0.0, 0.0, box, [2])})


def test_box_inside_last_cell_at_image_edge():
    # box (88, 58, 96, 64): touches the right and bottom edges, centre (92, 61), 8 x 6, class 0
    # shape IoU: (8,10): 48/80 = 0.6; (20,14): 48/280 -> scale 0, anchor 0
    # col = floor(92/16) = 5, row = floor(61/16) = 3 -> index (3*6+5)*2+0 = 46
    # in cell 92/16 - 5 = 0.75, 61/16 - 3 = 0.8125; log(8/8) = 0, log(6/10)
    box = (88, 58, 96, 64)
    targets = make_assigner()(np.array([box]), np.array([0]), INPUT_HW)
    check_targets(targets, {46: expected_row(0.75, 0.8125, 0.0, math.log(0.6), box, [0])})


def test_best_anchor_is_chosen_across_scales():
    # box (50, 26, 90, 54): centre (70, 40), 40 x 28, class 1
    # shape IoU: (8,10): 80/1120; (20,14): 280/1120; (30,44): 30*28=840 / (1120+1320-840) = 0.525;
    #            (44,30): 40*28=1120 / 1320 = 0.848; (60,62): 1120/3720 -> scale 1 (coarse), anchor 1
    # col = floor(70/32) = 2, row = floor(40/32) = 1 -> index 48 + (1 * 3 + 2) * 3 + 1 = 64
    # in cell 70/32 - 2 = 0.1875, 40/32 - 1 = 0.25; log(40/44), log(28/30)
    box = (50, 26, 90, 54)
    targets = make_assigner()(np.array([box]), np.array([1]), INPUT_HW)
    check_targets(targets, {64: expected_row(0.1875, 0.25, math.log(40 / 44), math.log(28 / 30), box, [1])})


def test_an_anchor_shape_two_scales_share_trains_on_both():
    """yolov4-tiny's masks 1,2,3 and 3,4,5 name anchor 3 (81x82) on both scales, and Darknet's two [yolo] layers
    each take a box whose best anchor it is; a box whose best anchor is not shared goes to one scale only."""
    anchors = [[(8, 10), (20, 14)], [(20, 14), (44, 30), (60, 62)]]            # (20, 14) on both scales
    assigner = BestAnchorAssigner(anchors, STRIDES, NUM_CLASSES)
    # box (40, 20, 60, 34): centre (50, 27), 20 x 14 -> exactly (20, 14): IoU 1 on scale 0's anchor 1 and scale
    # 1's anchor 0. Scale 0 (4 x 6 cells, 2 anchors): col 3, row 1 -> (1 * 6 + 3) * 2 + 1 = 19, in cell 0.125,
    # 0.6875. Scale 1 (2 x 3, 3 anchors, rows 48..65): col 1, row 0 -> 48 + (0 * 3 + 1) * 3 + 0 = 51, in cell
    # 50/32 - 1 = 0.5625, 27/32 = 0.84375. Size targets log(20/20) = log(14/14) = 0.
    box = (40, 20, 60, 34)
    targets = assigner(np.array([box]), np.array([2]), INPUT_HW)
    check_targets(targets, {19: expected_row(0.125, 0.6875, 0.0, 0.0, box, [2]),
                            51: expected_row(0.5625, 0.84375, 0.0, 0.0, box, [2])})
    # box (10, 10, 18, 20): 8 x 10 -> scale 0's anchor 0 alone; centre (14, 15): col 0, row 0 -> row 0
    box = (10, 10, 18, 20)
    targets = assigner(np.array([box]), np.array([0]), INPUT_HW)
    check_targets(targets, {0: expected_row(14 / 16, 15 / 16, 0.0, 0.0, box, [0])})


def test_several_boxes_at_once():
    # the boxes of the tests above together, each in its own slot: 16, 31, 46, 64
    boxes = np.array([(35, 14, 45, 26), (38, 25, 58, 39), (88, 58, 96, 64), (50, 26, 90, 54)])
    targets = make_assigner()(boxes, np.array([1, 0, 2, 1]), INPUT_HW)
    check_targets(targets, {
        16: expected_row(0.5, 0.25, math.log(10 / 8), math.log(12 / 10), boxes[0], [1]),
        31: expected_row(0.0, 0.0, 0.0, 0.0, boxes[1], [0]),
        46: expected_row(0.75, 0.8125, 0.0, math.log(0.6), boxes[2], [2]),
        64: expected_row(0.1875, 0.25, math.log(40 / 44), math.log(28 / 30), boxes[3], [1]),
    })


def test_two_boxes_on_one_slot_last_box_wins_classes_or_ed():
    # box A (35, 14, 45, 26), class 0: slot 16 (see above)
    # box B (37.5, 14.5, 46.5, 25.5), class 2: centre (42, 20), 9 x 11;
    #   shape IoU (8,10): 80/99 = 0.81, (20,14): 99/280 -> anchor 0; col floor(42/16) = 2, row 1 -> 16
    #   in cell 42/16 - 2 = 0.625, 0.25; log(9/8), log(11/10); weight 2 - 99/6144
    box_a = (35, 14, 45, 26)
    box_b = (37.5, 14.5, 46.5, 25.5)
    targets = make_assigner()(np.array([box_a, box_b]), np.array([0, 2]), INPUT_HW)
    check_targets(targets, {16: expected_row(0.625, 0.25, math.log(9 / 8), math.log(11 / 10), box_b, [0, 2])})
    # and the other order: A's fields, same classes
    targets = make_assigner()(np.array([box_b, box_a]), np.array([2, 0]), INPUT_HW)
    check_targets(targets, {16: expected_row(0.5, 0.25, math.log(10 / 8), math.log(12 / 10), box_a, [0, 2])})


@pytest.mark.parametrize("boxes", [np.zeros((0, 4)), np.zeros((0,)), []])
def test_empty_input_gives_all_zero_targets(boxes):
    targets = make_assigner()(boxes, np.zeros((0,)), INPUT_HW)
    assert targets.shape == (T, 10 + NUM_CLASSES)
    assert targets.dtype == np.float32
    assert not targets.any()


def test_degenerate_boxes_are_skipped_with_their_classes():
    # zero width (class 2) and zero height (class 0) boxes are dropped; the valid box (class 1) stays
    # with ITS class (a misaligned class filter would put class 2 on it)
    box = (35, 14, 45, 26)
    boxes = np.array([(20, 20, 20, 40), box, (60, 30, 70, 30)])
    targets = make_assigner()(boxes, np.array([2, 1, 0]), INPUT_HW)
    check_targets(targets, {16: expected_row(0.5, 0.25, math.log(10 / 8), math.log(12 / 10), box, [1])})
    only_degenerate = make_assigner()(boxes[[0, 2]], np.array([2, 0]), INPUT_HW)
    assert not only_degenerate.any()


def test_square_input_layout():
    # input 64 x 64, one scale, stride 16, anchors (8, 8), (16, 16): grid 4 x 4, A = 2, T = 32
    # box (46, 4, 62, 20): centre (54, 12), 16 x 16 -> anchor 1; col floor(54/16) = 3, row 0
    # index (0 * 4 + 3) * 2 + 1 = 7 ([x][y] swap: (3*4+0)*2+1 = 25); in cell 54/16 - 3 = 0.375, 0.75
    assigner = BestAnchorAssigner([[(8, 8), (16, 16)]], (16,), 1)
    targets = assigner([[46, 4, 62, 20]], [0], (64, 64))
    expected = np.zeros((32, 11))
    expected[7] = [1, 0.375, 0.75, 0, 0, 2 - 256 / 4096, 46, 4, 62, 20, 1]
    np.testing.assert_allclose(targets, expected, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------------------
# decoding and its agreement with the assigner


def make_decoder(hybridize=False):
    decoder = YOLODecoder(ANCHORS, STRIDES)
    decoder.initialize()
    if hybridize:
        decoder.hybridize()
    return decoder


def zero_raw(batch=1, num_classes=NUM_CLASSES):
    return [np.zeros((batch, 4, 6, 2, 5 + num_classes), np.float32),
            np.zeros((batch, 2, 3, 3, 5 + num_classes), np.float32)]


def decode(raw, hybridize=False):
    return make_decoder(hybridize)(*[mx.nd.array(r) for r in raw]).asnumpy()


def test_decoder_known_cells():
    raw = zero_raw()
    # scale 0, row 1, col 2, anchor 1 (20, 14): tx = ty = 0 -> centre ((2 + .5) * 16, (1 + .5) * 16)
    # = (40, 24); tw = th = log 2 -> 40 x 28 -> box (20, 10, 60, 38); flat index (1*6+2)*2+1 = 17
    raw[0][0, 1, 2, 1, 2:4] = math.log(2)
    # scale 1, row 1, col 0, anchor 2 (60, 62): centre (0.5 * 32, 1.5 * 32) = (16, 48); tw = log 2,
    # th = 0 -> 120 x 62 -> box (-44, 17, 76, 79); flat index 48 + (1*3+0)*3+2 = 59
    raw[1][0, 1, 0, 2, 2] = math.log(2)
    # scale 0, row 3, col 0, anchor 0 (8, 10): sigmoid(tx) = 0.75, sigmoid(ty) = 0.25 ->
    # centre (0.75 * 16, 3.25 * 16) = (12, 52); 8 x 10 -> (8, 47, 16, 57); index (3*6+0)*2 = 36
    raw[0][0, 3, 0, 0, 0] = math.log(3)
    raw[0][0, 3, 0, 0, 1] = -math.log(3)
    for hybridize in (False, True):
        boxes = decode(raw, hybridize)
        assert boxes.shape == (1, T, 4)
        np.testing.assert_allclose(boxes[0, 17], [20, 10, 60, 38], atol=1e-4)
        np.testing.assert_allclose(boxes[0, 59], [-44, 17, 76, 79], atol=1e-4)
        np.testing.assert_allclose(boxes[0, 36], [8, 47, 16, 57], atol=1e-4)
        # an untouched one: scale 0, row 0, col 5, anchor 0 -> centre (88, 8), 8 x 10; index 10
        np.testing.assert_allclose(boxes[0, 10], [84, 3, 92, 13], atol=1e-4)


def reference_decode(raw):
    """Plain loop over DEVELOPERS.md: scale, then y (i), then x (j), then anchor."""
    out = []
    for raw_s, anchors, stride in zip(raw, ANCHORS, STRIDES):
        batch, height, width, num_a, _ = raw_s.shape
        for i in range(height):
            for j in range(width):
                for a in range(num_a):
                    tx, ty, tw, th = raw_s[:, i, j, a, :4].astype(np.float64).T
                    bx = (1 / (1 + np.exp(-tx)) + j) * stride
                    by = (1 / (1 + np.exp(-ty)) + i) * stride
                    bw = anchors[a][0] * np.exp(tw)
                    bh = anchors[a][1] * np.exp(th)
                    out.append(np.stack([bx - bw / 2, by - bh / 2, bx + bw / 2, by + bh / 2], axis=-1))
    return np.stack(out, axis=1)


@pytest.mark.parametrize("hybridize", [False, True])
def test_decoder_matches_loop_reference(hybridize):
    rng = np.random.default_rng(1)
    raw = [rng.normal(0, 1, r.shape).astype(np.float32) for r in zero_raw(batch=2)]
    np.testing.assert_allclose(decode(raw, hybridize), reference_decode(raw), rtol=1e-5, atol=1e-3)


def test_flatten_raw_order_is_scale_y_x_anchor():
    rng = np.random.default_rng(2)
    raw = [rng.normal(0, 1, r.shape).astype(np.float32) for r in zero_raw(batch=2)]
    flat = flatten_raw(mx.nd, [mx.nd.array(r) for r in raw]).asnumpy()
    assert flat.shape == (2, T, 5 + NUM_CLASSES)
    index = 0
    for raw_s in raw:
        _, height, width, num_a, _ = raw_s.shape
        for i in range(height):
            for j in range(width):
                for a in range(num_a):
                    np.testing.assert_array_equal(flat[:, index], raw_s[:, i, j, a])
                    index += 1
    assert index == T
    # same under a symbol graph
    syms = [mx.sym.var(f"r{s}") for s in range(2)]
    out = flatten_raw(mx.sym, syms)
    exe = out.bind(mx.cpu(), {f"r{s}": mx.nd.array(r) for s, r in enumerate(raw)})
    np.testing.assert_array_equal(exe.forward()[0].asnumpy(), flat)


def logit(p):
    return math.log(p / (1 - p))


def test_assigner_rows_decode_back_to_their_boxes():
    """Raw outputs equal to the inverse of each positive target decode to the ground-truth box."""
    boxes = np.array([(35, 14, 45, 26),       # scale 0, anchor 0, row 16
                      (3, 40, 25, 53),        # centre (14, 46.5), 22 x 13 -> scale 0, anchor 1
                      (50, 26, 90, 54),       # scale 1, anchor 1, row 64
                      (5, 3, 35, 41),         # centre (20, 22), 30 x 38 -> scale 1, anchor 0
                      (30, 2, 90, 62.5)],     # centre (60, 32.25), 60 x 60.5 -> scale 1, anchor 2
                     dtype=np.float32)
    classes = np.array([0, 1, 2, 0, 1])
    targets = make_assigner()(boxes, classes, INPUT_HW)
    positives = np.nonzero(targets[:, 0])[0]
    assert len(positives) == len(boxes)
    # every scale and several anchors are exercised
    assert (positives < 48).sum() == 2 and (positives >= 48).sum() == 3
    # raw predictions, flat in the documented order, unflattened with a plain C-order numpy reshape
    flat = np.zeros((T, 5 + NUM_CLASSES), np.float32)
    for r in positives:
        flat[r, 0] = logit(targets[r, 1])
        flat[r, 1] = logit(targets[r, 2])
        flat[r, 2:4] = targets[r, 3:5]
    raw = [flat[:48].reshape(1, 4, 6, 2, -1), flat[48:].reshape(1, 2, 3, 3, -1)]
    decoded = decode(raw)[0]
    for r in positives:
        np.testing.assert_allclose(decoded[r], targets[r, 6:10], rtol=0, atol=1e-4)
    # and each ground-truth box is found among the decoded positive rows
    for box in boxes:
        assert np.abs(decoded[positives] - box).max(axis=1).min() < 1e-4
    # round trip through flatten_raw
    np.testing.assert_array_equal(flatten_raw(mx.nd, [mx.nd.array(r) for r in raw]).asnumpy()[0], flat)
