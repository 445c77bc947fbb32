"""Annotation cache: parsed annotations kept on disk and reused while their source files are unchanged.

    records, problems = cached_parse("voc", files, extra=ids, parse=lambda: parse_all(ids), cache=True)

The cache key is a hash of the reader's kind, `CACHE_VERSION`, `extra` (anything the parse depends on
besides the files: split ids, a yaml's content) and, for every source file, its absolute path, size and
modification time: editing, adding or removing an annotation file re-parses. Entries are JSON files
`<kind>-<key>.json` in `$GLUON_YOLO3_CACHE` (default `~/.cache/gluon_yolo3/annotations`), written to a
temporary file and renamed; an unwritable or corrupt cache is never an error, only a re-parse.

JSON, never pickle: a file planted in the cache folder must not run code when a dataset is built. Values
are plain data (numbers, strings, None, lists, str-keyed dicts) and numpy arrays, stored as
`{"__ndarray__": dtype, "shape": [...], "data": base64 of the bytes}` and read back with the same dtype;
tuples come back as lists. Entries of older versions (`.pkl`) are never read.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Tuple

import numpy as np

CACHE_VERSION = 3
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


ARRAY_TAG = "__ndarray__"
ARRAY_KINDS = "biuf"        # bool, signed / unsigned integers, floats: no objects, ever


def _encode(value: Any) -> Any:
    """`json.dumps` hook: a numpy array (or scalar) as plain data; TypeError for anything else."""
    if isinstance(value, np.ndarray) and value.dtype.kind in ARRAY_KINDS:
        data = np.ascontiguousarray(value)
        return {ARRAY_TAG: data.dtype.str, "shape": list(data.shape),
                "data": base64.b64encode(data.tobytes()).decode("ascii")}
    if isinstance(value, np.generic) and value.dtype.kind in ARRAY_KINDS:
        return value.item()
    raise TypeError(f"annotation cache: cannot store a {type(value).__name__}")


def _decode(obj: dict) -> Any:
    """`json.loads` hook: the arrays `_encode` wrote; ValueError when one is malformed."""
    if ARRAY_TAG not in obj:
        return obj
    dtype = np.dtype(obj[ARRAY_TAG])
    if dtype.kind not in ARRAY_KINDS:
        raise ValueError(f"annotation cache: dtype {dtype} is not allowed")
    raw = base64.b64decode(obj["data"], validate=True)
    return np.frombuffer(raw, dtype=dtype).reshape([int(n) for n in obj["shape"]]).copy()


def entry_path(folder: Path, kind: str, key: str) -> Path:
    """Where the entry of `kind` and `key` lives."""
    return folder / f"{kind}-{key}.json"


def load_entry(folder: Path, kind: str, key: str) -> Optional[Any]:
    """The cached value, or None when absent, unreadable or not this key's."""
    try:
        with open(entry_path(folder, kind, key), "rb") as fh:
            stored = json.loads(fh.read().decode("utf-8"), object_hook=_decode)
        if stored.get("version") != CACHE_VERSION or stored.get("key") != key:
            return None
        return stored["value"]
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None


def save_entry(folder: Path, kind: str, key: str, value: Any) -> bool:
    """Write atomically (temporary file, then rename); False when the folder is not writable or `value`
    holds something JSON cannot store."""
    try:
        text = json.dumps({"version": CACHE_VERSION, "key": key, "value": value}, default=_encode,
                          allow_nan=False)
    except (TypeError, ValueError):
        return False
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{kind}-", suffix=".tmp", dir=str(folder))
    except OSError:
        return False
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, entry_path(folder, kind, key))
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


__all__ = ("cached_parse", "default_cache_dir", "entry_path", "fingerprint", "load_entry", "resolve_cache",
           "save_entry", "ENV_VAR", "CACHE_VERSION")
