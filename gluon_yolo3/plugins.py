"""Plugins: Python files or modules that register components before a recipe is built.

A recipe names them under `plugins:` (a file path, relative to the recipe, or a dotted module name);
installed packages expose them through the entry-point group `gluon_yolo3.plugins`.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Iterable

ENTRY_POINT_GROUP = "gluon_yolo3.plugins"

_loaded: dict = {}


class PluginError(ImportError):
    """A plugin that cannot be found or fails on import; the message names it."""


def load_plugin(spec: str):
    """Import one plugin (file path or dotted module name) once; returns the module."""
    path = Path(spec)
    if spec.endswith(".py") or path.exists():
        spec = str(path.resolve())      # one file under two spellings is one plugin
    if spec in _loaded:
        return _loaded[spec]
    try:
        if spec.endswith(".py") or path.exists():
            if not path.exists():
                raise PluginError(f"plugin file '{spec}' not found (paths in a recipe are relative to the recipe)")
            if not path.is_file():
                raise PluginError(f"plugin '{spec}' is a folder, not a file: name a Python file (.py) or an "
                                  "importable module")
            name = "gluon_yolo3_plugin_" + path.stem + "_" + hashlib.sha1(
                str(path.resolve()).encode()).hexdigest()[:8]
            module_spec = importlib.util.spec_from_file_location(name, path)
            if module_spec is None:
                raise PluginError(f"plugin '{spec}' is not a Python file (.py)")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(spec)
    except PluginError:
        raise
    except ModuleNotFoundError as err:
        raise PluginError(f"plugin '{spec}' cannot be imported: {err}") from err
    except Exception as err:  # a plugin's own bug: say which plugin
        raise PluginError(f"plugin '{spec}' failed while importing: {type(err).__name__}: {err}") from err
    _loaded[spec] = module
    return module


def load_plugins(specs: Iterable[str] = (), entry_point_group: str = ENTRY_POINT_GROUP):
    """Load the entry-point plugins of installed packages, then each spec in order."""
    for ep in entry_points(group=entry_point_group):
        key = f"entry-point:{ep.value}"
        if key not in _loaded:
            try:
                _loaded[key] = ep.load()
            except Exception as err:
                raise PluginError(f"plugin entry point '{ep.name}' ({ep.value}) failed: {err}") from err
    for spec in specs or ():
        load_plugin(str(spec))
