"""What the network will be taught: training images after the whole augmentation chain, with their boxes read
back from the encoded targets (the seed guide's first advice when a model does not learn: "visualize your
preprocessed ground truth").

    path = draw_training_targets(recipe, "ground_truth.png", count=16)

Each box is rebuilt from the target array alone (`AnchorAssigner.decode`: cell offsets, log sizes, anchor), not
from the label, so a [y][x] or xywh mistake in the encoding would show as misplaced boxes. Each is labelled with
its class, scale, cell (row, column) and anchor.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping

import cv2
import numpy as np

from ..data.build import build_datasets
from ..data.pipeline import build_assigner, build_train_batches
from ..drawing import draw_detections
from ..files import atomic_write
from ..models.detector import build_detector
from .builders import resolve_anchors


def training_targets(recipe: Dict[str, Any], count: int = 16, epoch: int = 0):
    """`[(image (S, S, 3) uint8 RGB, decoded objects)]` of the first `count` training samples of `epoch` (the
    run's own seeded order and augmentation), and the class names."""
    dataset = build_datasets(recipe, splits=("train",))["train"]
    resolve_anchors(recipe, dataset, log=lambda *_: None)
    net = build_detector(recipe, len(dataset.classes))
    assigner = build_assigner(recipe, net.anchors, net.strides, len(dataset.classes))
    samples, sampler, batches = build_train_batches(recipe, dataset, assigner, 1, int(recipe["train"]["seed"]))
    sampler.set_epoch(epoch)
    mean = np.asarray(recipe["data"]["mean"], np.float32).reshape(3, 1, 1)
    std = np.asarray(recipe["data"]["std"], np.float32).reshape(3, 1, 1)
    out = []
    for keys in list(iter(batches))[:count]:
        x, target, _ = samples[keys[0]]
        image = np.clip((x * std + mean) * 255, 0, 255).round().astype(np.uint8).transpose(1, 2, 0)
        out.append((image, assigner.decode(target, image.shape[:2])))
    return out, list(dataset.classes)


def draw_training_targets(recipe: Mapping[str, Any], path, count: int = 16, columns: int = 4) -> Path:
    """One PNG grid of `training_targets`: each object in its class colour, labelled `class s<scale>
    (<row>,<col>) a<anchor>`."""
    samples, classes = training_targets(dict(recipe), count)
    tiles = []
    for image, objects in samples:
        boxes = np.array([o["box"] for o in objects], np.float32).reshape(-1, 4)
        ids = np.array([o["classes"][0] if o["classes"] else 0 for o in objects])
        labels = [f"{'+'.join(classes[c] for c in o['classes'])} s{o['scale']} ({o['row']},{o['col']}) "
                  f"a{o['anchor']}" for o in objects]
        zoom = max(1, -(-320 // image.shape[0]))
        tiles.append(draw_detections(image, boxes, ids, None, classes, zoom=zoom, labels=labels))
    side = max(t.shape[0] for t in tiles)
    tiles = [cv2.copyMakeBorder(t, 2, side - t.shape[0] + 2, 2, side - t.shape[1] + 2, cv2.BORDER_CONSTANT,
                                value=(255, 255, 255)) for t in tiles]
    tiles += [np.full_like(tiles[0], 255)] * (-len(tiles) % columns)
    grid = np.concatenate([np.concatenate(tiles[r:r + columns], axis=1) for r in range(0, len(tiles), columns)])
    png = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))[1].tobytes()
    path = Path(path)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(png))
    return path
