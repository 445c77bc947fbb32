"""Import every built-in component module so that its registrations take effect.

Every module inside the packages below is imported (recursively): a new built-in component registers
itself by living there. Modules keep heavy optional imports (onnx, onnxruntime) inside functions.
"""
from __future__ import annotations

import importlib
import pkgutil

COMPONENT_PACKAGES = (
    "gluon_yolo3.models",
    "gluon_yolo3.targets",
    "gluon_yolo3.losses",
    "gluon_yolo3.postprocess",
    "gluon_yolo3.data",
    "gluon_yolo3.engine",
    "gluon_yolo3.evaluation",
)


def builtin_modules():
    """Names of every module in the component packages, sorted."""
    names = []
    for package_name in COMPONENT_PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.walk_packages(package.__path__, prefix=package_name + "."):
            names.append(info.name)
    return sorted(names)


def register_builtins():
    """Import the built-in components (idempotent)."""
    for name in builtin_modules():
        importlib.import_module(name)
