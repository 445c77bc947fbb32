"""YOLO txt folders, the Ultralytics layout:

    data.yaml            path: .  (optional; relative to this file)   train: images/train   val: images/val
                         names: [RBC, WBC, Platelets]   (or {0: RBC, 1: WBC, ...})
    images/train/a.jpg   labels/train/a.txt   one line per box: `class cx cy w h`, normalised to 0..1

A split entry is an image folder (searched recursively; image extensions in any case), a `.txt` file listing
image paths, or a list of these, relative to `path` (a `../` entry that is not there is also looked for without
it, as Ultralytics does for Roboflow's exports). An image's label file is its path with the last `images` folder
replaced by `labels` and the extension by `.txt` (Ultralytics' rule), else the `.txt` beside the image (labels kept
with the images); an image without a label file has no objects, and a split none of whose images has one is
reported. Lines with more than 5 numbers are polygons (`class x1 y1 x2 y2 ...`, as Ultralytics segments) and
become their bounding box. `names` is a list or an id -> name map; without it, `nc` classes named class_0, ...;
`nc` must agree with it. Image sizes are read from file headers (EXIF orientation applied, as OpenCV reads the
pixels).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..recipe import parse_yaml, read_text_file
from ..registry import DATASETS
from ..schema import RecipeError, shown
from .base import DatasetError, FileDetectionDataset, sanitize_boxes, similar_names_warning
from .cache import cached_parse
from .images import IMAGE_EXTENSIONS, ImageFileError, image_header, read_image

ROUND_OFF = 1e-5      # normalised coordinates this close outside 0..1 are taken as on the edge


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last `images` folder of the path becomes `labels`, the suffix `.txt`."""
    parts = list(image.parts)
    for k in range(len(parts) - 2, -1, -1):
        if parts[k] == "images":
            parts[k] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def label_candidates(image: Path) -> List[Path]:
    """Where an image's label file may be, in order: Ultralytics' `label_path`, then beside the image."""
    return list(dict.fromkeys([label_path(image), image.with_suffix(".txt")]))


def image_hw(path: Path) -> Tuple[int, int]:
    """`(height, width)` from the file header, after EXIF rotation (decoded when only OpenCV knows the format);
    ImageFileError when unreadable or too large."""
    hw, _ = image_header(path)
    return tuple(hw) if hw else read_image(path).shape[:2]


def read_data_yaml(root) -> Tuple[Path, dict, Path]:
    """`(data.yaml path, its content, dataset folder)` for a data.yaml file or a folder holding one."""
    root = Path(root).expanduser()
    if root.is_dir():
        candidates = [root / n for n in ("data.yaml", "data.yml", "dataset.yaml")]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise DatasetError(f"no data.yaml in YOLO dataset folder {root}")
        root = found[0]
    if not root.is_file():
        raise DatasetError(f"YOLO data.yaml not found: {root}")
    try:
        content = parse_yaml(read_text_file(root, "data.yaml"))
    except RecipeError as err:      # too large, not text
        raise DatasetError(str(err)) from None
    except Exception as err:  # noqa: BLE001 - yaml errors: duplicate keys, alias bombs, ...
        raise DatasetError(f"{root}: not valid YAML ({err})") from None
    if not isinstance(content, dict):
        raise DatasetError(f"{root}: expected a mapping with 'names' and split entries")
    base = Path(content.get("path") or ".")
    base = base if base.is_absolute() else (root.parent / base)
    return root, content, base.resolve()


def split_names(content: dict) -> List[str]:
    """The split entries of a data.yaml's content (train, val, test, ...)."""
    return [k for k in content if k not in ("names", "nc", "path") and content[k] not in (None, "")]


def split_images(root, split: str) -> List[Path]:
    """The image files of split entry `split` of the YOLO dataset at `root` (a data.yaml or its folder)."""
    yaml_path, content, base = read_data_yaml(root)
    return _split_images(content[split], base, yaml_path, split)


def _count(value, where: Path) -> int:
    """`nc` as an integer (3, "3", 3.0); DatasetError naming the file for anything else."""
    try:
        if isinstance(value, bool) or float(value) != int(float(value)) or int(float(value)) < 1:
            raise ValueError
        return int(float(value))
    except (TypeError, ValueError, OverflowError):
        raise DatasetError(f"{where}: nc must be the number of classes, a whole number >= 1, got {shown(value)}") \
            from None


def _names(content: dict, where: Path) -> List[str]:
    names = content.get("names")
    if names is None and content.get("nc") is not None:      # Ultralytics names them itself
        names = [f"class_{k}" for k in range(_count(content["nc"], where))]
    if isinstance(names, dict):
        try:
            ids = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise DatasetError(f"{where}: 'names' keys must be class ids 0..C-1") from None
        if ids != list(range(len(ids))):
            raise DatasetError(f"{where}: 'names' keys must be 0..{len(ids) - 1} without gaps, got {ids}")
        names = [names[k] if k in names else names[str(k)] for k in ids]
    if not isinstance(names, list) or not names:
        raise DatasetError(f"{where}: 'names' must be a non-empty list of class names (or an id -> name map)")
    if content.get("nc") is not None and _count(content["nc"], where) != len(names):
        raise DatasetError(f"{where}: nc is {content['nc']} but 'names' has {len(names)} entries")
    if any(n is None or isinstance(n, (dict, list)) for n in names):
        raise DatasetError(f"{where}: 'names' must be class names, got {shown(names)}")
    names = [str(n) for n in names]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DatasetError(f"{where}: 'names' lists {', '.join(map(repr, twice))} more than once: the labels' class "
                           "ids would map to one class")
    return names


def _split_images(entry, base: Path, where: Path, split: str) -> List[Path]:
    entries = entry if isinstance(entry, list) else [entry]
    images: List[Path] = []
    for item in entries:
        path = Path(str(item)).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.exists() and str(item).startswith("../") and (base / str(item)[3:]).exists():
            path = base / str(item)[3:]       # Roboflow's `train: ../train/images` beside its data.yaml
        if path.is_dir():
            images += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        elif path.is_file() and path.suffix == ".txt":
            for line in path.read_text(encoding="utf-8-sig").splitlines():
                line = line.strip()
                if line:
                    p = Path(line)
                    images.append(p if p.is_absolute() else (path.parent / p))
        else:
            raise DatasetError(f"{where}: split '{split}' entry {item!r} is neither an image folder nor a "
                               f".txt list (looked at {path})")
    return list(dict.fromkeys(images))


def _parse_label_file(path: Path, where: str, problems: List[str]) -> np.ndarray:
    """Rows `(N, 5)`: class id, cx, cy, w, h (normalised) of one label file; bad lines reported."""
    rows = []
    try:
        text = path.read_text(encoding="utf-8-sig")     # a BOM (Windows editors) is not part of the first line
    except (OSError, UnicodeDecodeError) as err:
        problems.append(f"{where}: unreadable label file ({err}); no boxes used")
        return np.zeros((0, 5), np.float32)
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            values = [float(v) for v in fields]
        except ValueError:
            problems.append(f"{where}:{n}: not numbers: {line.strip()!r}; skipped")
            continue
        if len(values) == 5:
            rows.append(values)
        elif len(values) >= 7 and len(values) % 2 == 1:   # polygon: class x1 y1 x2 y2 ...
            xy = np.array(values[1:], np.float64).reshape(-1, 2)
            (x1, y1), (x2, y2) = xy.min(axis=0), xy.max(axis=0)
            rows.append([values[0], (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])
        else:
            problems.append(f"{where}:{n}: expected 'class cx cy w h', got {len(values)} numbers; skipped")
    return np.array(rows, np.float32).reshape(-1, 5)


def _parse(images: Sequence[Path], base: Path):
    """(records [(image path, h, w, rows (N, 5), label file or "")], problems) for every image of a split."""
    records, problems = [], []
    for image in images:
        rel = rel_path(image, base)
        try:
            h, w = image_hw(image)
        except ImageFileError as err:
            problems.append(f"{rel}: unreadable image: {err}; image skipped")
            continue
        lab = next((p for p in label_candidates(image) if p.is_file()), None)
        rows = (_parse_label_file(lab, rel_path(lab, base), problems) if lab is not None
                else np.zeros((0, 5), np.float32))
        records.append((str(image), h, w, rows, "" if lab is None else str(lab)))
    return records, problems


def _used_names(records, names: Sequence[str]) -> set:
    """data.yaml `names` of the valid class ids in the records' label rows."""
    cls = np.concatenate([np.zeros(0, np.float32)] + [r[3][:, 0] for r in records])
    valid = (cls == np.round(cls)) & (cls >= 0) & (cls < len(names))     # NaN is not valid
    return {names[int(c)] for c in np.unique(cls[valid])}


def rel_path(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


@DATASETS.register("yolo")
class YOLOTxtDetection(FileDetectionDataset):
    """Ultralytics-style YOLO txt dataset.

    root: the data.yaml file, or the folder holding it; split: which split entry of data.yaml (train, val,
    test); images: image files to use instead of a split entry (e.g. a seeded split of the train images);
    classes: names in label order (default: data.yaml's names; others are matched by name, unknown
    ones reported and skipped); cache: reuse the parsed labels (True, a folder, or False); check_images: skip
    (and report) unreadable, too large and truncated image files. `found_classes`: the sorted data.yaml names
    of the class ids the label files use, whether in `classes` or not.
    """

    def __init__(self, root, split: str = "train", classes: Optional[Sequence[str]] = None,
                 cache: bool | str = True, check_images: bool = True, images: Optional[Sequence[str]] = None):
        super().__init__()
        self.yaml_path, content, self.base = read_data_yaml(root)
        names = _names(content, self.yaml_path)
        if images is not None:                  # these image files instead of a split entry
            images = [Path(p) for p in images]
        elif split not in content or content[split] in (None, ""):
            raise DatasetError(f"{self.yaml_path}: no '{split}' entry (has: "
                               f"{', '.join(split_names(content))})")
        else:
            images = _split_images(content[split], self.base, self.yaml_path, split)
        if not images:
            raise DatasetError(f"{self.yaml_path}: split '{split}' holds no images")
        files = [p for image in images for p in (image, *label_candidates(image))]
        (records, problems), self.from_cache = cached_parse(
            "yolo", files, lambda: _parse(images, self.base), extra=(tuple(names), str(self.base)), cache=cache)
        self.problems.extend(problems)
        if check_images:
            paths = [Path(r[0]) for r in records]
            sizes = self.check_image_files(paths, [rel_path(p, self.base) for p in paths], cache)
            records = [r for r, hw in zip(records, sizes) if hw is not None]
        if records and not any(r[4] for r in records):
            example = Path(records[0][0])
            self.problems.append(
                f"{self.yaml_path}: split '{split}': none of its {len(records)} images has a label file (looked at "
                + " and ".join(rel_path(p, self.base) for p in label_candidates(example)) + ", ...): they train as "
                "images without objects")
        self.warnings.extend(similar_names_warning({n: [self.yaml_path.name] for n in names}))
        self.file_classes = tuple(names)
        self.found_classes = _used_names(records, names)
        self.classes = tuple(classes) if classes is not None else tuple(names)
        index = {n: k for k, n in enumerate(self.classes)}
        mapping = np.array([index.get(n, -1) for n in names], np.int64)
        self._paths, self._sizes, self._labels = [], [], []
        for path, h, w, rows, lab in records:
            self._paths.append(Path(path))
            self._sizes.append((h, w))
            self._labels.append(self._to_label(lab or str(label_path(Path(path))), h, w, rows, mapping))
        if not self._paths:
            raise DatasetError(f"no usable images in {self.yaml_path} split '{split}'")

    def _to_label(self, label_file, h, w, rows, mapping) -> np.ndarray:
        where = rel_path(Path(label_file), self.base)
        cls = rows[:, 0]
        valid_id = (cls == np.round(cls)) & (cls >= 0) & (cls < len(mapping))
        for c in sorted(set(cls[~valid_id].tolist())):
            self.problems.append(f"{where}: unknown class id {c:g} (data.yaml names {len(mapping)} classes), "
                                 f"{int((cls == c).sum())} box(es) skipped")
        target = np.full(len(rows), -1, np.int64)
        target[valid_id] = mapping[cls[valid_id].astype(np.int64)]
        for c in sorted(set(cls[valid_id & (target < 0)].astype(int).tolist())):
            self.problems.append(f"{where}: class '{self.file_classes[c]}' not in classes, "
                                 f"{int((cls == c).sum())} box(es) skipped")
        keep = target >= 0
        r = rows[keep]
        label = np.zeros((len(r), 6), np.float32)
        label[:, 0] = (r[:, 1] - r[:, 3] / 2) * w
        label[:, 1] = (r[:, 2] - r[:, 4] / 2) * h
        label[:, 2] = (r[:, 1] + r[:, 3] / 2) * w
        label[:, 3] = (r[:, 2] + r[:, 4] / 2) * h
        label[:, 4] = target[keep]
        # normalised coordinates written with a few decimals overshoot an edge by round-off: not a problem
        for cols, side in (([0, 2], w), ([1, 3], h)):
            v = label[:, cols]
            v[(v < 0) & (v > -ROUND_OFF * side)] = 0
            v[(v > side) & (v < side * (1 + ROUND_OFF))] = side
            label[:, cols] = v
        label, found = sanitize_boxes(label, w, h, where)
        self.problems.extend(found)
        return label

    def __len__(self) -> int:
        return len(self._paths)

    def image_id(self, i: int) -> str:
        return self._paths[self._index(i)].stem

    def image_path(self, i: int) -> Path:
        return self._paths[self._index(i)]

    def __getitem__(self, i: int):
        """Sizes come from image headers: where the pixels disagree (odd EXIF), boxes stay relative."""
        i = self._index(i)
        image = self.read_image(i)
        label = self._labels[i].copy()
        h, w = self._sizes[i]
        if image.shape[:2] != (h, w):
            label[:, [0, 2]] *= image.shape[1] / w
            label[:, [1, 3]] *= image.shape[0] / h
        return image, label
