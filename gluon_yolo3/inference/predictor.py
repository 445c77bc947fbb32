"""Detections for images, in original image pixels, from any detector fed as an InputSpec says.

    predictor = Predictor(spec, net)                       # net: a YOLOv3, an exported or quantized model
    predictor(["image.jpg"])  # [{"boxes": (K, 4), "scores": (K,), "ids": (K,), "names": [...]}]
    predictor.predict(images)                              # one batch through the network
    for frame, det in predictor.stream(["photos/", "clip.mp4"], batch_size=8): ...   # sources.py
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np

from ..data.feed import InputSpec, to_original
from ..data.images import read_image
from ..drawing import draw_detections
from .sources import Frame, stream


class Predictor:
    """Detections for images (paths or `(H, W, 3) uint8 RGB` arrays), in original image pixels.

    `predictor(images)` -> one dict per image: `boxes (K, 4)` x1y1x2y2, `scores (K,)`, `ids (K,)`,
    `names` (class names), keeping scores >= `score_thresh` (and the classes of `keep_classes`). `net(x)` takes
    `x (B, 3, S, S)` fed as `spec` says and returns ids, scores, boxes as a YOLOv3 in inference does: any
    runtime called so (deployed.py) gets batches, sources and streams from this class.
    """

    def __init__(self, spec: InputSpec, net, contexts=None, score_thresh: float = 0.3):
        self.spec = spec
        self.net = net
        self.contexts = contexts or [mx.cpu()]
        self.classes = list(spec.classes)
        self.resize = spec.resizer()
        self.normalize = spec.normalizer()
        self.score_thresh = float(score_thresh)
        self.keep_ids: Optional[np.ndarray] = None      # class ids kept (None: all), set by keep_classes

    def __call__(self, images: Sequence) -> List[Dict[str, Any]]:
        return [self.predict_one(image) for image in images]

    def predict_one(self, image) -> Dict[str, Any]:
        return self.predict([image])[0]

    def predict(self, images: Sequence) -> List[Dict[str, Any]]:
        """One batch: the detections of each image (a path or `(H, W, 3) uint8 RGB`), as `__call__`."""
        images = [read_image(i) if isinstance(i, (str, Path)) else np.asarray(i) for i in images]
        return self.detect(self.prepare(images))

    def prepare(self, images: Sequence[np.ndarray]):
        """`(x (B, 3, S, S) float32, geometries (B, 6))` of `(H, W, 3) uint8 RGB` images, fed as the spec says
        (numpy and OpenCV only: `stream` runs it in its worker thread)."""
        prepared = [self.spec.prepare(image, self.resize, self.normalize) for image in images]
        return np.stack([p[0] for p in prepared]), np.stack([p[1] for p in prepared])

    def detect(self, prepared) -> List[Dict[str, Any]]:
        """The detections of a prepared batch (`prepare`), in original image pixels."""
        x, geometries = prepared
        outputs = self.net(mx.nd.array(x, ctx=self.contexts[0]))
        ids, scores, boxes = [o.asnumpy() if hasattr(o, "asnumpy") else np.asarray(o) for o in outputs]
        results = []
        for k, geometry in enumerate(geometries):
            keep = (ids[k, :, 0] >= 0) & (scores[k, :, 0] >= self.score_thresh)
            if self.keep_ids is not None:
                keep &= np.isin(ids[k, :, 0], self.keep_ids)
            kept = ids[k, keep, 0].astype(np.int64)
            results.append({"boxes": to_original(boxes[k, keep], geometry), "scores": scores[k, keep, 0],
                            "ids": kept, "names": [self.classes[i] for i in kept]})
        return results

    def keep_classes(self, names: Optional[Sequence[str]]) -> "Predictor":
        """Keep only detections of these classes from now on (None: all); ValueError naming an unknown one
        and listing the model's classes. Applied after NMS (per class by default, so it removes nothing else)."""
        if names is None:
            self.keep_ids = None
            return self
        unknown = [n for n in names if n not in self.classes]
        if unknown:
            raise ValueError(f"unknown class{'es' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: "
                             f"the model's classes are {', '.join(self.classes)}")
        self.keep_ids = np.array(sorted({self.classes.index(n) for n in names}), np.float32)
        return self

    def stream(self, source, batch_size: int = 8, every: int = 1, max_frames: Optional[int] = None,
               on_problem=None) -> Iterator[Tuple[Frame, Dict[str, Any]]]:
        """`(frame, detections)` for every image of `source` (SOURCE arguments: images, folders, globs, list
        files, videos, stream URLs, camera indices; or a `sources.Sources`), and one frame in `every` of each
        video, at most `max_frames` of each. Frames are decoded and prepared in a worker thread while the
        network runs batches of `batch_size`. Unreadable files and corrupt frames go to `on_problem(text)`
        (default: a warning) and are skipped."""
        return stream(source, self.detect, self.prepare, batch_size=batch_size, every=every,
                      max_frames=max_frames, on_problem=on_problem)

    def draw(self, image, path: Optional[Path] = None, gt: Optional[np.ndarray] = None, zoom: int = 1,
             det: Optional[Dict[str, Any]] = None):
        """Draw an image's detections (`det`, else predicted now) and ground truth `gt (M, >=4)` (if given),
        enlarged `zoom` times; written to `path` if given."""
        image = read_image(image) if isinstance(image, (str, Path)) else np.asarray(image)
        det = det if det is not None else self.predict_one(image)
        return draw_detections(image, det["boxes"], det["ids"], det["scores"], self.classes,
                               path=str(path) if path else None,
                               gt_boxes=None if gt is None else np.asarray(gt)[:, :4], zoom=zoom)
