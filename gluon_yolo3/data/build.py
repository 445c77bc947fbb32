"""A recipe's datasets, built with one class list for the whole run.

    sets = build_datasets(recipe)                       # {"train": ..., "val": ...}
    val = build_datasets(recipe, ("val",), classes)["val"]

The run's class list is `data.classes`, else the training set's own (sorted VOC names, a YOLO data.yaml's
`names`, COCO's categories); every split is built with it, so a validation split that holds another set
of classes cannot shift the class ids. A box of a class outside the list is reported in the dataset's
`problems` (with its file) and skipped. `data.root` (a dataset folder, `folder.py`) stands for both splits, and
`data.split_dir` (a run's recorded `splits/`) fixes which of its images each split holds.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping

from ..registry import DATASETS
from ..schema import shown

SPLITS = ("train", "val")


def build_datasets(recipe: Mapping[str, Any], splits=SPLITS, classes=None) -> Dict[str, Any]:
    """Build the recipe's datasets, all with ONE class list: `classes`, else `data.classes`, else the training
    set's own (so that a validation split holding another set of classes cannot shift the class ids).

    A box whose class is outside the list is reported in the dataset's `problems` and skipped."""
    data = recipe["data"]
    check_splits(splits)
    out: Dict[str, Any] = {}
    if classes is None and data.get("classes"):
        classes = list(data["classes"])
    if classes is None and any(s != "train" for s in splits):
        out["train"] = _build_split(data, "train", None)
        classes = list(out["train"].classes)
    for split in splits:
        if split not in out:
            out[split] = _build_split(data, split, classes)
    run_classes = list(classes if classes is not None else out[splits[0]].classes)
    twice = sorted({c for c in run_classes if run_classes.count(c) > 1})
    if twice:
        raise ValueError(f"the run's class list {shown(run_classes)} ("
                         + ("data.classes" if data.get("classes") else "from the training data")
                         + f") names {', '.join(map(repr, twice))} more than once: its class ids would be ambiguous")
    return {split: out[split] for split in splits}


def check_splits(splits):
    """ValueError naming the first of `splits` that a recipe's data section does not have."""
    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise ValueError(f"unknown split '{bad[0]}': a recipe's data section has the splits "
                         f"{', '.join(SPLITS)} (data.train, data.val)")


def split_config(data: Mapping[str, Any], split: str) -> Dict[str, Any]:
    """The dataset config of one split of a recipe's data section: `data.<split>`, or the folder `data.root`'s
    (with the split recorded in `data.split_dir`, where there is one)."""
    check_splits((split,))
    if not data.get("root"):
        return dict(data[split])
    cfg = {"type": "folder", "root": data["root"], "split": split}
    if data.get("split_dir"):
        cfg["split_dir"] = data["split_dir"]
    return cfg


def _build_split(data: Mapping[str, Any], split: str, classes) -> Any:
    if data.get("split_dir") and not data.get("root"):
        raise ValueError("data.split_dir fixes the split of a dataset folder: it needs data.root")
    cfg = split_config(data, split)
    if classes is not None:
        cfg["classes"] = list(classes)
    dataset = DATASETS.build(cfg)
    if len(dataset) == 0:
        raise ValueError(f"data.{split}: dataset '{cfg['type']}' holds no images ({cfg})")
    return dataset
