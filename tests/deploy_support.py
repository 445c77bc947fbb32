"""Shared by the deployment tests: one small demo model trained once per test session (~40 s on 2 cores),
Darknet weight files written by hand, and an independent channel walk over Darknet cfgs."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DARKNET_CFGS = REPO / "tests/data/darknet"
DEMO_RECIPE = REPO / "recipes/demo_tiny.yaml"
# the demo at 64 px on larger, uncluttered shapes: reaches ~0.3 VOC07 mAP in 6 epochs of 1000 images
DEMO_SETS = ["model.input_size=64", "data.train.image_size=64", "data.val.image_size=64",
             "data.train.num_images=1000", "data.val.num_images=64", "train.epochs=6", "train.val_every=0",
             "data.train.min_size=0.25", "data.val.min_size=0.25", "data.train.clutter=false",
             "data.val.clutter=false", "data.num_workers=0", "eval.batch_size=16"]

_TRAINED = {}


def trained_demo(tmp_path_factory):
    """(recipe dict, run folder) of the demo trained once per session."""
    if "run" not in _TRAINED:
        from gluon_yolo3 import api
        recipe = api.load(DEMO_RECIPE, DEMO_SETS)
        run = tmp_path_factory.mktemp("demo_trained") / "run"
        api.train(recipe, workdir=str(run), progress=False, log=lambda *a, **k: None)
        _TRAINED["run"] = (recipe, run)
    return _TRAINED["run"]


# ------------------------------------------------------------------------------------ Darknet files

def cfg_sections(text: str):
    """[(kind, {key: value})] of a cfg, [net] first: a minimal parser, independent of the package's."""
    sections = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            sections.append((line[1:-1], {}))
        else:
            key, value = line.split("=", 1)
            sections[-1][1][key.strip()] = value.strip()
    return sections


def conv_shapes(text: str):
    """[(filters, in_channels, size, batch_normalize)] of every convolution, in cfg order."""
    sections = cfg_sections(text)
    channels = [int(sections[0][1].get("channels", 3))]   # channels[i + 1]: output of layer i
    convs = []
    for i, (kind, opt) in enumerate(sections[1:]):
        c = channels[-1]
        if kind == "convolutional":
            n, k = int(opt["filters"]), int(opt["size"])
            convs.append((n, c, k, int(opt.get("batch_normalize", 0))))
            c = n
        elif kind == "route":
            refs = [int(v) for v in opt["layers"].split(",")]
            c = sum(channels[(i + r if r < 0 else r) + 1] for r in refs)
        channels.append(c)
    return convs


def random_weights(text: str, rng: np.random.Generator):
    """Float arrays in weights-file order for the cfg, scaled so that activations stay O(1) through
    yolov3's 75 layers. BatchNorm variances spread over [1e-3, 1] (gamma follows sqrt(var)), so that
    an epsilon of 1e-5 instead of Darknet's 1e-6 changes outputs by far more than 1e-4."""
    arrays = []
    for n, c, k, bn in conv_shapes(text):
        if bn:
            var = np.exp(rng.uniform(np.log(1e-3), 0.0, n))
            arrays += [rng.normal(0, 0.1, n), np.sqrt(var) * rng.uniform(0.8, 1.2, n),
                       rng.normal(0, 0.05, n) * np.sqrt(var), var]
        else:
            arrays.append(rng.normal(0, 0.5, n))
        arrays.append(rng.normal(0, np.sqrt(1.0 / (c * k * k)), n * c * k * k))
    return [a.astype(np.float32) for a in arrays]


def write_darknet_weights(path, arrays, major=0, minor=2, revision=0, seen=12345, drop_floats=0):
    """A `.weights` file: int32 major, minor, revision; seen as uint64 when major*10+minor >= 2
    (and both < 1000), else int32; then the floats, little-endian."""
    wide = major * 10 + minor >= 2 and major < 1000 and minor < 1000
    body = np.concatenate([np.ravel(a) for a in arrays]).astype("<f4")
    if drop_floats:
        body = body[:-drop_floats]
    with open(path, "wb") as fh:
        fh.write(struct.pack("<iii", major, minor, revision))
        fh.write(struct.pack("<Q" if wide else "<i", seen))
        fh.write(body.tobytes())
    return body.size


def small_cfg(name: str, size: int, folder: Path) -> Path:
    """A copy of the release cfg `name` with [net] width/height set to `size`."""
    text = (DARKNET_CFGS / f"{name}.cfg").read_text()
    lines = []
    for line in text.splitlines():
        key = line.split("=")[0].strip()
        lines.append(f"{key}={size}" if key in ("width", "height") else line)
    path = folder / f"{name}.cfg"
    path.write_text("\n".join(lines) + "\n")
    return path
