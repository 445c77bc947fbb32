"""Devices and kvstores named in recipes: `cpu:0`, `gpu:1`, or a comma-separated list of them."""
from __future__ import annotations

from typing import List, Sequence

import mxnet as mx


def parse_devices(spec: str | Sequence[str]) -> List[mx.Context]:
    """`"cpu:0,cpu:1"` or `["gpu:0", "gpu:1"]` -> contexts; a bare `cpu`/`gpu` means index 0."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    contexts = []
    for item in items:
        item = str(item).strip()
        if not item:
            continue
        kind, _, index = item.partition(":")
        kind = kind.lower()
        if kind not in ("cpu", "gpu") or (index and not index.isdigit()):
            raise ValueError(f"bad device '{item}': use cpu:N or gpu:N, comma-separated")
        if kind == "gpu" and mx.context.num_gpus() == 0:
            raise ValueError(f"device '{item}' asked for, but this MXNet build sees no GPU "
                             "(install the mxnet-cu112 wheel on a machine with CUDA)")
        contexts.append(mx.Context(kind, int(index or 0)))
    if not contexts:
        raise ValueError(f"no devices in '{spec}'")
    if len(set(contexts)) != len(contexts):
        raise ValueError(f"a device is listed twice in '{spec}'")
    return contexts


def split_batch(batch: mx.nd.NDArray, contexts: Sequence[mx.Context]) -> List[mx.nd.NDArray]:
    """Split along axis 0 into one slice per context, copied there (even split; the batch size must
    be divisible by the number of devices)."""
    return mx.gluon.utils.split_and_load(batch, contexts, batch_axis=0, even_split=True)
