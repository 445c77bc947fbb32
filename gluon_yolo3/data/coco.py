"""COCO JSON reader (parsed with pycocotools): `ann_file` (an instances JSON) and an image folder.

COCO boxes are `[x, y, width, height]` in continuous pixel coordinates, so a box becomes the pixel-edge
box `(x, y, x + width, y + height)` (the convention pycocotools' evaluation uses). Category ids (any
integers, with gaps) map to contiguous labels `0..C-1` in the order of `classes` (default: category id
order); `label_to_cat_id` / `cat_id_to_label` map back and forth, e.g. to write detections for COCOeval.
Crowd annotations are left out, or kept with the difficult flag set (`use_crowd=True`), so that VOC-style
evaluation ignores them as COCOeval does.
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from pycocotools.coco import COCO

from ..registry import DATASETS
from ..schema import shown
from .base import (DatasetError, FileDetectionDataset, fit_to_image, parse_flag, sanitize_boxes,
                   similar_names_warning)
from .cache import cached_parse


def _load_coco(ann_file: Path):
    """pycocotools' COCO object of `ann_file`, quietly; DatasetError naming the file when unusable."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(ann_file))
    except json.JSONDecodeError as err:
        raise DatasetError(f"{ann_file}: not valid JSON ({err})") from None
    except (KeyError, TypeError, AssertionError, AttributeError) as err:
        raise DatasetError(f"{ann_file}: not a COCO instances file ({type(err).__name__}: {err})") from None


def _parse(ann_file: Path):
    """Plain data of `ann_file`: (categories [(id, name)], images [(id, file, w, h, boxes, cats, crowd)], problems)."""
    coco = _load_coco(ann_file)
    name = ann_file.name
    for key in ("images", "annotations", "categories"):
        if key not in coco.dataset:
            raise DatasetError(f"{ann_file}: no '{key}' list (not a COCO instances file)")
    categories = [(int(c["id"]), str(c["name"])) for c in sorted(coco.dataset["categories"],
                                                                  key=lambda c: c["id"])]
    known_cats = {cid for cid, _ in categories}
    problems: List[str] = []
    images = []
    for img_id in sorted(coco.imgs):
        info = coco.imgs[img_id]
        file_name = str(info.get("file_name", ""))
        where = f"{name} ({file_name or f'image id {img_id}'})"
        try:
            width, height = int(info["width"]), int(info["height"])
        except (KeyError, TypeError, ValueError):
            problems.append(f"{where}: image without a usable width/height; image skipped")
            continue
        if not file_name or width <= 0 or height <= 0:
            problems.append(f"{where}: image without a file name or with size {width}x{height}; image skipped")
            continue
        boxes, cats, crowd = [], [], []
        for ann in coco.imgToAnns.get(img_id, []):
            bbox = ann.get("bbox")
            if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
                problems.append(f"{where}: annotation {ann.get('id', '?')} has no 4-number bbox; skipped")
                continue
            try:
                box = [float(v) for v in bbox]
            except (TypeError, ValueError):
                problems.append(f"{where}: annotation {ann.get('id', '?')} bbox {bbox} is not numbers; skipped")
                continue
            cid = ann.get("category_id")
            if cid not in known_cats:
                problems.append(f"{where}: annotation {ann.get('id', '?')} has unknown category id {cid}; "
                                "skipped")
                continue
            flag = parse_flag(ann.get("iscrowd", 0))
            if flag is None:
                problems.append(f"{where}: annotation {ann.get('id', '?')} iscrowd {shown(ann.get('iscrowd'))} is not "
                                "0 or 1; taken as 0")
            boxes.append(box)
            cats.append(int(cid))
            crowd.append(bool(flag))
        images.append((int(img_id), file_name, width, height, np.array(boxes, np.float32).reshape(-1, 4),
                       np.array(cats, np.int64), np.array(crowd, bool)))
    orphans = sorted(set(coco.imgToAnns) - set(coco.imgs))
    if orphans:
        problems.append(f"{name}: annotations for {len(orphans)} image id(s) not in 'images' "
                        f"(e.g. {orphans[:3]}); skipped")
    return categories, images, problems


@DATASETS.register("coco")
class COCODetection(FileDetectionDataset):
    """COCO JSON detection dataset.

    ann_file: the instances JSON; root: folder the images' `file_name`s are relative to (default: the JSON's
    folder, then its `images/` subfolder if the first image is not found there); classes: names in label order
    (default: every category, by id); a class that is not a category of the file is reported in `problems`
    and has no boxes (DatasetError when none is); use_crowd: keep crowd boxes, flagged difficult;
    skip_empty: drop images without boxes; cache: reuse the parsed JSON (True, a folder, or False);
    check_images: skip (and report) unreadable, too large and truncated image files; where the JSON's width and
    height differ from the image's, the image wins (`base.fit_to_image`). `found_classes`: the sorted names of
    the categories the annotations use, whether in `classes` or not.
    """

    def __init__(self, ann_file, root=None, classes: Optional[Sequence[str]] = None, use_crowd: bool = False,
                 skip_empty: bool = False, cache: bool | str = True, check_images: bool = True):
        super().__init__()
        self.ann_file = Path(ann_file).expanduser()
        if not self.ann_file.is_file():
            raise DatasetError(f"COCO annotation file not found: {self.ann_file}")
        (categories, images, problems), self.from_cache = cached_parse(
            "coco", [self.ann_file], lambda: _parse(self.ann_file), cache=cache)
        self.problems.extend(problems)
        names_by_id = dict(categories)
        self._set_classes(categories, classes)
        self.root = self._find_root(root, images)
        self.use_crowd = bool(use_crowd)
        sizes = [None] * len(images)
        if check_images:
            paths = [self.root / image[1] for image in images]
            sizes = self.check_image_files(paths, [str(p) for p in paths], cache)
            kept = [k for k, hw in enumerate(sizes) if hw is not None]
            images, sizes = [images[k] for k in kept], [sizes[k] for k in kept]
        self.found_classes = {names_by_id[c] for image in images for c in image[5].tolist()}
        self.warnings.extend(similar_names_warning({n: [self.ann_file.name] for _, n in categories}))
        self._ids, self._files, self._sizes, self._labels, self._coco_ids = [], [], [], [], []
        for (img_id, file_name, width, height, boxes, cats, crowd), hw in zip(images, sizes):
            label = self._to_label(file_name, width, height, boxes, cats, crowd, names_by_id, hw)
            if label is None or (skip_empty and not len(label)):
                continue
            self._coco_ids.append(img_id)
            self._files.append(file_name)
            self._ids.append(Path(file_name).stem)
            self._sizes.append(tuple(hw) if hw and all(hw) else (height, width))
            self._labels.append(label)
        if not self._ids:
            raise DatasetError(f"no usable images in {self.ann_file}")

    def _set_classes(self, categories, classes: Optional[Sequence[str]]) -> None:
        """`classes`, `cat_ids` (None for a class that is not a category here) and the label <-> id maps."""
        if classes is None:
            self.cat_ids: List[Optional[int]] = [cid for cid, _ in categories]
            self.classes = tuple(n for _, n in categories)
        else:
            by_name = {n: cid for cid, n in categories}
            self.classes = tuple(classes)
            self.cat_ids = [by_name.get(c) for c in self.classes]
            if self.classes and all(cid is None for cid in self.cat_ids):
                raise DatasetError(f"{self.ann_file}: none of the classes {list(self.classes)} is a "
                                   f"category of this file (it has: {', '.join(n for _, n in categories)})")
            for c, cid in zip(self.classes, self.cat_ids):
                if cid is None:
                    self.problems.append(f"{self.ann_file}: class '{c}' is not a category of this file: "
                                         "no boxes of it here")
        self.label_to_cat_id: Dict[int, int] = {k: cid for k, cid in enumerate(self.cat_ids) if cid is not None}
        self.cat_id_to_label: Dict[int, int] = {cid: k for k, cid in self.label_to_cat_id.items()}

    def _find_root(self, root, images) -> Path:
        if root is not None:
            root = Path(root).expanduser()
            if not root.is_dir():
                raise DatasetError(f"COCO image folder not found: {root}")
            return root
        base = self.ann_file.parent
        if images and not (base / images[0][1]).exists() and (base / "images" / images[0][1]).exists():
            return base / "images"
        return base

    def _to_label(self, file_name, width, height, boxes, cats, crowd, names_by_id, image_hw=None
                  ) -> Optional[np.ndarray]:
        where = f"{self.ann_file.name} ({file_name})"
        keep = np.array([c in self.cat_id_to_label for c in cats], bool)
        for cid in sorted(set(cats[~keep].tolist())):
            self.problems.append(f"{where}: class '{names_by_id[cid]}' not in classes, "
                                 f"{int((cats == cid).sum())} box(es) skipped")
        if not self.use_crowd:
            keep &= ~crowd
        label = np.zeros((int(keep.sum()), 6), np.float32)
        label[:, 0:2] = boxes[keep, 0:2]
        label[:, 2:4] = boxes[keep, 0:2] + boxes[keep, 2:4]
        label[:, 4] = [self.cat_id_to_label[c] for c in cats[keep]]
        label[:, 5] = crowd[keep]
        label = fit_to_image(label, (height, width), image_hw, where, self.problems)
        if label is None:
            return None
        height, width = image_hw if image_hw and all(image_hw) else (height, width)
        label, found = sanitize_boxes(label, width, height, where)
        self.problems.extend(found)
        return label

    def image_id(self, i: int) -> str:
        return self._ids[self._index(i)]

    def coco_image_id(self, i: int) -> int:
        """The image's id in the JSON."""
        return self._coco_ids[self._index(i)]

    def image_path(self, i: int) -> Path:
        return self.root / self._files[self._index(i)]

