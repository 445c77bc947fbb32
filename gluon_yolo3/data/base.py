"""Dataset base class, the shared box sanity check, and the fatal dataset error.

Every reader returns `dataset[i] -> (image (H, W, 3) uint8 RGB, label (N, 6) float32)` with label rows
`x1, y1, x2, y2, class_id, difficult` in pixels (pixel-edge convention: a box covering pixel columns
0..9 has x1 = 0, x2 = 10). Annotations that cannot be used are skipped and described in `problems`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .cache import cached_parse
from .images import inspect_image, read_image, skipped_problem

LABEL_COLUMNS = 6


class DatasetError(ValueError):
    """A fatal dataset problem (missing root, empty split, no images, unreadable image); a ValueError, so
    that every CLI verb reports it as a bad input, by its message."""


def empty_label() -> np.ndarray:
    """An empty `(0, 6)` float32 label."""
    return np.zeros((0, LABEL_COLUMNS), dtype=np.float32)


def _fmt(box: np.ndarray) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in box[:4]) + "]"


def sanitize_boxes(boxes, width: int, height: int, where: str) -> Tuple[np.ndarray, List[str]]:
    """Drop or clip boxes that do not fit a `width` x `height` image.

    boxes: `(N, K)` with K >= 4, columns x1, y1, x2, y2 (pixels) then any extra columns (carried along).
    Returns `(kept (M, K) float32, problems)`; each problem is `"<where>: <what> <box>"`:
    non-finite, inverted and zero-area boxes, and boxes fully outside the image are dropped;
    boxes partly outside are clipped to the image.
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    if boxes.size == 0:
        return boxes.reshape(0, boxes.shape[-1] if boxes.ndim == 2 else LABEL_COLUMNS), []
    if boxes.ndim != 2 or boxes.shape[1] < 4:
        raise ValueError(f"{where}: boxes must be (N, >=4), got shape {boxes.shape}")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    finite = np.isfinite(boxes[:, :4]).all(axis=1)
    inverted = finite & ((x2 < x1) | (y2 < y1))
    zero = finite & ~inverted & ((x2 == x1) | (y2 == y1))
    outside = finite & ~inverted & ~zero & ((x2 <= 0) | (y2 <= 0) | (x1 >= width) | (y1 >= height))
    keep = finite & ~inverted & ~zero & ~outside
    partly = keep & ((x1 < 0) | (y1 < 0) | (x2 > width) | (y2 > height))

    kept = boxes.copy()
    kept[:, [0, 2]] = np.clip(kept[:, [0, 2]], 0, width)
    kept[:, [1, 3]] = np.clip(kept[:, [1, 3]], 0, height)

    reasons = [(~finite, "non-finite box {box} dropped"),
               (inverted, "inverted box {box} dropped"),
               (zero, "zero-area box {box} dropped"),
               (outside, "box {box} outside the %dx%d image dropped" % (width, height)),
               (partly, "box {box} partly outside the %dx%d image clipped to {clip}" % (width, height))]
    problems = []
    for i in range(len(boxes)):  # report in annotation order
        for mask, text in reasons:
            if mask[i]:
                problems.append(f"{where}: " + text.format(box=_fmt(boxes[i]), clip=_fmt(kept[i])))
    return kept[keep], problems


class DetectionDataset:
    """Base of all detection datasets.

    Subclasses set `classes` (tuple of names) and fill `problems` (list of `"<file>: <problem>"`), and
    implement `__len__`, `__getitem__(i) -> (image (H, W, 3) uint8 RGB, label (N, 6) float32)` and
    `image_id(i) -> str` (a stable name, usually the file stem). Readers of annotation files also set
    `found_classes`: the class names their annotations use, whether or not they are in `classes`.
    """

    classes: Tuple[str, ...] = ()

    def __init__(self):
        self.problems: List[str] = []
        self.warnings: List[str] = []       # what is used but looks wrong (near-duplicate class names, ...)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def found_classes(self) -> Tuple[str, ...]:
        """Sorted names of the classes that occur in the annotations (all of `classes` unless a reader
        sets it: generated data has every class)."""
        found = getattr(self, "_found_classes", None)
        return tuple(sorted(self.classes)) if found is None else found

    @found_classes.setter
    def found_classes(self, names) -> None:
        self._found_classes = tuple(sorted(set(names)))

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, i: int):
        raise NotImplementedError

    def image_id(self, i: int) -> str:
        raise NotImplementedError

    def _index(self, i: int) -> int:
        """`i` as a non-negative index; IndexError when out of range (ends `for` loops)."""
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"{type(self).__name__}: index {i} out of range for {n} images")
        return i % n

    def __repr__(self):
        return (f"{type(self).__name__}({len(self)} images, classes={self.classes}, "
                f"{len(self.problems)} problems)")


class FileDetectionDataset(DetectionDataset):
    """A dataset of image files whose annotations are parsed up front.

    Subclasses fill `_labels` (one `(N, 6)` float32 label per image) and `_sizes` (`(height, width)` of the
    image) and implement `image_path(i)` and `image_id(i)`. Before that, `check_image_files` tells which image
    files can be used, and their sizes (unreadable, too large and truncated ones are reported and skipped).
    """

    def __init__(self):
        super().__init__()
        self._labels: List[np.ndarray] = []
        self._sizes: List[Tuple[int, int]] = []

    def __len__(self) -> int:
        return len(self._labels)

    def image_path(self, i: int) -> Path:
        raise NotImplementedError

    def image_size(self, i: int) -> Tuple[int, int]:
        """`(height, width)` of image `i` (its header's, when its files were checked; else as annotated)."""
        return self._sizes[self._index(i)]

    def label(self, i: int) -> np.ndarray:
        """Label `(N, 6)` float32 of image `i` without reading the image (a copy)."""
        return self._labels[self._index(i)].copy()

    def check_image_files(self, paths: Sequence[Path], names: Sequence[str], cache=True
                          ) -> List[Optional[Tuple[int, int]]]:
        """`(height, width)` from the header of each image file of `paths`, or None for one to skip: missing,
        unreadable, too large or truncated (`images.inspect_image`), reported in `problems` under its name in
        `names`. Through the annotation cache (kind "images", keyed on the files' stat). A size is `(0, 0)` when
        the header does not say it (a format only OpenCV reads)."""
        paths = [Path(p) for p in paths]

        def check() -> List[list]:
            return [[what, *(hw or (0, 0))] for what, hw in map(inspect_image, paths)]

        found, _ = cached_parse("images", paths, check, cache=cache)
        if not (isinstance(found, list) and len(found) == len(paths)
                and all(isinstance(f, list) and len(f) == 3 for f in found)):       # a tampered entry: check again
            found = check()
        out = []
        for name, (what, h, w) in zip(names, found):
            if what:
                self.problems.append(skipped_problem(name, what))
            out.append(None if what else (int(h), int(w)))
        return out

    def read_image(self, i: int) -> np.ndarray:
        """Image `i` as `(H, W, 3)` uint8 RGB; DatasetError naming the file when it cannot be read."""
        try:
            return read_image(self.image_path(i))
        except FileNotFoundError as err:
            raise DatasetError(str(err)) from None

    def __getitem__(self, i: int):
        i = self._index(i)
        return self.read_image(i), self._labels[i].copy()


def fit_to_image(label: np.ndarray, annotated: Tuple[int, int], image: Optional[Tuple[int, int]], where: str,
                 problems: List[str]) -> Optional[np.ndarray]:
    """Boxes `(N, >=4)` of an annotation that gives the image's size as `annotated` (height, width), in the pixels
    of the image as it is (`image`, from its header; None or (0, 0): unknown, nothing changes).

    The image wins: the boxes are scaled from the annotated size to the image's (they were drawn on the picture
    as the annotation gives it, e.g. before the photo was resized; Ultralytics' VOC conversion reads them so),
    and this is reported. Sizes that are swapped (a rotation, such as an EXIF orientation, the boxes do not
    follow) cannot be fitted: None, the image is skipped."""
    if not image or not all(image) or tuple(image) == tuple(annotated):
        return label
    (ah, aw), (h, w) = annotated, image
    if (ah, aw) == (w, h):
        problems.append(f"{where}: annotated as {aw}x{ah} but the image is {w}x{h} (rotated, e.g. by its EXIF "
                        "orientation: the boxes would not fit it); image skipped")
        return None
    problems.append(f"{where}: annotated as {aw}x{ah} but the image is {w}x{h}: boxes scaled to the image")
    label = label.copy()
    label[:, [0, 2]] *= w / aw
    label[:, [1, 3]] *= h / ah
    return label


FLAG_WORDS = {"1": True, "true": True, "yes": True, "y": True, "on": True,
              "0": False, "false": False, "no": False, "n": False, "off": False, "": False}


def parse_flag(value) -> Optional[bool]:
    """A 0/1 flag (`difficult`, `iscrowd`) as annotation files spell it: 0 / 1, 0.0 / 1.0, true / false, yes / no
    (any case), missing = false; None for anything else (the caller reports it)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value) if value in (0, 1) else None
    text = "" if value is None else str(value).strip().lower()
    try:
        number = float(text)
        return bool(number) if number in (0, 1) else None
    except ValueError:
        return FLAG_WORDS.get(text)


def _name_key(name: str) -> str:
    """A class name without case and whitespace: names with one key are near-duplicates."""
    return "".join(str(name).split()).casefold()


def similar_names_warning(files: Mapping[str, Sequence[str]]) -> List[str]:
    """One warning per group of class names that differ only in case or spaces (`Raccoon`, `raccoon `), each
    with the files that use it; `files`: class name -> the annotation files naming it."""
    groups: Dict[str, List[str]] = {}
    for name in sorted(files):
        groups.setdefault(_name_key(name), []).append(name)
    out = []
    for names in (g for g in groups.values() if len(g) > 1):
        used = []
        for n in names:
            where = sorted(set(files[n]))
            used.append(f"{n!r} ({', '.join(where[:3])}{f' and {len(where) - 3} more' if len(where) > 3 else ''})")
        out.append(f"class names {' and '.join(used)} differ only in case or spaces: they are {len(names)} separate "
                   "classes; fix the annotations, or list the classes you mean in data.classes")
    return out


def similar_hint(name: str, known: Iterable[str]) -> str:
    """` (differs from 'x' only in case or spaces)` when a name of `known` is a near-duplicate of `name`, else ""."""
    key = _name_key(name)
    match = next((k for k in known if k != name and _name_key(k) == key), None)
    return "" if match is None else f" (differs from {match!r} only in case or spaces)"


def check_label(label: np.ndarray, where: str = "label") -> np.ndarray:
    """`label` as a `(N, 6)` float32 array; ValueError for any other shape."""
    label = np.asarray(label, dtype=np.float32)
    if label.size == 0:
        return empty_label()
    if label.ndim != 2 or label.shape[1] != LABEL_COLUMNS:
        raise ValueError(f"{where}: expected a (N, {LABEL_COLUMNS}) label, got shape {label.shape}")
    return label


__all__ = ("DatasetError", "DetectionDataset", "sanitize_boxes", "empty_label",
           "check_label", "LABEL_COLUMNS")
