"""Helpers the NMS tests share: random boxes and scores, and running an NMS block to numpy."""
import mxnet as mx
import numpy as np


def random_inputs(rng, batch, num_boxes, num_classes):
    xy = rng.uniform(0, 120, (batch, num_boxes, 2))
    wh = rng.uniform(4, 60, (batch, num_boxes, 2))
    boxes = np.concatenate([xy, xy + wh], axis=-1).astype(np.float32)
    scores = (rng.uniform(0, 1, (batch, num_boxes, num_classes)) ** 4).astype(np.float32)
    return boxes, scores


def run(net, boxes, scores):
    ids, s, b = net(mx.nd.array(boxes), mx.nd.array(scores))
    return ids.asnumpy(), s.asnumpy(), b.asnumpy()
