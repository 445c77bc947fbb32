"""Detections for images, in original image pixels, from any detector fed as an InputSpec says.

    predictor = Predictor(spec, net)                       # net: a YOLOv3, an exported or quantized model
    predictor(["image.jpg"])  # [{"boxes": (K, 4), "scores": (K,), "ids": (K,), "names": [...]}]
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import mxnet as mx
import numpy as np

from ..data.feed import InputSpec, to_original
from ..data.images import read_image
from ..drawing import draw_detections


class Predictor:
    """Detections for images (paths or `(H, W, 3) uint8 RGB` arrays), in original image pixels.

    `predictor(images)` -> one dict per image: `boxes (K, 4)` x1y1x2y2, `scores (K,)`, `ids (K,)`,
    `names` (class names), keeping scores >= `score_thresh`. `net(x)` takes `x (1, 3, S, S)` fed as `spec`
    says and returns ids, scores, boxes as a YOLOv3 in inference does.
    """

    def __init__(self, spec: InputSpec, net, contexts=None, score_thresh: float = 0.3):
        self.spec = spec
        self.net = net
        self.contexts = contexts or [mx.cpu()]
        self.classes = list(spec.classes)
        self.resize = spec.resizer()
        self.normalize = spec.normalizer()
        self.score_thresh = float(score_thresh)

    def __call__(self, images: Sequence) -> List[Dict[str, Any]]:
        return [self.predict_one(image) for image in images]

    def predict_one(self, image) -> Dict[str, Any]:
        image = read_image(image) if isinstance(image, (str, Path)) else np.asarray(image)
        x, geometry = self.spec.prepare(image, self.resize, self.normalize)
        ids, scores, boxes = [o[0].asnumpy() for o in self.net(mx.nd.array(x[None], ctx=self.contexts[0]))]
        keep = (ids[:, 0] >= 0) & (scores[:, 0] >= self.score_thresh)
        ids = ids[keep, 0].astype(np.int64)
        return {"boxes": to_original(boxes[keep], geometry), "scores": scores[keep, 0], "ids": ids,
                "names": [self.classes[i] for i in ids]}

    def draw(self, image, path: Optional[Path] = None, gt: Optional[np.ndarray] = None, zoom: int = 1,
             det: Optional[Dict[str, Any]] = None):
        """Draw an image's detections (`det`, else predicted now) and ground truth `gt (M, >=4)` (if given),
        enlarged `zoom` times; written to `path` if given."""
        image = read_image(image) if isinstance(image, (str, Path)) else np.asarray(image)
        det = det if det is not None else self.predict_one(image)
        return draw_detections(image, det["boxes"], det["ids"], det["scores"], self.classes,
                               path=str(path) if path else None,
                               gt_boxes=None if gt is None else np.asarray(gt)[:, :4], zoom=zoom)
