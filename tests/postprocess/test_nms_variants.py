"""NMS variants (class_agnostic, multi_label, soft_nms, diou_nms) against plain numpy references.

The references are written here from the textbook algorithms with explicit loops (never calling the code
under test); each is run on random boxes for several seeds, imperative and hybridized, with two different
box counts N through one hybridized block.
"""
import math

import mxnet as mx
import numpy as np
import pytest

from gluon_yolo3.boxes import box_iou
from gluon_yolo3.postprocess.nms import ClassAgnosticNMS, ClassAwareNMS, DIoUNMS, SoftNMS
from gluon_yolo3.registry import NMS


# ----------------------------------------------------------------------------------------------------
# references (one image: boxes (N, 4), scores (N, C))

def multi_label_candidates(boxes, scores, score_thresh, topk):
    """(box index, class, score) of the topk (box, class) pairs above score_thresh, best first."""
    n, c = np.nonzero(scores > score_thresh)
    s = scores[n, c].astype(np.float64)
    order = np.argsort(-s, kind="stable")[:topk]
    return n[order], c[order], s[order]


def padded(max_det, ids, scores, boxes):
    out_ids, out_s, out_b = -np.ones(max_det), -np.ones(max_det), -np.ones((max_det, 4))
    k = min(len(ids), max_det)
    out_ids[:k], out_s[:k], out_b[:k] = ids[:k], scores[:k], boxes[:k]
    return out_ids, out_s, out_b


def diou_matrix(a, b):
    """DIoU = IoU - (centre distance)^2 / (enclosing diagonal)^2, `(N, M)`, float64."""
    a = np.asarray(a, np.float64)[:, None, :]
    b = np.asarray(b, np.float64)[None, :, :]
    iou = box_iou(a[:, 0], b[0])
    d2 = (((a[..., 0] + a[..., 2]) - (b[..., 0] + b[..., 2])) / 2) ** 2 \
        + (((a[..., 1] + a[..., 3]) - (b[..., 1] + b[..., 3])) / 2) ** 2
    c2 = (np.maximum(a[..., 2], b[..., 2]) - np.minimum(a[..., 0], b[..., 0])) ** 2 \
        + (np.maximum(a[..., 3], b[..., 3]) - np.minimum(a[..., 1], b[..., 1])) ** 2
    return iou - d2 / c2


def reference_greedy(boxes, scores, score_thresh, iou_thresh, topk, max_det, overlap=box_iou):
    """Per-class greedy NMS over multi-label candidates, suppressing overlap(kept, other) > iou_thresh."""
    n, c, s = multi_label_candidates(boxes, scores, score_thresh, topk)
    ov = overlap(boxes[n], boxes[n])
    kept = []
    for i in range(len(n)):
        if all(c[j] != c[i] or ov[j, i] <= iou_thresh for j in kept):
            kept.append(i)
    return padded(max_det, c[kept], s[kept], boxes[n[kept]])


def reference_class_agnostic(boxes, scores, score_thresh, iou_thresh, topk, max_det):
    """Each box once with its best class; greedy NMS across classes."""
    best_c = scores.argmax(axis=1)
    best_s = scores.max(axis=1).astype(np.float64)
    n = np.nonzero(best_s > score_thresh)[0]
    n = n[np.argsort(-best_s[n], kind="stable")][:topk]
    iou = box_iou(boxes[n], boxes[n])
    kept = []
    for i in range(len(n)):
        if all(iou[j, i] <= iou_thresh for j in kept):
            kept.append(i)
    return padded(max_det, best_c[n[kept]], best_s[n[kept]], boxes[n[kept]])


def reference_soft_nms(boxes, scores, score_thresh, iou_thresh, topk, max_det, method, sigma):
    """Soft-NMS run to the end (every candidate is taken once), then thresholded and sorted."""
    n, c, s = multi_label_candidates(boxes, scores, score_thresh, topk)
    s = s.copy()
    iou = box_iou(boxes[n], boxes[n])
    remaining = list(range(len(n)))
    taken = []
    while remaining:
        m = max(remaining, key=lambda j: s[j])        # first of ties, as argmax
        taken.append(m)
        remaining.remove(m)
        for j in remaining:
            if c[j] != c[m]:
                continue
            if method == "linear":
                if iou[m, j] > iou_thresh:
                    s[j] *= 1 - iou[m, j]
            else:
                s[j] *= math.exp(-iou[m, j] ** 2 / sigma)
    taken = np.array(taken, dtype=np.int64)
    taken = taken[s[taken] > score_thresh]
    taken = taken[np.argsort(-s[taken], kind="stable")]
    return padded(max_det, c[taken], s[taken], boxes[n[taken]])


# ----------------------------------------------------------------------------------------------------
# helpers

@pytest.fixture
def check(run_nms):
    """check(net, boxes, scores, reference, score_atol): the block's output equals the reference image by image."""
    def check(net, boxes, scores, reference, score_atol=1e-7):
        ids, s, b = run_nms(net, boxes, scores)
        k = net.max_det
        assert ids.shape == (len(boxes), k, 1) and s.shape == (len(boxes), k, 1) and b.shape == (len(boxes), k, 4)
        for i in range(len(boxes)):
            ref_ids, ref_s, ref_b = reference(boxes[i], scores[i])
            assert (ref_ids >= 0).sum() > 3, "the case should keep several detections"
            np.testing.assert_array_equal(ids[i, :, 0], ref_ids)
            np.testing.assert_allclose(s[i, :, 0], ref_s, rtol=0, atol=score_atol)
            np.testing.assert_allclose(b[i], ref_b, rtol=0, atol=1e-4)
    return check


def make(cls, hybridize, **kwargs):
    net = cls(**kwargs)
    if hybridize:
        net.hybridize()
    return net


VARIANTS = {
    "class_agnostic": (ClassAgnosticNMS, {}, lambda net: lambda b, s: reference_class_agnostic(
        b, s, net.score_thresh, net.iou_thresh, net.topk, net.max_det)),
    "diou_nms": (DIoUNMS, {}, lambda net: lambda b, s: reference_greedy(
        b, s, net.score_thresh, net.iou_thresh, net.topk, net.max_det, overlap=diou_matrix)),
    "soft_linear": (SoftNMS, {"method": "linear"}, lambda net: lambda b, s: reference_soft_nms(
        b, s, net.score_thresh, net.iou_thresh, net.topk, net.max_det, "linear", net.sigma)),
    "soft_gaussian": (SoftNMS, {"method": "gaussian", "sigma": 0.5}, lambda net: lambda b, s: reference_soft_nms(
        b, s, net.score_thresh, net.iou_thresh, net.topk, net.max_det, "gaussian", net.sigma)),
}


# ----------------------------------------------------------------------------------------------------
# against the references

@pytest.mark.parametrize("hybridize", [False, True])
@pytest.mark.parametrize("topk, max_det", [(60, 100), (300, 25)])  # topk binds / max_det binds
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_matches_reference(variant, topk, max_det, hybridize, check, random_inputs):
    cls, extra, reference = VARIANTS[variant]
    net = make(cls, hybridize, score_thresh=0.05, iou_thresh=0.45, topk=topk, max_det=max_det, **extra)
    # soft-NMS scores are products of float32 decays: compare at float32 precision
    atol = 2e-6 if cls is SoftNMS else 1e-7
    for seed in (0, 1, 2):
        rng = np.random.default_rng(seed)
        for num_boxes in (40, 90):  # a hybridized block must accept a different N
            check(net, *random_inputs(rng, 2, num_boxes, 4), reference(net), score_atol=atol)


@pytest.mark.parametrize("hybridize", [False, True])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_fewer_candidates_than_topk_and_max_det(variant, hybridize, random_inputs, run_nms):
    """N * C < topk < max_det: the output is padded up to max_det."""
    cls, extra, reference = VARIANTS[variant]
    net = make(cls, hybridize, score_thresh=0.01, iou_thresh=0.5, topk=10, max_det=12, **extra)
    boxes, scores = random_inputs(np.random.default_rng(7), 3, 3, 2)
    ids, s, b = run_nms(net, boxes, scores)
    assert ids.shape == (3, 12, 1)
    for i in range(3):
        ref_ids, ref_s, ref_b = reference(net)(boxes[i], scores[i])
        np.testing.assert_array_equal(ids[i, :, 0], ref_ids)
        np.testing.assert_allclose(s[i, :, 0], ref_s, rtol=0, atol=2e-6)
        np.testing.assert_allclose(b[i], ref_b, rtol=0, atol=1e-4)


@pytest.mark.parametrize("hybridize", [False, True])
@pytest.mark.parametrize("variant", sorted(VARIANTS) + ["class_aware"])
def test_all_below_threshold(variant, hybridize, random_inputs, run_nms):
    cls, extra = (ClassAwareNMS, {}) if variant == "class_aware" else VARIANTS[variant][:2]
    boxes, scores = random_inputs(np.random.default_rng(3), 2, 20, 3)
    net = make(cls, hybridize, score_thresh=0.5, topk=30, max_det=10, **extra)
    for out in run_nms(net, boxes, scores * 0.5):
        assert (out == -1).all()


# ----------------------------------------------------------------------------------------------------
# class_aware / multi_label against box_nms called directly

@pytest.mark.parametrize("hybridize", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_class_aware_equals_box_nms_called_directly(seed, hybridize, random_inputs, run_nms):
    rng = np.random.default_rng(seed)
    topk, max_det, score_thresh, iou_thresh = 150, 40, 0.05, 0.45
    net = make(ClassAwareNMS, hybridize, score_thresh=score_thresh, iou_thresh=iou_thresh, topk=topk,
               max_det=max_det)
    boxes, scores = random_inputs(rng, 2, 70, 3)
    b, n, c = scores.shape
    # every (box, class) pair as one row: id, score, x1, y1, x2, y2
    data = np.concatenate([np.broadcast_to(np.arange(c, dtype=np.float32)[None, None, :, None], (b, n, c, 1)),
                           scores[..., None],
                           np.broadcast_to(boxes[:, :, None, :], (b, n, c, 4))], axis=-1).reshape(b, n * c, 6)
    direct = mx.nd.contrib.box_nms(mx.nd.array(data), overlap_thresh=iou_thresh, valid_thresh=score_thresh,
                                   topk=topk, coord_start=2, score_index=1, id_index=0, background_id=-1,
                                   force_suppress=False, in_format="corner", out_format="corner")
    direct = direct.asnumpy()[:, :max_det]
    ids, s, bx = run_nms(net, boxes, scores)
    assert (ids[:, :, 0] >= 0).sum() > 10
    np.testing.assert_array_equal(ids[:, :, 0], direct[:, :, 0])
    np.testing.assert_allclose(s[:, :, 0], direct[:, :, 1], rtol=0, atol=1e-7)
    np.testing.assert_allclose(bx, direct[:, :, 2:6], rtol=0, atol=1e-4)


def test_multi_label_is_class_aware():
    """The alias is the same class, not a look-alike: identical by construction."""
    assert NMS.get("multi_label") is NMS.get("class_aware") is ClassAwareNMS
    net = NMS.build({"type": "multi_label", "score_thresh": 0.1, "max_det": 7})
    assert isinstance(net, ClassAwareNMS) and net.max_det == 7


# ----------------------------------------------------------------------------------------------------
# hand cases

# A and B: IoU = 60 / 140 = 3/7 = 0.4286; centres (5, 5) and (9, 5): d^2 = 16; enclosing box
# [0, 0, 14, 10]: c^2 = 14^2 + 10^2 = 296; DIoU = 3/7 - 16/296 = 0.4286 - 0.0541 = 0.3745.
# C is far away from both.
HAND_BOXES = np.array([[[0, 0, 10, 10], [4, 0, 14, 10], [50, 50, 60, 70]]], np.float32)


@pytest.mark.parametrize("hybridize", [False, True])
def test_class_agnostic_keeps_one_box_per_location(hybridize, run_nms):
    scores = np.array([[[0.9, 0.0], [0.0, 0.8], [0.2, 0.6]]], np.float32)
    # B overlaps A by 0.4286 > 0.4 and is of another class: class-agnostic removes it, class-aware not
    agnostic = make(ClassAgnosticNMS, hybridize, score_thresh=0.05, iou_thresh=0.4, topk=10, max_det=4)
    ids, s, b = run_nms(agnostic, HAND_BOXES, scores)
    np.testing.assert_array_equal(ids[0, :, 0], [0, 1, -1, -1])           # A (class 0), C (best: class 1)
    np.testing.assert_allclose(s[0, :, 0], [0.9, 0.6, -1, -1], atol=1e-7)
    np.testing.assert_array_equal(b[0, :2], HAND_BOXES[0, [0, 2]])
    aware = make(ClassAwareNMS, hybridize, score_thresh=0.05, iou_thresh=0.4, topk=10, max_det=4)
    ids, s, _ = run_nms(aware, HAND_BOXES, scores)
    np.testing.assert_array_equal(ids[0, :, 0], [0, 1, 1, 0])              # A, B, C as 1, C as 0
    np.testing.assert_allclose(s[0, :, 0], [0.9, 0.8, 0.6, 0.2], atol=1e-7)


@pytest.mark.parametrize("hybridize", [False, True])
def test_diou_nms_keeps_a_box_with_a_distant_centre(hybridize, run_nms):
    scores = np.array([[[0.9], [0.8], [0.3]]], np.float32)
    # threshold 0.4 lies between DIoU 0.3745 and IoU 0.4286: IoU-NMS removes B, DIoU-NMS keeps it
    iou_nms = make(ClassAwareNMS, hybridize, score_thresh=0.05, iou_thresh=0.4, topk=10, max_det=4)
    np.testing.assert_allclose(run_nms(iou_nms, HAND_BOXES, scores)[1][0, :, 0], [0.9, 0.3, -1, -1], atol=1e-7)
    diou_nms = make(DIoUNMS, hybridize, score_thresh=0.05, iou_thresh=0.4, topk=10, max_det=4)
    ids, s, b = run_nms(diou_nms, HAND_BOXES, scores)
    np.testing.assert_allclose(s[0, :, 0], [0.9, 0.8, 0.3, -1], atol=1e-7)
    np.testing.assert_array_equal(b[0, :3], HAND_BOXES[0])
    # at 0.35 < DIoU both remove B
    diou_nms = make(DIoUNMS, hybridize, score_thresh=0.05, iou_thresh=0.35, topk=10, max_det=4)
    np.testing.assert_allclose(run_nms(diou_nms, HAND_BOXES, scores)[1][0, :, 0], [0.9, 0.3, -1, -1], atol=1e-7)


@pytest.mark.parametrize("hybridize", [False, True])
def test_soft_nms_hand_values(hybridize, run_nms):
    scores = np.array([[[0.9, 0.0], [0.8, 0.7], [0.3, 0.0]]], np.float32)
    # linear, iou_thresh 0.3 < IoU(A, B) = 3/7: B's class-0 score becomes 0.8 * (1 - 3/7) = 0.8 * 4/7
    # = 0.457143; B's class-1 score (another class) stays 0.7; C does not overlap A: 0.3.
    linear = make(SoftNMS, hybridize, score_thresh=0.05, iou_thresh=0.3, topk=10, max_det=5, method="linear")
    ids, s, b = run_nms(linear, HAND_BOXES, scores)
    np.testing.assert_array_equal(ids[0, :, 0], [0, 1, 0, 0, -1])
    np.testing.assert_allclose(s[0, :, 0], [0.9, 0.7, 0.8 * 4 / 7, 0.3, -1], atol=1e-6)
    np.testing.assert_array_equal(b[0, :4], HAND_BOXES[0, [0, 1, 1, 2]])
    # linear with iou_thresh 0.5 > 3/7: nothing decays
    linear = make(SoftNMS, hybridize, score_thresh=0.05, iou_thresh=0.5, topk=10, max_det=5, method="linear")
    np.testing.assert_allclose(run_nms(linear, HAND_BOXES, scores)[1][0, :, 0], [0.9, 0.8, 0.7, 0.3, -1], atol=1e-6)
    # gaussian, sigma 0.5: 0.8 * exp(-(3/7)^2 / 0.5) = 0.8 * exp(-0.367347) = 0.8 * 0.692569 = 0.554055
    gaussian = make(SoftNMS, hybridize, score_thresh=0.05, topk=10, max_det=5, method="gaussian", sigma=0.5)
    np.testing.assert_allclose(run_nms(gaussian, HAND_BOXES, scores)[1][0, :, 0],
                               [0.9, 0.7, 0.554055, 0.3, -1], atol=1e-6)
    # score_thresh applies to the decayed scores: 0.554 and 0.457 fall out at 0.6
    gaussian = make(SoftNMS, hybridize, score_thresh=0.6, topk=10, max_det=5, method="gaussian", sigma=0.5)
    np.testing.assert_allclose(run_nms(gaussian, HAND_BOXES, scores)[1][0, :, 0], [0.9, 0.7, -1, -1, -1], atol=1e-6)


# ----------------------------------------------------------------------------------------------------
# registry and arguments

@pytest.mark.parametrize("name, cls", [("class_aware", ClassAwareNMS), ("multi_label", ClassAwareNMS),
                                       ("class_agnostic", ClassAgnosticNMS), ("soft_nms", SoftNMS),
                                       ("diou_nms", DIoUNMS)])
def test_registered_with_common_arguments(name, cls):
    net = NMS.build({"type": name, "score_thresh": 0.1, "iou_thresh": 0.5, "topk": 50, "max_det": 7})
    assert type(net) is cls
    assert (net.score_thresh, net.iou_thresh, net.topk, net.max_det) == (0.1, 0.5, 50, 7)


def test_soft_nms_arguments():
    net = NMS.build({"type": "soft_nms", "method": "gaussian", "sigma": 0.3})
    assert (net.method, net.sigma) == ("gaussian", 0.3)
    with pytest.raises(ValueError, match="method"):
        SoftNMS(method="exponential")
    with pytest.raises(ValueError, match="sigma"):
        SoftNMS(method="gaussian", sigma=0)
    with pytest.raises(ValueError, match="topk"):
        DIoUNMS(topk=0)
