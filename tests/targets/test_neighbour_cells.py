"""`neighbours: true` (YOLOv5's rule): a positive also trains the two cells beside its own nearest the box centre,
with centre targets in (-0.5, 1.5) that a decoder with scale_x_y 2 reaches. Hand-computed rows, the decode round
trip, and the recipe check.

The grid, anchors and row numbering are those of tests/targets/test_targets.py (its docstring): input 64 x 96,
strides 16 and 32, rows 0..47 at scale 0 and 48..65 at scale 1.
"""
import copy
import math

import mxnet as mx
import numpy as np
import pytest

from gluon_yolo3.data.pipeline import build_assigner
from gluon_yolo3.postprocess.decode import YOLODecoder
from gluon_yolo3.recipe import DEFAULTS, merge
from gluon_yolo3.schema import RecipeError
from gluon_yolo3.targets.assigner import BestAnchorAssigner
from gluon_yolo3.targets.multi_anchor import MultiAnchorAssigner

ANCHORS = [[(8, 10), (20, 14)], [(30, 44), (44, 30), (60, 62)]]
STRIDES = (16, 32)
INPUT_HW = (64, 96)


def positives(targets):
    return {int(r): targets[r, 1:3].round(5).tolist() for r in np.nonzero(targets[:, 0])[0]}


def test_the_two_nearest_neighbours_by_hand():
    assigner = BestAnchorAssigner(ANCHORS, STRIDES, 1, neighbours=True)
    # box (32, 19, 52, 33): centre (42, 26), 20 x 14 -> scale 0, anchor 1. In grid units (2.625, 1.625): cell
    # col 2, row 1, in cell (0.625, 0.625) -> the right (col 3) and lower (row 2) neighbours.
    # own: (1 * 6 + 2) * 2 + 1 = 17; right: (1 * 6 + 3) * 2 + 1 = 19, x 2.625 - 3 = -0.375; lower:
    # (2 * 6 + 2) * 2 + 1 = 29, y 1.625 - 2 = -0.375
    targets = assigner(np.array([(32, 19, 52, 33)]), np.array([0]), INPUT_HW)
    assert positives(targets) == {17: [0.625, 0.625], 19: [-0.375, 0.625], 29: [0.625, -0.375]}
    for r in (17, 19, 29):      # the same box, size target and weight in all three
        np.testing.assert_allclose(targets[r, 3:], targets[17, 3:])
    # box (0, 0, 8, 10): centre (4, 5) -> cell (0, 0), in cell (0.25, 0.3125): its nearer neighbours (left,
    # above) lie outside the grid, so it stays alone in row 0
    targets = assigner(np.array([(0, 0, 8, 10)]), np.array([0]), INPUT_HW)
    assert positives(targets) == {0: [0.25, 0.3125]}


def test_a_box_own_cell_wins_over_another_box_neighbour():
    assigner = MultiAnchorAssigner(ANCHORS, STRIDES, 2, iou_thresh=1.0, neighbours=True)
    # box A (8, 19, 16, 29): centre (12, 24), 8 x 10 -> scale 0 anchor 0, cell (0, 1), in cell (0.75, 0.5):
    #   right neighbour col 1 -> row (1 * 6 + 1) * 2 = 14, x -0.25; y exactly 0.5: no vertical neighbour
    # box B (18, 18, 26, 28): centre (22, 23), 8 x 10 -> anchor 0, cell (1, 1), in cell (0.375, 0.4375): own
    #   row 14; left neighbour col 0 -> row 12, x 1.375; upper row 0 -> (0 * 6 + 1) * 2 = 2, y 1.4375
    targets = assigner(np.array([(8, 19, 16, 29), (18, 18, 26, 28)]), np.array([0, 1]), INPUT_HW)
    rows = positives(targets)
    assert rows[12] == [0.75, 0.5]                    # A's own cell, though B names it as its neighbour
    assert rows[14] == [0.375, 0.4375]                # B's own cell, though A names it as its neighbour
    assert rows[2] == [0.375, 1.4375] and set(rows) == {2, 12, 14}
    assert targets[12, 6:10].tolist() == [8, 19, 16, 29] and targets[14, 6:10].tolist() == [18, 18, 26, 28]


def sigmoid_target(x, s=2.0):
    return (x + (s - 1) / 2) / s


def test_neighbour_rows_decode_back_to_their_box_with_scale_x_y_2():
    assigner = BestAnchorAssigner(ANCHORS, STRIDES, 1, neighbours=True)
    boxes = np.array([(32, 19, 52, 33), (50, 26, 90, 54), (5, 3, 35, 41)], np.float32)
    targets = assigner(boxes, np.zeros(3), INPUT_HW)
    rows = np.nonzero(targets[:, 0])[0]
    assert len(rows) > len(boxes)
    flat = np.zeros((66, 6), np.float32)
    for r in rows:                      # the raw outputs the loss trains towards: logit of the mapped target
        for k in (0, 1):
            p = sigmoid_target(targets[r, 1 + k])
            flat[r, k] = math.log(p / (1 - p))
        flat[r, 2:4] = targets[r, 3:5]
    decoder = YOLODecoder(ANCHORS, STRIDES, scale_x_y=2.0)
    decoder.initialize()
    raw = [mx.nd.array(flat[:48].reshape(1, 4, 6, 2, 6)), mx.nd.array(flat[48:].reshape(1, 2, 3, 3, 6))]
    decoded = decoder(*raw).asnumpy()[0]
    for r in rows:
        np.testing.assert_allclose(decoded[r], targets[r, 6:10], atol=1e-3)
    # the assigner's own read-back (`data show`) rebuilds the box from each of the rows, neighbours included
    objects = assigner.decode(targets, INPUT_HW)
    assert len(objects) == len(rows)
    for obj in objects:
        assert np.abs(boxes - obj["box"]).max(axis=1).min() < 1e-3


def test_a_recipe_with_neighbours_needs_scale_x_y_2():
    recipe = merge(copy.deepcopy(DEFAULTS), {"assigner": {"type": "best_anchor", "neighbours": True}})
    with pytest.raises(RecipeError, match=r"assigner.neighbours: true .* model.scale_x_y >= 2 \(got 1.0\)"):
        build_assigner(recipe, ANCHORS, STRIDES, 1)
    recipe["model"]["scale_x_y"] = 2.0
    assert build_assigner(recipe, ANCHORS, STRIDES, 1).neighbours
