"""Reading image files (`read_image`, the one reader of the package) and cheap structural checks of them:
is the file complete, or was it cut short?

A JPEG cut short still decodes with OpenCV (its lower part grey; libjpeg prints "Premature end of JPEG
file" with no file name), so it would be trained on. `image_file_problem(path)` catches it without
decoding:

- JPEG: the end-of-image marker FFD9 must follow the first start-of-scan (FFDA) segment. The marker
  segments before the scan are walked by their lengths, so an EXIF thumbnail's own FFD9 (inside APP1)
  does not count. The tail (last `TAIL_BYTES`) is searched first; only when it holds no FFD9 is the rest of
  the scan data read, so a good file costs a few small reads.
- PNG: the IEND chunk must close the data (searched in the tail, then in the whole file; bytes after
  it are allowed, as decoders ignore them).

Other formats, and files that cannot be opened, are not judged here (None): decoding reports them.
"""
from __future__ import annotations

import os
import struct
from typing import BinaryIO, Optional

import cv2
import numpy as np

TAIL_BYTES = 64 * 1024
JPEG_SOI, JPEG_EOI, JPEG_SOS = b"\xff\xd8", b"\xff\xd9", 0xDA
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"\x00\x00\x00\x00IEND"   # zero length, then the chunk type
STANDALONE = {0x01} | set(range(0xD0, 0xD8))   # markers without a length field (TEM, RST0..7)


def image_file_problem(path) -> Optional[str]:
    """What makes the image file at `path` incomplete (a short phrase), or None when it looks whole or is
    not a JPEG / PNG (or cannot be opened: decoding reports that)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            size = os.fstat(fh.fileno()).st_size
            if head.startswith(JPEG_SOI):
                return _jpeg_problem(fh, size)
            if head == PNG_SIGNATURE:
                return _png_problem(fh, size)
    except OSError:
        return None
    return None


def _jpeg_problem(fh: BinaryIO, size: int) -> Optional[str]:
    scan = _jpeg_scan_start(fh, size)
    if not isinstance(scan, int):          # a problem in the header, or None: not judged
        return scan
    if _found_after(fh, JPEG_EOI, scan, size):
        return None
    return "no JPEG end-of-image marker after the scan data"


def _jpeg_scan_start(fh: BinaryIO, size: int):
    """Offset of the first scan's entropy-coded data (int), a problem (str) when the file ends in the
    header, or None when the header does not follow the marker layout (not judged)."""
    pos = 2
    while True:
        fh.seek(pos)
        head = fh.read(4)
        if len(head) < 2:
            return "file ends inside the JPEG header"
        if head[0] != 0xFF:
            return None
        marker = head[1]
        if marker == 0xFF:                 # fill byte before a marker
            pos += 1
            continue
        if marker in STANDALONE:
            pos += 2
            continue
        if marker == JPEG_EOI[1]:          # tables only, no image: decoding reports it
            return None
        if len(head) < 4:
            return "file ends inside the JPEG header"
        end = pos + 2 + struct.unpack(">H", head[2:4])[0]
        if end > size:
            return "file ends inside the JPEG header"
        if marker == JPEG_SOS:
            return end
        pos = end


def _png_problem(fh: BinaryIO, size: int) -> Optional[str]:
    return None if _found_after(fh, PNG_IEND, 8, size) else "no PNG IEND chunk at the end"


def _found_after(fh: BinaryIO, needle: bytes, start: int, size: int) -> bool:
    """Whether `needle` occurs in the file at or after offset `start`: the tail first, then the rest."""
    tail_start = max(start, size - TAIL_BYTES)
    fh.seek(tail_start)
    if needle in fh.read():
        return True
    if tail_start == start:
        return False
    fh.seek(start)
    return needle in fh.read(tail_start - start + len(needle) - 1)


def truncated_problem(name: str, what: str) -> str:
    """The `problems` line of a truncated image file."""
    return f"{name}: truncated image ({what}); image skipped"


__all__ = ("image_file_problem", "truncated_problem", "TAIL_BYTES")


def read_image(path) -> np.ndarray:
    """`(H, W, 3) uint8 RGB` of an image file (EXIF orientation applied, as OpenCV does); FileNotFoundError
    naming the file when it is missing or not an image."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image '{path}' (missing or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
