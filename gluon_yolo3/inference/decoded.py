"""What the runtimes whose model stops before NMS share (ONNX Runtime, OpenVINO): their outputs, then the
recipe's NMS in numpy.

    class MyRuntime(NumpyNMSDetector):
        def outputs(self, x): ...     # {"boxes" (B, T, 4), "objectness" (B, T), "class_scores" (B, T, C)}

A subclass sets `self.nms` (`postprocess.numpy_nms.build_numpy_nms`) and is then called like the YOLOv3 block in
inference: `x` an NDArray or a numpy array `(B, 3, H, W)` -> ids `(B, K, 1)`, scores `(B, K, 1)`, boxes
`(B, K, 4)` x1y1x2y2 input pixels, empty slots -1; NDArrays on the input's context for an NDArray input (so that
`evaluation.runner` can score them), numpy otherwise.
"""
from __future__ import annotations

from typing import Dict

import mxnet as mx
import numpy as np

from ..postprocess.decode import detection_scores_np


def as_numpy(x) -> np.ndarray:
    """An NDArray or array-like as a numpy array (float32 for array-likes)."""
    return x.asnumpy() if hasattr(x, "asnumpy") else np.asarray(x, dtype=np.float32)


def like_input(x, arrays):
    """`arrays` as NDArrays on `x`'s context when `x` is an NDArray, else unchanged (a tuple)."""
    if hasattr(x, "asnumpy"):
        return tuple(mx.nd.array(a, ctx=x.context) for a in arrays)
    return tuple(arrays)


class NumpyNMSDetector:
    """A model that ends at decoded boxes, objectness and class scores, followed by `self.nms` in numpy."""

    nms = None

    def outputs(self, x) -> Dict[str, np.ndarray]:
        raise NotImplementedError

    def __call__(self, x):
        out = self.outputs(x)
        scores = detection_scores_np(out["objectness"], out["class_scores"])
        return like_input(x, self.nms(out["boxes"], scores))
