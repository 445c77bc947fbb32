"""The Darknet `.weights` format: a header of three int32 (major, minor, revision) and `seen` (uint64 when
`major * 10 + minor >= 2` and both are below 1000, else int32), then float32 values, convolution by
convolution in cfg order: with batch_normalize `beta (n), gamma (n), mean (n), var (n)`, else
`bias (n)`; then the weights `(n, c, k, k)`.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from ...files import atomic_write
from .cfg import DarknetError


@dataclass
class WeightsHeader:
    """The `.weights` header; `seen` is 8 bytes when `major * 10 + minor >= 2` (and both < 1000)."""

    major: int = 0
    minor: int = 2
    revision: int = 0
    seen: int = 0

    @property
    def seen_bytes(self) -> int:
        return 8 if (self.major * 10 + self.minor >= 2 and self.major < 1000 and self.minor < 1000) else 4

    @property
    def size(self) -> int:
        return 12 + self.seen_bytes

    def pack(self) -> bytes:
        return struct.pack("<3i", self.major, self.minor, self.revision) + struct.pack(
            "<Q" if self.seen_bytes == 8 else "<i", self.seen)


def read_weights(path: str | Path) -> Tuple[WeightsHeader, np.ndarray]:
    """(header, every float after it) of a Darknet `.weights` file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise FileNotFoundError(f"cannot read Darknet weights '{path}': {err.strerror}") from None
    if len(data) < 16:
        raise DarknetError(f"{path}: {len(data)} bytes is too short for a Darknet weights file "
                           f"(the header alone takes 16 or 20 bytes)")
    major, minor, revision = struct.unpack_from("<3i", data, 0)
    header = WeightsHeader(major, minor, revision, 0)
    header.seen = struct.unpack_from("<Q" if header.seen_bytes == 8 else "<i", data, 12)[0]
    body = len(data) - header.size
    if body % 4:
        raise DarknetError(f"{path}: {body} bytes after the {header.size}-byte header (version "
                           f"{major}.{minor}.{revision}) is not a whole number of float32 values")
    return header, np.frombuffer(data, dtype="<f4", offset=header.size)


def write_weights(path: str | Path, arrays: Sequence[np.ndarray], header: Optional[WeightsHeader] = None):
    """Write `header` (default version 0.2.0, 8-byte seen) and the arrays as little-endian float32,
    atomically (temporary file, then rename)."""
    header = header or WeightsHeader()

    def write(tmp):
        with open(tmp, "wb") as fh:
            fh.write(header.pack())
            for array in arrays:
                fh.write(np.ascontiguousarray(array, dtype="<f4").tobytes())
    atomic_write(Path(path), write)

