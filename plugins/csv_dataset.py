"""An example dataset plugin: boxes listed in a CSV file, one row per box, with the header

    filename,width,height,class,xmin,ymin,xmax,ymax

(the layout of TensorFlow's object-detection CSVs: pixels, x1 y1 x2 y2). Use it from a recipe:

    plugins: [../plugins/csv_dataset.py]          # relative to the recipe
    data:
      train: {type: csv, file: /data/train.csv, images: /data/images}
      val: {type: csv, file: /data/val.csv, images: /data/images}

A dataset is a class registered in `DATASETS` whose items are `(image (H, W, 3) uint8 RGB, label (N, 6) float32)`
with label rows `x1, y1, x2, y2, class_id, difficult` in pixels; it sets `classes` and reports every annotation it
skips in `problems` ("<file>: <what is wrong>"). `FileDetectionDataset` reads the images, skips truncated ones and
gives the sizes and labels to the data checks; `sanitize_boxes` drops or clips bad boxes and says why. The run's
class list reaches it as `classes` (the validation split gets the training split's). Copy this file to start
your own.
"""
import csv
from pathlib import Path

import numpy as np

from gluon_yolo3.data.base import DatasetError, FileDetectionDataset, sanitize_boxes
from gluon_yolo3.registry import DATASETS

COLUMNS = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")


@DATASETS.register("csv")
class CSVDataset(FileDetectionDataset):
    """Boxes from a CSV file (`filename,width,height,class,xmin,ymin,xmax,ymax`, pixels), images in `images`
    (default: the CSV's folder); an image with several boxes has several rows.

    `classes`: the run's class list (default: the CSV's class names, sorted); a box of another class is
    reported and skipped."""

    def __init__(self, file: str, images: str = None, classes=None):
        super().__init__()
        path = Path(file)
        if not path.is_file():
            raise DatasetError(f"csv: annotation file {path} not found")
        folder = Path(images) if images else path.parent
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise DatasetError(f"{path}: missing columns {', '.join(missing)} (header: {', '.join(COLUMNS)})")
            rows = list(reader)
        self.found_classes = {row["class"] for row in rows}
        self.classes = tuple(classes) if classes else tuple(sorted(self.found_classes))
        per_image = {}                                   # filename -> (size, boxes), in the CSV's order
        for line, row in enumerate(rows, start=2):
            where = f"{path}:{line}"
            try:
                size = (int(row["height"]), int(row["width"]))
                box = [float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax")]
            except ValueError:
                self.problems.append(f"{where}: a size or coordinate is not a number; box skipped")
                continue
            _, boxes = per_image.setdefault(row["filename"], (size, []))
            if row["class"] not in self.classes:
                self.problems.append(f"{where}: class '{row['class']}' is not in the class list; box skipped")
                continue
            boxes.append(box + [self.classes.index(row["class"]), 0.0])
        names = list(per_image)
        sizes = self.check_image_files([folder / n for n in names], names)
        self._files = []
        for name, header in zip(names, sizes):
            if header is None:                           # missing, unreadable or truncated: reported
                continue
            (height, width), boxes = per_image[name]
            label, problems = sanitize_boxes(np.asarray(boxes, np.float32).reshape(-1, 6), width, height,
                                             where=f"{path}: {name}")
            self.problems += problems
            self._labels.append(label)
            self._sizes.append((height, width))
            self._files.append(folder / name)
        if not self._labels:
            raise DatasetError(f"{path}: no usable image")

    def image_path(self, i: int) -> Path:
        return self._files[self._index(i)]

    def image_id(self, i: int) -> str:
        return self._files[self._index(i)].stem
