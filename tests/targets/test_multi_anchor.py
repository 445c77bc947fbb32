"""The multi-anchor assigner on hand-made cases, and detectors built purely from the demo recipe with
every combination of assigner x box term x NMS, trained one step and run once for inference.

Assigner set-up of the hand cases: input 64 x 64, strides (8, 16)
  scale 0: grid 8 x 8, A = 2, anchors (10, 10), (20, 20)   -> rows   0..127   flat anchors 0, 1
  scale 1: grid 4 x 4, A = 2, anchors (40, 40), (30, 60)   -> rows 128..159   flat anchors 2, 3
row = offset(scale) + (row * W + col) * A + anchor
"""
import math

import numpy as np
import pytest

from gluon_yolo3 import api
from gluon_yolo3.engine.trainer import Trainer
from gluon_yolo3.registry import ASSIGNERS
from gluon_yolo3.targets.assigner import BestAnchorAssigner
from gluon_yolo3.targets.multi_anchor import MultiAnchorAssigner

ANCHORS = [[(10, 10), (20, 20)], [(40, 40), (30, 60)]]
STRIDES = (8, 16)
INPUT_HW = (64, 64)
NUM_CLASSES = 2
T = 8 * 8 * 2 + 4 * 4 * 2           # 128 + 32 = 160

# A 28 x 28 box centred at (x=20, y=28): [6, 14, 34, 42]. Shape IoUs (centres aligned):
#   (10, 10): 100 / 784 = 0.1276        (20, 20): 400 / 784 = 0.5102 (best)
#   (40, 40): 784 / 1600 = 0.49         (30, 60): 28*28 / (784 + 1800 - 784) = 784 / 1800 = 0.4356
# Cells: scale 0 (stride 8): col 20/8 = 2.5 -> 2, row 28/8 = 3.5 -> 3: rows (3*8 + 2)*2 + a = 52 + a
#        scale 1 (stride 16): col 20/16 = 1.25 -> 1, row 28/16 = 1.75 -> 1: rows 128 + (1*4 + 1)*2 + a = 138 + a
BOX = [6, 14, 34, 42]
WEIGHT = 2 - 28 * 28 / (64 * 64)    # = 2 - 784/4096 = 1.80859375


def row(cell_x, cell_y, anchor_wh, box, cls):
    w, h = box[2] - box[0], box[3] - box[1]
    out = np.zeros(10 + NUM_CLASSES)
    out[:6] = 1, cell_x, cell_y, math.log(w / anchor_wh[0]), math.log(h / anchor_wh[1]), 2 - w * h / 4096
    out[6:10] = box
    out[10 + cls] = 1
    return out


def check_targets(targets, expected_rows):
    assert targets.shape == (T, 10 + NUM_CLASSES) and targets.dtype == np.float32
    expected = np.zeros((T, 10 + NUM_CLASSES))
    for index, r in expected_rows.items():
        expected[index] = r
    np.testing.assert_array_equal(np.nonzero(targets[:, 0])[0], sorted(expected_rows))
    np.testing.assert_allclose(targets, expected, rtol=0, atol=1e-5)


def test_box_matching_two_anchors_gets_two_rows():
    # threshold 0.45: anchors 1 (0.5102) and 2 (0.49), one per scale
    assigner = MultiAnchorAssigner(ANCHORS, STRIDES, NUM_CLASSES, iou_thresh=0.45)
    targets = assigner(np.array([BOX]), np.array([1]), INPUT_HW)
    check_targets(targets, {
        53: row(0.5, 0.5, (20, 20), BOX, 1),        # 20/8 - 2, 28/8 - 3; log(28/20) = 0.3365
        138: row(0.25, 0.75, (40, 40), BOX, 1),     # 20/16 - 1, 28/16 - 1; log(28/40) = -0.3567
    })
    assert targets[53, 5] == pytest.approx(WEIGHT) and targets[53, 3] == pytest.approx(0.336472, abs=1e-6)


def test_default_threshold_adds_the_third_anchor():
    # 0.213 (default): anchors 1, 2 and 3 (0.4356); not anchor 0 (0.1276)
    assigner = MultiAnchorAssigner(ANCHORS, STRIDES, NUM_CLASSES)
    assert assigner.iou_thresh == 0.213
    targets = assigner(np.array([BOX]), np.array([0]), INPUT_HW)
    check_targets(targets, {
        53: row(0.5, 0.5, (20, 20), BOX, 0),
        138: row(0.25, 0.75, (40, 40), BOX, 0),
        139: row(0.25, 0.75, (30, 60), BOX, 0),     # log(28/30), log(28/60)
    })


def test_box_matching_no_anchor_still_gets_its_best():
    # 4 x 4 box centred at (20, 28): IoUs 16/100 = 0.16 (best), 16/400 = 0.04, 16/1600, 16/1800: none
    # above 0.213, so only the best anchor 0, at scale 0 row (3*8 + 2)*2 + 0 = 52
    box = [18, 26, 22, 30]
    assigner = MultiAnchorAssigner(ANCHORS, STRIDES, NUM_CLASSES)
    targets = assigner(np.array([box]), np.array([1]), INPUT_HW)
    check_targets(targets, {52: row(0.5, 0.5, (10, 10), box, 1)})   # log(4/10) = -0.9163


def test_match_pairs_by_box_then_anchor():
    assigner = MultiAnchorAssigner(ANCHORS, STRIDES, NUM_CLASSES, iou_thresh=0.45)
    box_idx, anchor_idx = assigner.match(np.array([[28, 28], [4, 4], [30, 58]], np.float32))
    # box 2, 30 x 58: (30, 60): 1740 / 1800 = 0.9667 best; (40, 40): 30*40 / (1740 + 1600 - 1200) = 0.5607;
    # (20, 20): 400 / 1740 = 0.2299; (10, 10): 0.0575
    np.testing.assert_array_equal(box_idx, [0, 0, 1, 2, 2])
    np.testing.assert_array_equal(anchor_idx, [1, 2, 0, 2, 3])


@pytest.mark.parametrize("seed", [0, 1])
def test_threshold_one_is_best_anchor_and_zero_is_every_anchor(seed):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 40, (6, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(3, 24, (6, 2))], axis=1).astype(np.float32)
    classes = rng.integers(0, NUM_CLASSES, 6)
    best = BestAnchorAssigner(ANCHORS, STRIDES, NUM_CLASSES)(boxes, classes, INPUT_HW)
    only_best = MultiAnchorAssigner(ANCHORS, STRIDES, NUM_CLASSES, iou_thresh=1.0)(boxes, classes, INPUT_HW)
    np.testing.assert_array_equal(only_best, best)
    every = MultiAnchorAssigner(ANCHORS, STRIDES, NUM_CLASSES, iou_thresh=0.0)
    box_idx, anchor_idx = every.match(boxes[:, 2:] - boxes[:, :2])
    np.testing.assert_array_equal(box_idx, np.repeat(np.arange(6), 4))
    np.testing.assert_array_equal(anchor_idx, np.tile(np.arange(4), 6))


def test_registered_and_checked():
    assigner = ASSIGNERS.build({"type": "multi_anchor", "iou_thresh": 0.3}, anchors=ANCHORS, strides=STRIDES,
                               num_classes=NUM_CLASSES)
    assert isinstance(assigner, MultiAnchorAssigner) and assigner.iou_thresh == 0.3
    with pytest.raises(ValueError, match="iou_thresh"):
        MultiAnchorAssigner(ANCHORS, STRIDES, NUM_CLASSES, iou_thresh=1.5)


# ----------------------------------------------------------------------------------------------------
# whole detectors from the demo recipe

BOX_TERMS = {"wh_l1": "{type: wh_l1}", "giou": "{type: giou}", "ciou": "{type: ciou}"}
TINY = ["model.input_size=64", "data.train.image_size=64", "data.val.image_size=64",
        "data.train.num_images=8", "data.val.num_images=4", "data.num_workers=0", "train.batch_size=4"]


@pytest.mark.filterwarnings("ignore:.*is not used by any computation")
# MXNet names a Constant's initializer after id(constant): a later detector can reuse a freed id
@pytest.mark.filterwarnings("ignore:.*New initializer.*overriding existing initializer")
@pytest.mark.parametrize("nms", ["class_aware", "soft_nms", "diou_nms"])
@pytest.mark.parametrize("box_term", sorted(BOX_TERMS))
@pytest.mark.parametrize("assigner", ["best_anchor", "multi_anchor"])
def test_recipe_combination_trains_and_predicts(assigner, box_term, nms, tmp_path, recipes):
    terms = f"[{{type: xy_bce}}, {BOX_TERMS[box_term]}, {{type: objectness_bce}}, {{type: class_bce}}]"
    recipe = api.load(recipes / "demo_tiny.yaml", TINY + [
        f"assigner={{type: {assigner}}}", f"loss.terms={terms}",
        f"model.nms={{type: {nms}, score_thresh: 0.0, topk: 50, max_det: 20}}"])
    trainer = Trainer(recipe, tmp_path, progress=False, log=lambda *_: None)
    trainer.setup()
    assert trainer.loss_fn.names == ["xy", box_term if box_term != "wh_l1" else "wh", "obj", "cls"]
    assert type(trainer.net.nms).__name__ == {"class_aware": "ClassAwareNMS", "soft_nms": "SoftNMS",
                                              "diou_nms": "DIoUNMS"}[nms]
    trainer.sampler.set_epoch(0)
    x, target, gt_boxes = next(iter(trainer.loader))
    assert target.shape[0] == 4 and target[:, :, 0].sum().asscalar() >= 4     # objects were assigned
    terms_value = trainer.train_step(x, target, gt_boxes)
    assert terms_value.shape == (4,) and np.isfinite(terms_value).all() and terms_value[1] > 0
    ids, scores, boxes = trainer.net(x)                                        # inference, outside autograd
    assert ids.shape == (4, 20, 1) and scores.shape == (4, 20, 1) and boxes.shape == (4, 20, 4)
    ids, scores, boxes = ids.asnumpy(), scores.asnumpy(), boxes.asnumpy()
    assert np.isfinite(boxes).all() and np.isfinite(scores).all()
    kept = ids[..., 0] >= 0
    assert kept.any()                                                          # score_thresh 0: detections
    assert (scores[kept] >= 0).all() and (ids[kept] < len(trainer.classes)).all()
    # every valid slot precedes the padding, by descending score
    for i in range(4):
        k = kept[i].sum()
        assert kept[i, :k].all() and not kept[i, k:].any()
        assert (np.diff(scores[i, :k, 0]) <= 1e-6).all()
