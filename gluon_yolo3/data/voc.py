"""Pascal VOC layout reader: `root/Annotations/<id>.xml`, `root/JPEGImages/<id>.jpg`,
`root/ImageSets/Main/<split>.txt`, read as the tools that write it mean it (LabelImg, CVAT, Roboflow):

- an image is `JPEGImages/<id>.<any image extension, any case>` (`.jpg`, `.JPG`, `.png`, `.jpeg`, ...), else the
  file the XML's `<filename>` names there; several candidates: `<id>.jpg`, else the one `<filename>` names, else
  the image is skipped and reported, as is an annotation without an image;
- a split file's line is an image id; a line that names an image file (`0001.jpg`, `JPEGImages/0001.jpg`) is
  taken as its id, anything else is reported with the split file and line number;
- an XML `<size>` that differs from the image's own: the image wins and the boxes are scaled to it, reported
  (`base.fit_to_image`); width and height swapped (a rotation the boxes do not follow): skipped, reported.

All annotations are parsed once at construction and kept in memory (and in the annotation cache,
`cache.py`, so that the next construction skips parsing while the XML files are unchanged); images are
read on access.
VOC pixel coordinates are 1-based and inclusive, so a box (xmin, ymin, xmax, ymax) covers the
pixel-edge box (xmin - 1, ymin - 1, xmax, ymax).
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..registry import DATASETS
from ..schema import shown
from .base import (DatasetError, FileDetectionDataset, fit_to_image, parse_flag, sanitize_boxes, similar_hint,
                   similar_names_warning)
from .cache import cached_parse
from .images import IMAGE_EXTENSIONS

COORDS = ("xmin", "ymin", "xmax", "ymax")


class _Record:
    """One parsed annotation: object names `(N,)`, raw VOC boxes `(N, 4)`, difficult `(N,)`."""

    __slots__ = ("image_id", "xml", "width", "height", "names", "boxes", "difficult", "filename")

    def __init__(self, image_id, xml, width, height, names, boxes, difficult, filename):
        self.image_id, self.xml, self.width, self.height = image_id, xml, width, height
        self.names, self.boxes, self.difficult, self.filename = names, boxes, difficult, filename


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
        flag = parse_flag(_text(obj, "difficult"))
        if flag is None:
            problems.append(f"{path.name}: object {k} ({name}): <difficult> {shown(_text(obj, 'difficult'))} is not 0 "
                            "or 1; taken as 0")
        names.append(name)
        boxes.append(box)
        difficult.append(1.0 if flag else 0.0)
    return _Record(image_id, path.name, width, height, names,
                   np.array(boxes, np.float32).reshape(-1, 4), np.array(difficult, np.float32),
                   _text(root, "filename") or "")


def _voc_to_label(rec: _Record, class_index: Dict[str, int], keep_difficult: bool,
                  problems: List[str], image_hw=None) -> Optional[np.ndarray]:
    """Label `(M, 6)` of one record in the pixels of the image (`image_hw` from its header, when known): unknown
    classes and point boxes reported, the rest sanitized; None when its boxes cannot fit the image."""
    known = np.array([n in class_index for n in rec.names], bool)
    for n in sorted({n for n in rec.names if n not in class_index}):
        problems.append(f"{rec.xml}: unknown class '{n}' skipped "
                        f"({sum(x == n for x in rec.names)} box(es)){similar_hint(n, class_index)}")
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
    label = fit_to_image(label, (rec.height, rec.width), image_hw, rec.xml, problems)
    if label is None:
        return None
    height, width = image_hw if image_hw and all(image_hw) else (rec.height, rec.width)
    label, found = sanitize_boxes(label, width, height, rec.xml)
    problems.extend(found)
    return label


def read_split(root: Path, split: str, problems: List[str]) -> List[str]:
    """The image ids of `ImageSets/Main/<split>.txt`; lines that are no id of the folder reported, with the line."""
    path = root / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        raise DatasetError(f"VOC split file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: unreadable split file ({err})") from None
    ids = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        first = line.split()[0]
        for candidate in (first, Path(first).stem):      # an id, or an image file named by its path
            if (root / "Annotations" / f"{candidate}.xml").is_file():
                ids.append(candidate)
                break
        else:
            problems.append(f"ImageSets/Main/{split}.txt:{n}: {shown(line.strip())} is not an image id of {root} "
                            f"(no Annotations/{Path(first).stem}.xml); skipped")
    if not ids:
        raise DatasetError(f"VOC split file {path} names no image of {root}"
                           + (f" ({problems[-1]})" if problems else " (it is empty)"))
    return ids


def image_index(folder: Path) -> Dict[str, List[str]]:
    """`{stem: [file names]}` of the image files in `folder` (any image extension, in any case), sorted."""
    index: Dict[str, List[str]] = {}
    if folder.is_dir():
        for name in sorted(os.listdir(folder)):
            if Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                index.setdefault(Path(name).stem, []).append(name)
    return index


def find_image(index: Dict[str, List[str]], image_id: str, filename: str) -> Tuple[Optional[str], str]:
    """`(file name, why not)` of an annotation's image in an `image_index`: `<id>.<ext>`, else `<filename>`."""
    found = index.get(image_id, [])
    if len(found) > 1:
        chosen = [n for n in found if n == f"{image_id}.jpg"] or [n for n in found if n == filename]
        if chosen:
            return chosen[0], ""
        return None, f"several images for it ({', '.join(found)}) and its <filename> names none of them"
    if found:
        return found[0], ""
    named = Path(filename or "").name
    if named and named in index.get(Path(named).stem, []):
        return named, ""
    return None, f"no image {image_id}.* in JPEGImages" + (f" nor its <filename> {shown(named)}" if named else "")


@DATASETS.register("voc")
class VOCDetection(FileDetectionDataset):
    """Pascal VOC style detection dataset.

    root: folder holding Annotations/, JPEGImages/, ImageSets/Main/; splits: split names (or one name),
    ids: image ids to use instead of split files (e.g. a seeded split of a folder without split files),
    concatenated, duplicates kept once; classes: class names in id order, or None for the sorted names
    found in the annotations of the splits; keep_difficult: keep objects marked difficult (6th column);
    cache: reuse parsed annotations (True: the default cache folder, a path: that folder, False: off);
    check_images: skip (and report) unreadable, too large and truncated image files, and read each image's size
    from its header. Broken annotation files and annotations without an image are reported in `problems` and
    skipped; so are objects of classes not in `classes`.
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
            ids = list(dict.fromkeys(i for s in self.splits for i in read_split(self.root, s, self.problems)))
        else:                                   # these image ids instead of split files
            ids, self.splits = list(dict.fromkeys(str(i) for i in ids)), ()
        records = self._parse_cached(ids, cache)
        files = image_index(self.root / "JPEGImages")
        self._files: Dict[str, str] = {}
        for r in records:
            name, why = find_image(files, r.image_id, r.filename)
            if name:
                self._files[r.image_id] = name
            else:
                self.problems.append(f"{r.xml}: {why}; image skipped")
        records = [r for r in records if r.image_id in self._files]
        sizes = [None] * len(records)
        if check_images:
            paths = [self.image_file(r.image_id) for r in records]
            sizes = self.check_image_files(paths, [str(p) for p in paths], cache)
            kept = [k for k, hw in enumerate(sizes) if hw is not None]
            records, sizes = [records[k] for k in kept], [sizes[k] for k in kept]
        self.found_classes = {n for r in records for n in r.names}
        self.classes = tuple(self.found_classes if classes is None else classes)
        self.warnings.extend(similar_names_warning({n: [r.xml for r in records if n in r.names]
                                                    for n in self.found_classes}))
        index = {n: k for k, n in enumerate(self.classes)}
        self._ids, self._labels, self._sizes = [], [], []
        for r, hw in zip(records, sizes):
            label = _voc_to_label(r, index, self.keep_difficult, self.problems, hw)
            if label is not None:
                self._ids.append(r.image_id)
                self._labels.append(label)
                self._sizes.append(tuple(hw) if hw and all(hw) else (r.height, r.width))
        if not self._ids:
            raise DatasetError(f"no usable images in {self.root} for splits {self.splits}"
                               + (f" ({len(self.problems)} problems, e.g. {self.problems[0]})" if self.problems else ""))

    def _parse_cached(self, ids: Sequence[str], cache) -> List[_Record]:
        """`_parse_all` through the annotation cache; sets `from_cache` (True when nothing was parsed)."""
        def parse():
            problems: List[str] = []
            records = self._parse_all(ids, problems)
            return [(r.image_id, r.xml, r.width, r.height, r.names, r.boxes, r.difficult, r.filename)
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
        return self.image_file(self.image_id(i))

    def image_file(self, image_id: str) -> Path:
        return self.root / "JPEGImages" / self._files[image_id]

