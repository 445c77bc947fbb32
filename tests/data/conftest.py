"""Fixtures of the data tests: dataset folders written by hand (VOC, COCO JSON, YOLO txt) from synthetic shapes."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from gluon_yolo3.data.synthetic import SyntheticShapes

CAT_IDS = (3, 7, 11)      # COCO ids with gaps, on purpose


def _write_voc(root, objects_per_image, split="train", size=(48, 64)):
    """A tiny VOC tree; objects_per_image: {image_id: [(name, xmin, ymin, xmax, ymax, difficult)]}."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    h, w = size
    for image_id, objects in objects_per_image.items():
        cv2.imwrite(str(root / "JPEGImages" / f"{image_id}.jpg"), np.full((h, w, 3), 128, np.uint8))
        body = "".join(
            f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{a}</xmin>"
            f"<ymin>{b}</ymin><xmax>{c}</xmax><ymax>{e}</ymax></bndbox></object>"
            for n, a, b, c, e, d in objects)
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
            f"{body}</annotation>")
    (root / "ImageSets/Main" / f"{split}.txt").write_text("\n".join(objects_per_image) + "\n")
    return root


def _write_coco(folder, num_images=12, size=96, seed=0, split="train", extra_annotations=()):
    """Synthetic shapes as a COCO instances file `folder/annotations.json` + `folder/images/*.png`.

    Categories get ids CAT_IDS (in shuffled order in the file). Returns (json path, synthetic dataset).
    """
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    ds = SyntheticShapes(num_images=num_images, image_size=size, seed=seed, split=split)
    images, anns = [], []
    for i in range(len(ds)):
        image, label = ds[i]
        name = f"{ds.image_id(i)}.png"
        cv2.imwrite(str(folder / "images" / name), image[:, :, ::-1])
        images.append({"id": 100 + i, "file_name": name, "width": size, "height": size})
        for row in label:
            x1, y1, x2, y2 = (float(v) for v in row[:4])
            anns.append({"id": len(anns) + 1, "image_id": 100 + i, "category_id": CAT_IDS[int(row[4])],
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    for ann in extra_annotations:
        anns.append({"id": len(anns) + 1, "area": 1.0, "iscrowd": 0, **ann})
    cats = [{"id": CAT_IDS[k], "name": ds.classes[k], "supercategory": "shape"} for k in (2, 0, 1)]
    path = folder / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path, ds


def _write_yolo(folder, num_images=12, size=96, seed=0, names_as_dict=False):
    """Synthetic shapes as an Ultralytics folder: data.yaml, images/{train,val}, labels/{train,val}."""
    folder = Path(folder)
    sets = {}
    for split, count in (("train", num_images), ("val", max(2, num_images // 3))):
        ds = SyntheticShapes(num_images=count, image_size=size, seed=seed, split=split)
        (folder / "images" / split).mkdir(parents=True, exist_ok=True)
        (folder / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(len(ds)):
            image, label = ds[i]
            cv2.imwrite(str(folder / "images" / split / f"{ds.image_id(i)}.png"), image[:, :, ::-1])
            lines = []
            for x1, y1, x2, y2, c, _ in label:
                lines.append(f"{int(c)} {(x1 + x2) / 2 / size:.6f} {(y1 + y2) / 2 / size:.6f} "
                             f"{(x2 - x1) / size:.6f} {(y2 - y1) / size:.6f}")
            (folder / "labels" / split / f"{ds.image_id(i)}.txt").write_text("\n".join(lines) + "\n")
        sets[split] = ds
    names = ({k: n for k, n in enumerate(sets["train"].classes)} if names_as_dict
             else list(sets["train"].classes))
    import yaml
    (folder / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "images/train",
                                                      "val": "images/val", "names": names}))
    return folder, sets


@pytest.fixture(scope="session")
def write_voc():
    """write_voc(root, {image_id: [(name, xmin, ymin, xmax, ymax, difficult)]}, split="train", size=(48, 64))
    -> root: a tiny VOC tree of grey JPEGs."""
    return _write_voc


@pytest.fixture(scope="session")
def write_coco():
    """write_coco(folder, num_images=12, size=96, seed=0, split="train", extra_annotations=())
    -> (json path, synthetic dataset): category ids `coco_cat_ids`."""
    return _write_coco


@pytest.fixture(scope="session")
def coco_cat_ids():
    """The COCO category ids `write_coco` gives the synthetic classes, in class order (with gaps, on purpose)."""
    return CAT_IDS


@pytest.fixture(scope="session")
def write_yolo():
    """write_yolo(folder, num_images=12, size=96, seed=0, names_as_dict=False)
    -> (folder, {split: synthetic dataset}): an Ultralytics folder."""
    return _write_yolo
