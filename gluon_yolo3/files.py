"""Writing files so that a crash or a full disk never leaves a half-written one, and their sha256 sums.

    atomic_write(path, net.save_parameters)     # write(tmp), then rename tmp over path
    atomic_write_text(path, "text")
    sha256(path)

Every write goes to a temporary name in the target's folder and is renamed over the target (an atomic
step on one file system), so a reader sees the old file or the new one, never a part. A failure is a
`WriteError` naming the file and the reason (`cannot write runs/x/recipe.yaml: No space left on device`),
and the old file stays as it was.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable

_UMASK = os.umask(0)
os.umask(_UMASK)


class WriteError(OSError):
    """A file or folder that cannot be written; the message names it and says why."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


def cannot_write(path, err: BaseException) -> WriteError:
    """`WriteError("cannot write PATH: reason")` from an OSError (or a WriteError, passed through)."""
    if isinstance(err, WriteError):
        return err
    reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return WriteError(f"cannot write {path}: {reason}")


def make_folder(path) -> Path:
    """`mkdir -p path`; a WriteError naming it when that fails (read-only parent, a file in the way)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise WriteError(f"cannot write {path}: it is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise cannot_write(path, err) from None
    return path


def atomic_write(path, write: Callable[[str], None]):
    """Call `write(tmp_path)` then rename tmp over `path` (same folder, so the rename is atomic).

    An OSError on the way becomes a WriteError naming `path`; the old file is left as it was and the
    temporary file is removed. Other exceptions pass through unchanged (after the same clean-up)."""
    path = Path(path)
    make_folder(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise cannot_write(path, err) from None
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)          # mkstemp makes 0600; a plain open() would give this
        os.replace(tmp, path)
    except OSError as err:
        raise cannot_write(path, err) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path, text: str):
    def write(tmp):
        with open(tmp, "w") as fh:
            fh.write(text)
    atomic_write(path, write)


def sha256(path) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
