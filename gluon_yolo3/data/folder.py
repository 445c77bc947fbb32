"""A dataset folder as a user brings it: Pascal VOC or YOLO txt, with or without split files.

    train = DATASETS.build({"type": "folder", "root": "~/photos", "split": "train"})
    val = DATASETS.build({"type": "folder", "root": "~/photos", "split": "val"})

`data.root: PATH` in a recipe means exactly these two. The format is found from the folder (VOC:
`Annotations/` and `JPEGImages/`; YOLO txt: a `data.yaml`). Training takes `trainval` (else `train`),
validation `test` (else `val`); a folder without them gets a seeded 80/20 split of its images (`seed`,
`val_fraction`), the same every time, which the trainer writes into the run folder (`splits/train.txt`,
`splits/val.txt`: VOC image ids, YOLO image paths relative to the dataset) and names in the run's recipe.yaml
(`data.split_dir: splits`). With `split_dir`, that recorded split is used instead of drawing one, so that
everything reading a run (eval, data check, calibration, resume) sees the images it was trained and validated
on; images added to the folder since are in neither split and images gone are left out, both said in the
dataset's `warnings`. Each dataset says where it came from in `split_source` (`trainval`, `test`, `seeded 80/20
split`, `the split recorded in ...`) and, for a drawn or recorded split, lists it in `split_items`.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..registry import DATASETS
from .base import DatasetError
from .images import IMAGE_EXTENSIONS
from .voc import VOCDetection, image_index, read_split
from .yolo_txt import YOLOTxtDetection, read_data_yaml, rel_path, split_images, split_names

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
           val_fraction: float = 0.2, cache: bool = True, split_dir: Optional[str] = None):
    """A Pascal VOC or YOLO txt folder's training or validation split: trainval (else train) and test (else
    val), or a seeded 80/20 split when it lacks either, or the split recorded in `split_dir` (see the module
    docstring). split: `train` or `val`."""
    if split not in ("train", "val"):
        raise DatasetError(f"folder dataset: split must be train or val, got {split!r}")
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"data.root not found: {root}")
    voc = folder_format(root) == "voc"
    if voc:
        available = [s for s in TRAIN_SPLITS + VAL_SPLITS if (root / "ImageSets" / "Main" / f"{s}.txt").is_file()]
        base = root
    else:
        _, content, base = read_data_yaml(root)
        available = split_names(content)
    train, val = _pick(available, "train"), _pick(available, "val")
    if train and val and split_dir is None:
        named = train if split == "train" else val
        dataset = (VOCDetection(root, splits=[named], classes=classes, cache=cache) if voc else
                   YOLOTxtDetection(root, split=named, classes=classes, cache=cache))
        dataset.split_source = named
        return dataset
    notes, problems = [], []
    if voc:     # the train split's images, else every annotation
        items = read_split(root, train, problems) if train else _voc_items(root, notes)
    elif train:
        items = [rel_path(p, base) for p in split_images(root, train)]
    else:
        raise DatasetError(f"data.root {root}: data.yaml names no train (or trainval) entry")
    if split_dir is not None:
        part, source = recorded_split(Path(split_dir), split, items, root, notes)
    else:
        part = seeded_split(items, seed, val_fraction)[0 if split == "train" else 1]
        source = f"seeded {round(100 * (1 - val_fraction))}/{round(100 * val_fraction)} split"
    dataset = (VOCDetection(root, classes=classes, cache=cache, ids=part) if voc else
               YOLOTxtDetection(root, classes=classes, cache=cache, images=[str(base / p) for p in part]))
    dataset.split_source, dataset.split_items = source, list(part)
    dataset.warnings.extend(notes)
    dataset.problems[:0] = problems
    return dataset


def _voc_items(root: Path, notes: List[str]) -> List[str]:
    """Every annotated image id of a VOC folder; images without an annotation noted (they are not used)."""
    ids = sorted(p.stem for p in (root / "Annotations").glob("*.xml"))
    annotated = set(ids)
    lone = [n for stem, names in image_index(root / "JPEGImages").items() if stem not in annotated for n in names]
    if lone:
        notes.append(f"{root}: {len(lone)} image(s) in JPEGImages have no annotation in Annotations/ and are not "
                     f"used: {', '.join(lone[:5])}{' ...' if len(lone) > 5 else ''}")
    return ids


def recorded_split(split_dir: Path, split: str, items: Sequence[str], root: Path, notes: List[str]
                   ) -> Tuple[List[str], str]:
    """`(items of split, source)` from a recorded split (`split_dir/<split>.txt`, one item per line) matched against
    the folder's `items` now (a line may be a YOLO file stem, as older runs wrote); what changed since is noted."""
    files = {s: split_dir / f"{s}.txt" for s in ("train", "val")}
    if not files[split].is_file():
        raise DatasetError(f"data.split_dir: {files[split]} not found (a run's splits/ folder holds train.txt and "
                           "val.txt)")
    current = set(items)
    stems: dict = {}
    for item in items:
        stems.setdefault(Path(item).stem, []).append(item)

    def find(line: str) -> Optional[str]:
        if line in current:
            return line
        if "/" in line or Path(line).suffix.lower() in IMAGE_EXTENSIONS:
            return None
        same = stems.get(line, [])              # a YOLO file stem, as older runs recorded
        return same[0] if len(same) == 1 else None

    recorded = {s: [ln.strip() for ln in f.read_text().splitlines() if ln.strip()] for s, f in files.items()
                if f.is_file()}
    found = {s: [find(ln) for ln in lines] for s, lines in recorded.items()}
    part = [x for x in found[split] if x is not None]
    gone = [ln for ln, x in zip(recorded[split], found[split]) if x is None]
    added = sorted(current - {x for xs in found.values() for x in xs if x is not None})
    if gone or added:
        notes.append(f"{root} changed since the split in {split_dir} was recorded: {len(added)} image(s) added, in "
                     f"neither split{_examples(added)}; {len(gone)} of the {len(recorded[split])} recorded {split} "
                     f"image(s) gone{_examples(gone)}")
    if not part:
        raise DatasetError(f"{files[split]}: none of its images is left in {root}")
    return part, f"the split recorded in {files[split]}"


def _examples(items: Sequence[str], count: int = 3) -> str:
    return f" ({', '.join(items[:count])}{', ...' if len(items) > count else ''})" if items else ""


def _pick(available: Sequence[str], split: str) -> Optional[str]:
    """The split file or entry a folder offers for `split`: trainval, else train; test, else val."""
    wanted = TRAIN_SPLITS if split == "train" else VAL_SPLITS
    return next((s for s in wanted if s in available), None)
