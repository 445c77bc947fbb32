"""ClassAwareNMS against a plain numpy reference."""
import numpy as np
import pytest

from gluon_yolo3.boxes import box_iou
from gluon_yolo3.postprocess.nms import ClassAwareNMS
from gluon_yolo3.registry import NMS


def reference_nms(boxes, scores, score_thresh, iou_thresh, topk, max_det):
    """One image: boxes (N, 4), scores (N, C) -> ids (K,), scores (K,), boxes (K, 4), K = max_det."""
    n, c = np.nonzero(scores > score_thresh)
    s = scores[n, c]
    order = np.argsort(-s, kind="stable")[:topk]
    n, c, s = n[order], c[order], s[order]
    iou = box_iou(boxes[n], boxes[n])
    kept = []
    for i in range(len(n)):
        if all(c[j] != c[i] or iou[i, j] <= iou_thresh for j in kept):
            kept.append(i)
    kept = kept[:max_det]
    ids, out_s, out_b = -np.ones(max_det), -np.ones(max_det), -np.ones((max_det, 4))
    ids[:len(kept)], out_s[:len(kept)], out_b[:len(kept)] = c[kept], s[kept], boxes[n[kept]]
    return ids, out_s, out_b


@pytest.fixture
def check_against_reference(run_nms):
    """check_against_reference(net, boxes, scores): the block's output equals reference_nms image by image."""
    def check_against_reference(net, boxes, scores):
        ids, s, b = run_nms(net, boxes, scores)
        k = net.max_det
        assert ids.shape == (len(boxes), k, 1) and s.shape == (len(boxes), k, 1) and b.shape == (len(boxes), k, 4)
        for i in range(len(boxes)):
            ref_ids, ref_s, ref_b = reference_nms(boxes[i], scores[i], net.score_thresh, net.iou_thresh,
                                                  net.topk, net.max_det)
            np.testing.assert_array_equal(ids[i, :, 0], ref_ids)
            np.testing.assert_allclose(s[i, :, 0], ref_s, rtol=0, atol=1e-7)
            np.testing.assert_allclose(b[i], ref_b, rtol=0, atol=1e-4)
    return check_against_reference


@pytest.mark.parametrize("hybridize", [False, True])
@pytest.mark.parametrize("topk, max_det", [(60, 100), (400, 25)])  # topk binds / max_det binds
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference(seed, topk, max_det, hybridize, check_against_reference, random_inputs):
    rng = np.random.default_rng(seed)
    net = ClassAwareNMS(score_thresh=0.05, iou_thresh=0.45, topk=topk, max_det=max_det)
    if hybridize:
        net.hybridize()
    for num_boxes in (40, 90):  # a hybridized block must accept a different N
        check_against_reference(net, *random_inputs(rng, 2, num_boxes, 4))


@pytest.mark.parametrize("hybridize", [False, True])
def test_fewer_candidates_than_topk_and_max_det(hybridize, check_against_reference, random_inputs):
    """N * C < topk < max_det: the output is padded up to max_det."""
    net = ClassAwareNMS(score_thresh=0.01, iou_thresh=0.5, topk=10, max_det=12)
    if hybridize:
        net.hybridize()
    check_against_reference(net, *random_inputs(np.random.default_rng(7), 3, 3, 2))


@pytest.mark.parametrize("hybridize", [False, True])
def test_one_box_kept_for_two_classes(hybridize, run_nms):
    boxes = np.array([[[10, 10, 50, 50], [12, 12, 52, 52], [100, 100, 120, 130]]], np.float32)
    scores = np.array([[[0.9, 0.8, 0.0], [0.7, 0.0, 0.0], [0.0, 0.0, 0.3]]], np.float32)
    net = ClassAwareNMS(score_thresh=0.05, iou_thresh=0.45, topk=10, max_det=5)
    if hybridize:
        net.hybridize()
    ids, s, b = run_nms(net, boxes, scores)
    np.testing.assert_array_equal(ids[0, :, 0], [0, 1, 2, -1, -1])  # box 1 suppressed by box 0 (class 0)
    np.testing.assert_allclose(s[0, :, 0], [0.9, 0.8, 0.3, -1, -1], atol=1e-7)
    np.testing.assert_array_equal(b[0, :3], boxes[0, [0, 0, 2]])
    np.testing.assert_array_equal(b[0, 3:], -1)


@pytest.mark.parametrize("hybridize", [False, True])
def test_all_below_threshold(hybridize, random_inputs, run_nms):
    boxes, scores = random_inputs(np.random.default_rng(3), 2, 20, 3)
    net = ClassAwareNMS(score_thresh=0.5, topk=30, max_det=10)
    if hybridize:
        net.hybridize()
    for out in run_nms(net, boxes, scores * 0.5):
        assert (out == -1).all()


def test_registered():
    net = NMS.build({"type": "class_aware", "score_thresh": 0.1, "max_det": 7})
    assert isinstance(net, ClassAwareNMS) and net.max_det == 7
