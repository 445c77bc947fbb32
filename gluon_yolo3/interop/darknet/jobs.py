"""The Darknet jobs: load a cfg + weights as a network, import them as a run folder (recipe.yaml +
checkpoints/best.params), export a recipe's network as `.cfg`, `.weights` and `.names`.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import yaml

from ...files import atomic_write, atomic_write_text
from ...inference.detector import class_names, load_detector
from ...models.detector import build_detector
from ...models.layers import resolve_norm
from ...recipe import merge
from ...schema import DEFAULTS
from .cfg import DarknetError, Section, describe_cfg, format_cfg, parse_cfg, recipe_from_cfg
from .layout import check_layout, darknet_layout, layout_arrays, load_layout_weights
from .weights_file import WeightsHeader, read_weights, write_weights


def read_names(path: str | Path) -> List[str]:
    """Class names, one per line (Darknet's `.names`)."""
    try:
        names = [line.strip() for line in Path(path).read_text().splitlines()]
    except OSError as err:
        raise FileNotFoundError(f"cannot read class names '{path}': {err.strerror}") from None
    names = [n for n in names if n]
    if not names:
        raise DarknetError(f"{path}: no class names in it")
    return names


def load_darknet(cfg: str | Path, weights: str | Path, names: Optional[Sequence[str]] = None):
    """(recipe, YOLOv3 on cpu with the weights loaded, info) from a Darknet cfg and weights file.

    `recipe` holds only what differs from the defaults; `info` has `arch`, `header` and `floats`."""
    sections = parse_cfg(cfg)
    partial = recipe_from_cfg(sections, cfg, names)
    recipe = merge(copy.deepcopy(DEFAULTS), partial)
    net = build_detector(recipe, len(partial["data"]["classes"]))
    net.initialize()
    layout = darknet_layout(net, normalise=describe_cfg(sections, cfg)["normalise"])
    check_layout(sections, layout, cfg)
    header, floats = read_weights(weights)
    partial["data"].update(load_layout_weights(layout, floats, weights))
    return partial, net, {"arch": layout.arch, "header": header, "floats": int(floats.size)}


def import_darknet(cfg: str | Path, weights: str | Path, out: str | Path,
                   names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Write `out/recipe.yaml` and `out/checkpoints/best.params` from a Darknet cfg and weights file.

    `out` then works wherever a run folder does (`--weights out`)."""
    recipe, net, info = load_darknet(cfg, weights, names)
    out = Path(out)
    params = out / "checkpoints" / "best.params"
    atomic_write(params, net.save_parameters)
    text = (f"# Imported from Darknet {Path(cfg).name} + {Path(weights).name} by gluon-yolo3 import-darknet.\n"
            f"# Inputs are RGB / 255 (mean 0, std 1) as in Darknet; BatchNorm epsilon 1e-6 as Darknet's.\n"
            f"# Set data.train / data.val to evaluate or fine-tune.\n")
    text += yaml.safe_dump(recipe, sort_keys=False, default_flow_style=None)
    recipe_path = out / "recipe.yaml"
    atomic_write_text(recipe_path, text)
    header = info["header"]
    return {"recipe": str(recipe_path), "params": str(params), "arch": info["arch"],
            "classes": len(recipe["data"]["classes"]), "floats": info["floats"],
            "header": f"{header.major}.{header.minor}.{header.revision} (seen={header.seen}, "
                      f"{header.seen_bytes}-byte seen)"}


def export_darknet(recipe: Mapping[str, Any], weights: str | Path, out: str | Path,
                   header: Optional[WeightsHeader] = None) -> Dict[str, Any]:
    """Write `out/<name>.cfg`, `.weights` and `.names` for the recipe's network with `weights`.

    Darknet and OpenCV then compute the same raw outputs, given the image as RGB / 255 letterboxed to the
    recipe's input size: a recipe's mean/std normalisation becomes a first layer (a linear 1x1
    convolution, diagonal), and BatchNorm variances absorb the epsilon difference."""
    classes = class_names(recipe)
    net = load_detector(recipe, weights, classes=classes, hybridize=False)
    normalise = any(m != 0 for m in recipe["data"]["mean"]) or any(s != 1 for s in recipe["data"]["std"])
    layout = darknet_layout(net, normalise)
    size = int(recipe["model"]["input_size"])
    net_section = Section("net", {"batch": "1", "subdivisions": "1", "width": str(size), "height": str(size),
                                  "channels": "3"})
    sections = [net_section] + layout.sections
    eps = float(resolve_norm(recipe["model"].get("norm"))["eps"])
    arrays = layout_arrays(layout, eps, recipe["data"]["mean"], recipe["data"]["std"])
    out = Path(out)
    name = str(recipe.get("name") or "model")
    cfg_path, weights_path, names_path = (out / f"{name}{ext}" for ext in (".cfg", ".weights", ".names"))
    head = (f"# {name}: exported by gluon-yolo3 export-darknet ({layout.arch}, {len(classes)} classes).\n"
            f"# Input: RGB / 255, letterboxed to {size}x{size}"
            + (" (layer 0 applies the recipe's per-channel mean/std)." if normalise else ".") + "\n")
    atomic_write_text(cfg_path, head + format_cfg(sections))
    write_weights(weights_path, arrays, header)
    atomic_write_text(names_path, "\n".join(classes) + "\n")
    floats = sum(a.size for a in arrays)
    return {"cfg": str(cfg_path), "weights": str(weights_path), "names": str(names_path),
            "arch": layout.arch, "floats": int(floats), "input_normalisation_layer": normalise}
