"""Model-zoo folders: weights stored in float16 (half the bytes), the recipe, and their sha256.

A zoo folder holds `model.params` (the weights, cast to `dtype`; loading casts back to the network's
float32), `recipe.yaml` (the resolved recipe the weights belong to) and `SHA256SUMS` (`sha256sum -c`
format). `--weights FOLDER` finds `model.params` and checks it against SHA256SUMS first, so a truncated
or replaced file fails with its name instead of loading wrong weights.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping

import mxnet as mx
import numpy as np

from ..files import atomic_write, atomic_write_text, sha256
from ..inference.weights import ZOO_PARAMS, ZOO_SUMS, find_weights
from ..recipe import resolved_yaml

PARAMS, RECIPE, SUMS = ZOO_PARAMS, "recipe.yaml", ZOO_SUMS
DTYPES = ("float16", "float32")


def pack(recipe: Mapping[str, Any], weights, out, dtype: str = "float16") -> Dict[str, Any]:
    """Write a zoo folder `out` for `weights` (a .params file or a run folder) of `recipe`."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    source = find_weights(weights)
    arrays = mx.nd.load(str(source))
    if not isinstance(arrays, dict) or not arrays:
        raise ValueError(f"weights '{source}' hold no named parameters (not a Gluon .params file)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cast = {name: value.astype(dtype) if np.dtype(value.dtype).kind == "f" else value for name, value in arrays.items()}
    for name, value in cast.items():
        if not np.isfinite(value.asnumpy()).all() and np.isfinite(arrays[name].asnumpy()).all():
            raise ValueError(f"weights '{source}': parameter {name} overflows {dtype} (largest magnitude "
                             f"{float(np.abs(arrays[name].asnumpy()).max()):.4g}); pack with --dtype float32")
    atomic_write(out / PARAMS, lambda tmp: mx.nd.save(tmp, cast))
    atomic_write_text(out / RECIPE, resolved_yaml(recipe))
    sums = {name: sha256(out / name) for name in (PARAMS, RECIPE)}
    atomic_write_text(out / SUMS, "".join(f"{digest}  {name}\n" for name, digest in sums.items()))
    return {"folder": str(out), "params": str(out / PARAMS), "source": str(source), "dtype": dtype,
            "bytes": (out / PARAMS).stat().st_size, "sha256": sums}
