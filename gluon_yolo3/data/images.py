"""Reading image files (`read_image`, the one reader of the package) and cheap checks of them, from their headers
and ends, without decoding: can OpenCV read the file at all, how large is it, and was it cut short?

`inspect_image(path)` is what every dataset reader runs on its images when it is built (cached with the
annotations), so that a file that would end a run is reported with its name and skipped up front:

- a file that is missing, empty, or in no format OpenCV decodes (an HTML page or a GIF named `.jpg`);
- an image of more than `MAX_IMAGE_PIXELS` (one rule for every format, read from the header: a 20000 x 20000
  PNG or JPEG would take gigabytes to decode); `read_image` checks it too before it decodes;
- a JPEG or PNG cut short (below).

A JPEG cut short still decodes with OpenCV (its lower part grey; libjpeg prints "Premature end of JPEG
file" with no file name), so it would be trained on. `image_file_problem(path)` catches it without
decoding:

- JPEG: the end-of-image marker FFD9 must follow the first start-of-scan (FFDA) segment. The marker
  segments before the scan are walked by their lengths, so an EXIF thumbnail's own FFD9 (inside APP1)
  does not count. The tail (last `TAIL_BYTES`) is searched first; only when it holds no FFD9 is the rest of
  the scan data read, so a good file costs a few small reads.
- PNG: the IEND chunk must close the data (searched in the tail, then in the whole file; bytes after
  it are allowed, as decoders ignore them).

Other formats are not judged for truncation.
"""
from __future__ import annotations

import os
import stat
import struct
import threading
import warnings
from typing import BinaryIO, Optional, Tuple

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_IMAGE_PIXELS = 150_000_000          # 150 megapixels (12247 x 12247): more is refused, in every format
# the extensions (in any case) a dataset folder's images may have: OpenCV decodes these formats
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".jp2", ".pbm",
                    ".pgm", ".ppm", ".pnm", ".mpo")

TAIL_BYTES = 64 * 1024
JPEG_SOI, JPEG_EOI, JPEG_SOS = b"\xff\xd8", b"\xff\xd9", 0xDA
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"\x00\x00\x00\x00IEND"   # zero length, then the chunk type
STANDALONE = {0x01} | set(range(0xD0, 0xD8))   # markers without a length field (TEM, RST0..7)


class ImageFileError(FileNotFoundError):
    """An image file that cannot be used (missing, not an image OpenCV decodes, too large); the message names it."""


def image_header(path) -> Tuple[Optional[Tuple[int, int]], str]:
    """`((height, width) after EXIF rotation, as OpenCV reads the pixels, format)` from the file's header, without
    decoding; the size is None for a format PIL does not read but OpenCV does. ImageFileError, whose message is
    a short phrase, for a file that is missing, empty, not an image OpenCV decodes, or over MAX_IMAGE_PIXELS."""
    try:
        st = os.stat(path)
    except OSError as err:
        raise ImageFileError(f"cannot open it ({err.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ImageFileError("not a file (a folder or a device)")
    if st.st_size == 0:
        raise ImageFileError("empty file (0 bytes)")
    try:
        hw, kind = _pil_header(path)
    except Image.DecompressionBombError:           # over PIL's own limit (above ours): read the size alone
        with _NO_PIL_LIMIT:
            limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                hw, kind = _pil_header(path)
            finally:
                Image.MAX_IMAGE_PIXELS = limit
    except (UnidentifiedImageError, SyntaxError, ValueError, OSError):
        hw, kind = None, "unknown"                 # OpenCV may still read it (below)
    if hw is not None and hw[0] * hw[1] > MAX_IMAGE_PIXELS:
        raise ImageFileError(too_large(f"{hw[1]}x{hw[0]} pixels"))
    if not cv2.haveImageReader(str(path)):
        with open(path, "rb") as fh:
            head = fh.read(16)
        raise ImageFileError(f"a {kind} image, which OpenCV cannot decode (convert it to JPEG or PNG)" if hw else
                             f"not an image (it starts with {head!r})")
    return hw, kind


_NO_PIL_LIMIT = threading.Lock()


def _pil_header(path) -> Tuple[Tuple[int, int], str]:
    """`((height, width) after EXIF rotation, format)` as PIL reads the header (no pixels decoded)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            (w, h), kind = img.size, img.format or "unknown"
            try:
                orientation = img.getexif().get(0x0112, 1)
            except Exception:  # noqa: BLE001 - a broken EXIF block: the pixels are still readable
                orientation = 1
    return ((w, h) if orientation in (5, 6, 7, 8) else (h, w)), kind


def too_large(size: str) -> str:
    return (f"{size}, more than the {MAX_IMAGE_PIXELS // 1_000_000} megapixels an image may have "
            "(gluon_yolo3.data.images.MAX_IMAGE_PIXELS); scale it down")


def inspect_image(path) -> Tuple[Optional[str], Optional[Tuple[int, int]]]:
    """`(problem, (height, width))` of the image file at `path`: the problem a short phrase (unreadable, too
    large, truncated: the module docstring) or None; the size from the header (None when unknown or unreadable)."""
    try:
        hw, _ = image_header(path)
    except ImageFileError as err:
        return f"unreadable image: {err}", None
    truncated = image_file_problem(path)
    return (f"truncated image ({truncated})", None) if truncated else (None, hw)


def image_file_problem(path) -> Optional[str]:
    """What makes the JPEG or PNG file at `path` incomplete (a short phrase), or None when it looks whole, is
    another format or cannot be opened (`image_header` reports those)."""
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


def skipped_problem(name: str, what: str) -> str:
    """The `problems` line of an image file skipped for `what` (from `inspect_image`)."""
    return f"{name}: {what}; image skipped"


__all__ = ("image_file_problem", "image_header", "inspect_image", "skipped_problem", "read_image", "ImageFileError",
           "IMAGE_EXTENSIONS", "MAX_IMAGE_PIXELS", "TAIL_BYTES")


def read_image(path) -> np.ndarray:
    """`(H, W, 3) uint8 RGB` of an image file (EXIF orientation applied, as OpenCV does); ImageFileError (a
    FileNotFoundError) naming the file when it is missing, not an image, or larger than MAX_IMAGE_PIXELS (checked
    in the header, before decoding)."""
    try:
        image_header(path)
    except ImageFileError as err:
        raise ImageFileError(f"cannot read image '{path}': {err}") from None
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageFileError(f"cannot read image '{path}' (not an image OpenCV decodes)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
