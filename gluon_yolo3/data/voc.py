"""Pascal VOC layout reader: `root/Annotations/<id>.xml`, `root/JPEGImages/<id>.jpg`,
`root/ImageSets/Main/<split>.txt`.

All annotations are parsed once at construction and kept in memory (and in the annotation cache,
`cache.py`, so that the next construction skips parsing while the XML files are unchanged); images are
read on access.
VOC pixel coordinates are 1-based and inclusive, so a box (xmin, ymin, xmax, ymax) covers the
pixel-edge box (xmin - 1, ymin - 1, xmax, ymax).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..registry import DATASETS
from .base import DatasetError, FileDetectionDataset, sanitize_boxes
from .cache import cached_parse

COORDS = ("xmin", "ymin", "xmax", "ymax")


class _Record:
    """One parsed annotation: object names `(N,)`, raw VOC boxes `(N, 4)`, difficult `(N,)`."""

    __slots__ = ("image_id", "xml", "width", "height", "names", "boxes", "difficult")

    def __init__(self, image_id, xml, width, height, names, boxes, difficult):
        self.image_id, self.xml, self.width, self.height = image_id, xml, width, height
        self.names, self.boxes, self.difficult = names, boxes, difficult


def _text(node: ET.Element, tag: str) -> Optional[str]:
    child = node.find(tag)
    return None if child is None or child.text is None else child.text.strip()


def _number(node: ET.Element, tag: str) -> float:
    text = _text(node, tag)
    if not text:
        raise ValueError(f"missing <{tag}>")
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"<{tag}> is not a number: {text!r}") from None


def _parse_xml(path: Path, image_id: str, problems: List[str]) -> _Record:
    """Parse one annotation file; ParseError / ValueError when the file as a whole is unusable.

    Objects without a name or with missing / non-numeric coordinates are reported and skipped.
    """
    root = ET.parse(str(path)).getroot()
    size = root.find("size")
    if size is None:
        raise ValueError("no <size> element")
    width, height = int(_number(size, "width")), int(_number(size, "height"))
    if width <= 0 or height <= 0:
        raise ValueError(f"image size {width}x{height} is not positive")
    names, boxes, difficult = [], [], []
    for k, obj in enumerate(root.iter("object")):
        name, bnd = _text(obj, "name"), obj.find("bndbox")
        try:
            if not name:
                raise ValueError("no class name")
            if bnd is None:
                raise ValueError("no <bndbox>")
            box = [_number(bnd, c) for c in COORDS]
        except ValueError as err:
            problems.append(f"{path.name}: object {k} ({name or '?'}) skipped: {err}")
            continue
        names.append(name)
        boxes.append(box)
        difficult.append(1.0 if (_text(obj, "difficult") or "0") not in ("0", "0.0", "") else 0.0)
    return _Record(image_id, path.name, width, height, names,
                   np.array(boxes, np.float32).reshape(-1, 4), np.array(difficult, np.float32))


def _voc_to_label(rec: _Record, class_index: Dict[str, int], keep_difficult: bool,
                  problems: List[str]) -> np.ndarray:
    """Label `(M, 6)` of one record: unknown classes and point boxes reported, the rest sanitized."""
    known = np.array([n in class_index for n in rec.names], bool)
    for n in sorted({n for n in rec.names if n not in class_index}):
        problems.append(f"{rec.xml}: unknown class '{n}' skipped "
                        f"({sum(x == n for x in rec.names)} box(es))")
    raw = rec.boxes
    # xmin == xmax (or ymin == ymax) is a click without a drag in annotation tools: an empty box,
    # even though the 1-based inclusive reading would make it one pixel wide.
    point = (raw[:, 2] == raw[:, 0]) | (raw[:, 3] == raw[:, 1])
    for box in raw[known & point]:
        problems.append(f"{rec.xml}: zero-area box xmin={box[0]:g} ymin={box[1]:g} "
                        f"xmax={box[2]:g} ymax={box[3]:g} dropped")
    keep = known & ~point
    if not keep_difficult:
        keep &= rec.difficult == 0
    label = np.zeros((int(keep.sum()), 6), np.float32)
    label[:, :4] = raw[keep] - np.array([1, 1, 0, 0], np.float32)
    label[:, 4] = [class_index[n] for n, k in zip(rec.names, keep) if k]
    label[:, 5] = rec.difficult[keep]
    label, found = sanitize_boxes(label, rec.width, rec.height, rec.xml)
    problems.extend(found)
    return label


def _read_split(root: Path, split: str) -> List[str]:
    path = root / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        raise DatasetError(f"VOC split file not found: {path}")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DatasetError(f"VOC split file is empty: {path}")
    return ids


@DATASETS.register("voc")
class VOCDetection(FileDetectionDataset):
    """Pascal VOC style detection dataset.

    root: folder holding Annotations/, JPEGImages/, ImageSets/Main/; splits: split names (or one name),
    ids: image ids to use instead of split files (e.g. a seeded split of a folder without split files),
    concatenated, duplicates kept once; classes: class names in id order, or None for the sorted names
    found in the annotations of the splits; keep_difficult: keep objects marked difficult (6th column);
    cache: reuse parsed annotations (True: the default cache folder, a path: that folder, False: off);
    check_images: skip (and report) truncated image files. Broken annotation files are reported in
    `problems` and their images skipped; so are objects of classes not in `classes`.
    `found_classes`: the sorted object names of the usable annotations, whether in `classes` or not.
    """

    def __init__(self, root, splits: Sequence[str] | str = ("trainval",),
                 classes: Optional[Sequence[str]] = None, keep_difficult: bool = True,
                 cache: bool | str = True, check_images: bool = True, ids: Optional[Sequence[str]] = None):
        super().__init__()
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DatasetError(f"VOC root not found: {self.root}")
        self.splits = (splits,) if isinstance(splits, str) else tuple(splits)
        self.keep_difficult = bool(keep_difficult)
        if ids is None:
            ids = list(dict.fromkeys(i for s in self.splits for i in _read_split(self.root, s)))
        else:                                   # these image ids instead of split files
            ids, self.splits = list(dict.fromkeys(str(i) for i in ids)), ()
        records = self._parse_cached(ids, cache)
        if check_images:
            paths = [self._jpeg(r.image_id) for r in records]
            keep = self.complete_images(paths, [str(p) for p in paths], cache)
            records = [r for r, k in zip(records, keep) if k]
        self.found_classes = {n for r in records for n in r.names}
        self.classes = tuple(self.found_classes if classes is None else classes)
        index = {n: k for k, n in enumerate(self.classes)}
        self._ids = [r.image_id for r in records]
        self._labels = [_voc_to_label(r, index, self.keep_difficult, self.problems) for r in records]
        self._sizes = [(r.height, r.width) for r in records]
        if not self._ids:
            raise DatasetError(f"no usable images in {self.root} for splits {self.splits}")

    def _parse_cached(self, ids: Sequence[str], cache) -> List[_Record]:
        """`_parse_all` through the annotation cache; sets `from_cache` (True when nothing was parsed)."""
        def parse():
            problems: List[str] = []
            records = self._parse_all(ids, problems)
            return [(r.image_id, r.xml, r.width, r.height, r.names, r.boxes, r.difficult)
                    for r in records], problems

        files = [self.root / "Annotations" / f"{i}.xml" for i in ids]
        (rows, problems), self.from_cache = cached_parse("voc", files, parse, extra=tuple(ids), cache=cache)
        self.problems.extend(problems)
        return [_Record(*row) for row in rows]     # from the cache, tuples are lists: same fields

    def _parse_all(self, ids: Sequence[str], problems: List[str]) -> List[_Record]:
        records = []
        for image_id in ids:
            xml = self.root / "Annotations" / f"{image_id}.xml"
            if not xml.is_file():
                problems.append(f"{xml.name}: annotation file missing; image skipped")
                continue
            try:
                records.append(_parse_xml(xml, image_id, problems))
            except (ET.ParseError, ValueError) as err:
                problems.append(f"{xml.name}: unreadable annotation ({err}); image skipped")
        return records

    def image_id(self, i: int) -> str:
        return self._ids[self._index(i)]

    def image_path(self, i: int) -> Path:
        return self._jpeg(self.image_id(i))

    def _jpeg(self, image_id: str) -> Path:
        return self.root / "JPEGImages" / f"{image_id}.jpg"

