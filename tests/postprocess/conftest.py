"""Fixtures of the NMS tests: random boxes and scores, and running an NMS block to numpy."""
import numpy as np
import pytest


def _random_inputs(rng, batch, num_boxes, num_classes):
    xy = rng.uniform(0, 120, (batch, num_boxes, 2))
    wh = rng.uniform(4, 60, (batch, num_boxes, 2))
    boxes = np.concatenate([xy, xy + wh], axis=-1).astype(np.float32)
    scores = (rng.uniform(0, 1, (batch, num_boxes, num_classes)) ** 4).astype(np.float32)
    return boxes, scores


def _run_nms(net, boxes, scores):
    import mxnet as mx
    ids, s, b = net(mx.nd.array(boxes), mx.nd.array(scores))
    return ids.asnumpy(), s.asnumpy(), b.asnumpy()


@pytest.fixture(scope="session")
def random_inputs():
    """random_inputs(rng, batch, num_boxes, num_classes) -> boxes (B, N, 4) x1y1x2y2, scores (B, N, C)."""
    return _random_inputs


@pytest.fixture(scope="session")
def run_nms():
    """run_nms(net, boxes, scores) -> ids, scores, boxes of the NMS block, as numpy arrays."""
    return _run_nms
