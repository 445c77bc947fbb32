"""A dataset folder as a user brings it: Pascal VOC or YOLO txt, with or without split files.

    train = DATASETS.build({"type": "folder", "root": "~/photos", "split": "train"})
    val = DATASETS.build({"type": "folder", "root": "~/photos", "split": "val"})

`data.root: PATH` in a recipe means exactly these two. The format is found from the folder (VOC:
`Annotations/` and `JPEGImages/`; YOLO txt: a `data.yaml`). Training takes `trainval` (else `train`),
validation `test` (else `val`); a folder without them gets a seeded 80/20 split of its images (`seed`,
`val_fraction`), the same every time, which the trainer writes into the run folder (`splits/`). Each dataset
says where it came from in `split_source` (`trainval`, `test`, `seeded 80/20 split`).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..registry import DATASETS
from .base import DatasetError
from .voc import VOCDetection
from .yolo_txt import YOLOTxtDetection, read_data_yaml, split_images, split_names

TRAIN_SPLITS, VAL_SPLITS = ("trainval", "train"), ("test", "val")


def folder_format(root: Path) -> str:
    """`voc` or `yolo` for a dataset folder; DatasetError naming what was looked for otherwise."""
    if (root / "Annotations").is_dir() and (root / "JPEGImages").is_dir():
        return "voc"
    if root.is_file() or any((root / n).is_file() for n in ("data.yaml", "data.yml", "dataset.yaml")):
        return "yolo"
    raise DatasetError(f"data.root {root}: neither a Pascal VOC folder (Annotations/ and JPEGImages/) nor a YOLO "
                       "txt dataset (data.yaml)")


def seeded_split(items: Sequence[str], seed: int, val_fraction: float) -> Tuple[List[str], List[str]]:
    """(train, val) of `items` (sorted first): a permutation seeded with `seed`, `val_fraction` to val (>= 1)."""
    items = sorted(items)
    if len(items) < 2:
        raise DatasetError(f"a seeded train/val split needs at least 2 images, got {len(items)}")
    order = np.random.default_rng(seed).permutation(len(items))
    n_val = min(len(items) - 1, max(1, round(val_fraction * len(items))))
    val = {int(i) for i in order[:n_val]}
    return [x for k, x in enumerate(items) if k not in val], [x for k, x in enumerate(items) if k in val]


@DATASETS.register("folder")
def folder(root, split: str = "train", classes: Optional[Sequence[str]] = None, seed: int = 0,
           val_fraction: float = 0.2, cache: bool = True):
    """A Pascal VOC or YOLO txt folder's training or validation split: trainval (else train) and test (else
    val), or a seeded 80/20 split when it lacks either (see the module docstring). split: `train` or `val`."""
    if split not in ("train", "val"):
        raise DatasetError(f"folder dataset: split must be train or val, got {split!r}")
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"data.root not found: {root}")
    voc = folder_format(root) == "voc"
    if voc:
        available = [s for s in TRAIN_SPLITS + VAL_SPLITS if (root / "ImageSets" / "Main" / f"{s}.txt").is_file()]
    else:
        available = split_names(read_data_yaml(root)[1])
    train, val = _pick(available, "train"), _pick(available, "val")
    if train and val:
        named = train if split == "train" else val
        dataset = (VOCDetection(root, splits=[named], classes=classes, cache=cache) if voc else
                   YOLOTxtDetection(root, split=named, classes=classes, cache=cache))
        dataset.split_source = named
        return dataset
    if voc:     # the train split's images, else every annotated image
        items = (_lines(root / "ImageSets" / "Main" / f"{train}.txt") if train else
                 [p.stem for p in (root / "Annotations").glob("*.xml")
                  if (root / "JPEGImages" / f"{p.stem}.jpg").is_file()])
    elif train:
        items = [str(p) for p in split_images(root, train)]
    else:
        raise DatasetError(f"data.root {root}: data.yaml names no train (or trainval) entry")
    part = seeded_split(items, seed, val_fraction)[0 if split == "train" else 1]
    dataset = (VOCDetection(root, classes=classes, cache=cache, ids=part) if voc else
               YOLOTxtDetection(root, classes=classes, cache=cache, images=part))
    dataset.split_source = f"seeded {round(100 * (1 - val_fraction))}/{round(100 * val_fraction)} split"
    return dataset


def _pick(available: Sequence[str], split: str) -> Optional[str]:
    """The split file or entry a folder offers for `split`: trainval, else train; test, else val."""
    wanted = TRAIN_SPLITS if split == "train" else VAL_SPLITS
    return next((s for s in wanted if s in available), None)


def _lines(path: Path) -> List[str]:
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
