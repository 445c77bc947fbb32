"""Detections written as annotation files that a person corrects in a labelling tool and `train` reads back:
a Pascal VOC folder (`voc.py` reads it) or a YOLO txt dataset (`yolo_txt.py`), each a dataset folder of its own.

    writer = label_writer("voc", "predictions/labels", classes)      # or "yolo"
    writer.add("frame_000012", image, boxes, ids)     # image (H, W, 3) uint8 RGB; boxes (K, 4) x1y1x2y2 pixels
    writer.add("photo", image, boxes, ids, source_file="photos/photo.png")   # the file copied, not re-encoded
    writer.close()

VOC: `Annotations/<name>.xml` (`<size>`, boxes 1-based and inclusive in whole pixels, as VOC has them; a box
under 2 pixels wide or high after rounding is left out, as VOC readers take xmin == xmax for an empty box)
and `JPEGImages/<name>.jpg` (a .jpg / .jpeg file copied; other images and video frames written as JPEG,
quality 95, since VOC folders hold JPEGs). YOLO: `data.yaml` (`names`: the model's classes in id order,
`train: images`), `images/<name>.<ext>` (copied; video frames and other files as .jpg), `labels/<name>.txt` (`class cx cy w
h`, normalised, 6 decimals) and `classes.txt` (one name a line, for labelling tools). Either folder is a
`data.root` for `data check` and `train`. An image without detections gets an annotation without objects,
so that it stays a negative example until someone adds boxes. A folder that already holds annotations is
refused: labels someone may have corrected are never overwritten.
"""
from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
import yaml

from ..files import WriteError, atomic_write_text, cannot_write, make_folder
from .yolo_txt import IMAGE_EXTENSIONS

FORMATS = ("voc", "yolo")
JPEG_QUALITY = 95


def label_writer(fmt: str, root, classes: Sequence[str]) -> "LabelWriter":
    """A VOC or YOLO writer into the new dataset folder `root`, for a model of `classes` (id order)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown label format {fmt!r}: one of {', '.join(FORMATS)}")
    return (VOCWriter if fmt == "voc" else YOLOWriter)(root, classes)


class LabelWriter:
    """Writes one image and one annotation per `add`; `images` counts them."""

    image_folder = ""
    label_folder = ""
    label_suffix = ""

    def __init__(self, root, classes: Sequence[str]):
        self.root = Path(root)
        self.classes = [str(c) for c in classes]
        labels = self.root / self.label_folder
        if labels.is_dir() and any(labels.glob(f"*{self.label_suffix}")):
            raise WriteError(f"{labels} already holds annotations: choose another --out (labels someone may "
                             f"have corrected are never overwritten)")
        make_folder(labels)
        make_folder(self.root / self.image_folder)
        self.images = 0

    def add(self, name: str, image: np.ndarray, boxes: np.ndarray, ids: np.ndarray,
            source_file: Optional[str] = None):
        """Image `name` (unique in this folder): `image (H, W, 3) uint8 RGB` (or `source_file` copied) and its
        boxes `(K, 4)` x1y1x2y2 in its pixels, class `ids (K,)`."""
        height, width = image.shape[:2]
        image_path = self._write_image(name, image, source_file)
        annotation = self.annotation(image_path.name, width, height, np.asarray(boxes, np.float64).reshape(-1, 4),
                                     np.asarray(ids, np.int64).reshape(-1))
        path = self.root / self.label_folder / f"{name}{self.label_suffix}"
        try:
            path.write_text(annotation)
        except OSError as err:
            raise cannot_write(path, err) from None
        self.images += 1

    def _write_image(self, name: str, image: np.ndarray, source_file: Optional[str]) -> Path:
        suffix = self.copied_suffix(Path(source_file)) if source_file else None
        path = self.root / self.image_folder / f"{name}{suffix or '.jpg'}"
        try:
            if suffix:
                shutil.copyfile(source_file, path)
            elif not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                                 [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
                raise OSError("OpenCV could not encode the image")
        except OSError as err:
            raise cannot_write(path, err) from None
        return path

    def copied_suffix(self, source: Path) -> Optional[str]:
        """The suffix a copy of `source` takes here, or None when it must be re-encoded as JPEG."""
        raise NotImplementedError

    def annotation(self, image_name: str, width: int, height: int, boxes: np.ndarray, ids: np.ndarray) -> str:
        raise NotImplementedError

    def close(self):
        """Write what describes the whole folder (the YOLO class list); nothing for VOC."""


class VOCWriter(LabelWriter):
    image_folder, label_folder, label_suffix = "JPEGImages", "Annotations", ".xml"

    def copied_suffix(self, source: Path) -> Optional[str]:
        return ".jpg" if source.suffix.lower() in (".jpg", ".jpeg") else None

    def annotation(self, image_name, width, height, boxes, ids) -> str:
        root = ET.Element("annotation")
        _sub(root, "folder", self.image_folder)
        _sub(root, "filename", image_name)
        size = ET.SubElement(root, "size")
        for tag, value in (("width", width), ("height", height), ("depth", 3)):
            _sub(size, tag, value)
        _sub(root, "segmented", 0)
        edges = np.round(boxes).astype(np.int64)        # pixel-edge box; VOC's xmin is its left edge + 1
        for (x1, y1, x2, y2), c in zip(edges, ids):
            if x2 - x1 < 2 or y2 - y1 < 2:
                continue
            obj = ET.SubElement(root, "object")
            for tag, value in (("name", self.classes[c]), ("pose", "Unspecified"), ("truncated", 0),
                               ("difficult", 0)):
                _sub(obj, tag, value)
            box = ET.SubElement(obj, "bndbox")
            for tag, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
                _sub(box, tag, value)
        ET.indent(root)
        return ET.tostring(root, encoding="unicode") + "\n"


class YOLOWriter(LabelWriter):
    image_folder, label_folder, label_suffix = "images", "labels", ".txt"

    def copied_suffix(self, source: Path) -> Optional[str]:
        return source.suffix if source.suffix.lower() in IMAGE_EXTENSIONS else None

    def annotation(self, image_name, width, height, boxes, ids) -> str:
        lines = []
        for (x1, y1, x2, y2), c in zip(boxes, ids):
            cx, cy, w, h = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height
            lines.append(f"{int(c)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
        return "".join(lines)

    def close(self):
        content = {"path": ".", "train": self.image_folder, "nc": len(self.classes), "names": self.classes}
        atomic_write_text(self.root / "data.yaml", yaml.safe_dump(content, sort_keys=False))
        atomic_write_text(self.root / "classes.txt", "".join(f"{c}\n" for c in self.classes))


def _sub(parent: ET.Element, tag: str, value) -> ET.Element:
    child = ET.SubElement(parent, tag)
    child.text = str(value)
    return child
