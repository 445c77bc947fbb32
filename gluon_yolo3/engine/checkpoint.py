"""Checkpoints in a run folder, written so that a crash at any moment leaves the last one loadable.

    <run>/checkpoints/epoch_0003.params   network weights (Gluon `save_parameters`)
    <run>/checkpoints/epoch_0003.states   optimizer state, LR schedule position (Gluon `save_states`)
    <run>/checkpoints/last.json           {"epoch": 3, "step": 750, "params": ..., "states": ...}
    <run>/checkpoints/best.params         weights of the best validation metric so far

Every file is written to a temporary name in the same folder and renamed over the target; `last.json`
is renamed last, so it only ever points at complete files.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import mxnet as mx


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, write: Callable[[str], None]):
    """Call `write(tmp_path)` then rename tmp over `path` (same folder, so the rename is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)          # mkstemp makes 0600; a plain open() would give this
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: Path, text: str):
    def write(tmp):
        with open(tmp, "w") as fh:
            fh.write(text)
    atomic_write(path, write)


class CheckpointManager:
    """Save and find checkpoints of one run folder."""

    def __init__(self, run_dir: Path, keep: int = 2):
        self.folder = Path(run_dir) / "checkpoints"
        self.keep = max(1, int(keep))

    def save(self, net, trainer, epoch: int, step: int, extra: Optional[Dict[str, Any]] = None) -> Path:
        # A hybridized static graph updates BatchNorm statistics outside the reads save_parameters
        # waits for: without this, a checkpoint can hold statistics from before the last steps.
        mx.nd.waitall()
        stem = f"epoch_{epoch:04d}"
        params = self.folder / f"{stem}.params"
        states = self.folder / f"{stem}.states"
        atomic_write(params, net.save_parameters)
        atomic_write(states, trainer.save_states)
        meta = {"epoch": epoch, "step": step, "params": params.name, "states": states.name, **(extra or {})}
        atomic_write_text(self.folder / "last.json", json.dumps(meta, indent=1))
        self._prune(keep_stem=stem)
        return params

    def save_best(self, net):
        mx.nd.waitall()
        atomic_write(self.folder / "best.params", net.save_parameters)

    def last(self) -> Optional[Dict[str, Any]]:
        """The metadata of the last complete checkpoint, with absolute paths, or None."""
        meta_path = self.folder / "last.json"
        if not meta_path.exists():
            return None
        meta = json.loads(meta_path.read_text())
        meta["params"] = str(self.folder / meta["params"])
        meta["states"] = str(self.folder / meta["states"])
        return meta

    def _prune(self, keep_stem: str):
        stems = sorted({p.stem for p in self.folder.glob("epoch_*.params")})
        for stem in stems[:-self.keep]:
            if stem == keep_stem:
                continue
            for suffix in (".params", ".states"):
                (self.folder / f"{stem}{suffix}").unlink(missing_ok=True)


def find_weights(path: str | Path) -> Path:
    """A `.params` file, a zoo folder (-> its model.params, checked against its SHA256SUMS), or a run
    folder (-> its best, else its last checkpoint)."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir() and (path / "model.params").is_file():
        if (path / "SHA256SUMS").is_file():
            from ..deploy.zoo import verify
            verify(path)
        return path / "model.params"
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        best = folder / "best.params"
        if best.exists():
            return best
        last = CheckpointManager(folder.parent).last() if folder.name == "checkpoints" else None
        if last:
            return Path(last["params"])
    raise FileNotFoundError(f"no weights at '{path}': give a .params file or a run folder with checkpoints")
