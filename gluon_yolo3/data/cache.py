"""Annotation cache: parsed annotations kept on disk and reused while their source files are unchanged.

    records, problems = cached_parse("voc", files, extra=ids, parse=lambda: parse_all(ids), cache=True)

The cache key is a hash of the reader's kind, `CACHE_VERSION`, `extra` (anything the parse depends on
besides the files: split ids, a yaml's content) and, for every source file, its absolute path, size and
modification time: editing, adding or removing an annotation file re-parses. Entries are pickles in
`$GLUON_YOLO3_CACHE` (default `~/.cache/gluon_yolo3/annotations`), written to a temporary file and renamed;
an unwritable or corrupt cache is never an error, only a re-parse.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Tuple

CACHE_VERSION = 1
ENV_VAR = "GLUON_YOLO3_CACHE"


def default_cache_dir() -> Path:
    """`$GLUON_YOLO3_CACHE`, else `~/.cache/gluon_yolo3/annotations`."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gluon_yolo3" / "annotations"


def fingerprint(kind: str, files: Iterable[Path], extra: Any = None) -> str:
    """A hex digest of `kind`, `extra` and every file's (path, size, mtime); a missing file counts too."""
    digest = hashlib.sha1()
    digest.update(f"{kind}\0{CACHE_VERSION}\0{extra!r}\0".encode())
    for path in files:
        path = Path(path)
        try:
            st = path.stat()
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        digest.update(f"{path.resolve()}\0{stamp}\n".encode())
    return digest.hexdigest()


def resolve_cache(cache: bool | str | os.PathLike | None) -> Optional[Path]:
    """A dataset's `cache` argument as a folder, or None when caching is off (False / None)."""
    if cache is None or cache is False:
        return None
    if cache is True:
        return default_cache_dir()
    return Path(cache).expanduser()


def load_entry(folder: Path, kind: str, key: str) -> Optional[Any]:
    """The cached value, or None when absent or unreadable."""
    path = folder / f"{kind}-{key}.pkl"
    try:
        with open(path, "rb") as fh:
            stored_key, value = pickle.load(fh)
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError):
        return None
    return value if stored_key == key else None


def save_entry(folder: Path, kind: str, key: str, value: Any) -> bool:
    """Write atomically (temporary file, then rename); False when the folder is not writable."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{kind}-", suffix=".tmp", dir=str(folder))
    except OSError:
        return False
    try:
        with os.fdopen(fd, "wb") as fh:
            pickle.dump((key, value), fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, folder / f"{kind}-{key}.pkl")
        return True
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False


def cached_parse(kind: str, files: Iterable[Path], parse: Callable[[], Any], extra: Any = None,
                 cache: bool | str | os.PathLike | None = True) -> Tuple[Any, bool]:
    """`(parse(), False)` on a miss (and store it), `(stored value, True)` on a hit.

    kind: the reader's name (part of the key and of the file name); files: every file the parse reads;
    extra: whatever else the result depends on (must have a stable `repr`).
    """
    folder = resolve_cache(cache)
    if folder is None:
        return parse(), False
    key = fingerprint(kind, list(files), extra)
    value = load_entry(folder, kind, key)
    if value is not None:
        return value, True
    value = parse()
    save_entry(folder, kind, key, value)
    return value, False


__all__ = ("cached_parse", "default_cache_dir", "fingerprint", "resolve_cache", "ENV_VAR", "CACHE_VERSION")
