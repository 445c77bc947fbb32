"""Import every built-in component module so that its registrations take effect."""
from __future__ import annotations

import importlib

BUILTIN_MODULES = (
    "gluon_yolo3.models.backbones.darknet",
    "gluon_yolo3.models.neck",
    "gluon_yolo3.models.head",
    "gluon_yolo3.targets.assigner",
    "gluon_yolo3.losses.terms",
    "gluon_yolo3.postprocess.nms",
    "gluon_yolo3.data.synthetic",
    "gluon_yolo3.data.voc",
    "gluon_yolo3.data.transforms",
    "gluon_yolo3.engine.schedules",
    "gluon_yolo3.evaluation.voc",
    "gluon_yolo3.evaluation.coco",
)


def register_builtins():
    """Import the built-in components (idempotent)."""
    for name in BUILTIN_MODULES:
        importlib.import_module(name)
