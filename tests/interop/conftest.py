"""Fixtures of the interop tests: the release Darknet cfgs (darknet_cfgs/ beside this file), weight files written
by hand, an independent channel walk over a cfg, and Darknet's released COCO yolov3-tiny when it is shared beside
the checkout (`darknet_release`)."""
from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

DARKNET_CFGS = Path(__file__).resolve().parent / "darknet_cfgs"


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


def _random_weights(text: str, rng: np.random.Generator):
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


def _write_darknet_weights(path, arrays, major=0, minor=2, revision=0, seen=12345, drop_floats=0):
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


def _small_cfg(name: str, size: int, folder: Path) -> Path:
    """A copy of the release cfg `name` with [net] width/height set to `size`."""
    text = (DARKNET_CFGS / f"{name}.cfg").read_text()
    lines = []
    for line in text.splitlines():
        key = line.split("=")[0].strip()
        lines.append(f"{key}={size}" if key in ("width", "height") else line)
    path = folder / f"{name}.cfg"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def darknet_cfgs() -> Path:
    """The folder of the release cfgs: yolov3.cfg, yolov3-tiny.cfg, yolov3-spp.cfg."""
    return DARKNET_CFGS


@pytest.fixture(scope="session")
def random_weights():
    """random_weights(cfg text, rng) -> float32 arrays in weights-file order, activations kept O(1)."""
    return _random_weights


@pytest.fixture(scope="session")
def write_darknet_weights():
    """write_darknet_weights(path, arrays, major=0, minor=2, revision=0, seen=12345, drop_floats=0) -> floats
    written: a `.weights` file, either header version."""
    return _write_darknet_weights


@pytest.fixture(scope="session")
def small_cfg():
    """small_cfg(name, size, folder) -> a copy of the release cfg `name` at width = height = size."""
    return _small_cfg


# Darknet's release as ../shared/weights/darknet holds it (README.md and SHA256SUMS there)
RELEASE_FILES = ("yolov3-tiny.cfg", "yolov3-tiny.weights", "coco.names", "samples/dog.jpg", "samples/horses.jpg",
                 "samples/person.jpg")
RELEASE_WEIGHTS_SHA256 = "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c"   # md5 3bcd6b39...


@pytest.fixture(scope="session")
def darknet_release(repo) -> Path:
    """The folder of Darknet's released COCO yolov3-tiny beside the checkout (../shared/weights/darknet:
    yolov3-tiny.cfg, yolov3-tiny.weights, coco.names, samples/*.jpg); skip when absent: the package never needs
    it. A weights file other than the release's fails (the checks compare against what Darknet publishes).
    Its tests are `dataset` (tests/conftest.py's NEEDS_SHARED)."""
    root = repo.parent / "shared" / "weights" / "darknet"
    missing = [name for name in RELEASE_FILES if not (root / name).is_file()]
    if missing:
        pytest.skip(f"Darknet's yolov3-tiny release not found at {root} (missing {', '.join(missing)})")
    digest = hashlib.sha256((root / "yolov3-tiny.weights").read_bytes()).hexdigest()
    if digest != RELEASE_WEIGHTS_SHA256:
        pytest.fail(f"{root / 'yolov3-tiny.weights'}: sha256 {digest}, not the release's {RELEASE_WEIGHTS_SHA256}")
    return root
