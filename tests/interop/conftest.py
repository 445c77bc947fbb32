"""Fixtures of the interop tests: the release Darknet cfgs (darknet_cfgs/ beside this file), weight files written
by hand, an independent channel walk over a cfg, OpenCV's Darknet reader as the reference (raw outputs, yolo
layers, detections), and Darknet's released COCO yolov3-tiny and yolov4-tiny when they are shared beside the
checkout (`darknet_release`)."""
from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import cv2
import mxnet as mx
import numpy as np
import pytest

from gluon_yolo3.interop.darknet.jobs import load_darknet
from gluon_yolo3.interop.darknet.layout import darknet_layout

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
        elif kind == "route":       # groups=g: each source passes on one g-th of its channels
            refs = [int(v) for v in opt["layers"].split(",")]
            c = sum(channels[(i + r if r < 0 else r) + 1] for r in refs) // int(opt.get("groups", 1))
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
    """The folder of the release cfgs: yolov3.cfg, yolov3-tiny.cfg, yolov3-spp.cfg, yolov4-tiny.cfg."""
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


# ------------------------------------------------------------------------ OpenCV's reader, the reference

OPENCV_THRESH = 0.2   # OpenCV's region layer zeroes class probabilities at or below this


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def opencv_like(raw, anchors, size, scale_x_y=1.0):
    """Our raw outputs `(1, H, W, A, 5 + C)` transformed as OpenCV's region layer transforms its input:
    rows (y, x, anchor); x, y = (sigmoid * s - (s - 1) / 2 + cell) / grid, s the [yolo] layer's scale_x_y (1
    without it); w, h = exp * anchor / input size; objectness sigmoid; class columns objectness *
    sigmoid(class), unthresholded."""
    _, h, w, a, d = raw.shape
    out = np.empty_like(raw, dtype=np.float64)
    shift = (scale_x_y - 1) / 2
    out[..., 0] = (sigmoid(raw[..., 0]) * scale_x_y - shift + np.arange(w).reshape(1, 1, w, 1)) / w
    out[..., 1] = (sigmoid(raw[..., 1]) * scale_x_y - shift + np.arange(h).reshape(1, h, 1, 1)) / h
    anchors = np.asarray(anchors, dtype=np.float64)
    out[..., 2] = np.exp(raw[..., 2]) * anchors[:, 0] / size
    out[..., 3] = np.exp(raw[..., 3]) * anchors[:, 1] / size
    out[..., 4] = sigmoid(raw[..., 4])
    out[..., 5:] = out[..., 4:5] * sigmoid(raw[..., 5:])
    return out.reshape(-1, d)


def assert_close(ours, theirs, what):
    """Within 1e-4 relative (to the tensor's largest magnitude where an element is near 0)."""
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max(), err_msg=what)


def _compare_with_opencv(cfg, weights, image, size, min_scores=11, mean_rtol=None):
    """Our raw outputs and OpenCV's, layer by layer, within 1e-4 (`assert_close`) and, given `mean_rtol`, with
    a mean absolute difference under `mean_rtol` times their mean magnitude; OpenCV's yolo layers' boxes,
    objectness and class scores as `opencv_like` computes them from ours, where at least `min_scores` class
    scores of each yolo layer are above OpenCV's threshold."""
    cv_net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    blob = cv2.dnn.blobFromImage(image, 1 / 255.0, (size, size), swapRB=True, crop=False)
    partial, net, _ = load_darknet(cfg, weights)
    raw = [r.asnumpy() for r in net.head(*net.neck(*net.backbone(mx.nd.array(blob))))]
    layers = darknet_layout(net)
    yolo_index = [i for i, s in enumerate(layers.sections) if s.kind == "yolo"]   # coarsest first
    anchors = partial["model"]["anchors"]
    cfg_layers = cfg_sections(Path(cfg).read_text())[1:]
    for k, index in enumerate(yolo_index):
        s = len(raw) - 1 - k
        # the raw output: the linear conv feeding the yolo layer, (1, A * (5 + C), H, W)
        cv_net.setInput(blob)
        cv_raw = cv_net.forward(f"conv_{index - 1}")
        ours = raw[s].reshape(raw[s].shape[:3] + (-1,)).transpose(0, 3, 1, 2)
        assert_close(ours, cv_raw, f"raw output of layer {index - 1}")
        if mean_rtol is not None:
            mean = np.abs(ours - cv_raw).mean() / np.abs(cv_raw).mean()
            assert mean < mean_rtol, f"raw output of layer {index - 1}: mean relative difference {mean:.2e}"
        # the yolo layer's output, post-activation
        cv_net.setInput(blob)
        cv_yolo = cv_net.forward(f"yolo_{index}")
        mine = opencv_like(raw[s], anchors[s], size, float(cfg_layers[index][1].get("scale_x_y", 1)))
        assert cv_yolo.shape == mine.shape
        assert_close(mine[:, :5], cv_yolo[:, :5], f"yolo layer {index}: boxes and objectness")
        probs, cv_probs = mine[:, 5:], cv_yolo[:, 5:]
        decided = np.abs(probs - OPENCV_THRESH) > 1e-5     # away from OpenCV's threshold
        np.testing.assert_array_equal((cv_probs > 0)[decided], (probs > OPENCV_THRESH)[decided])
        kept = decided & (probs > OPENCV_THRESH)
        assert kept.sum() >= min_scores, "too few class scores above OpenCV's threshold to compare"
        assert_close(probs[kept], cv_probs[kept], f"yolo layer {index}: class scores")


def _opencv_detections(cfg, weights, rgb, score_thresh=0.3, iou_thresh=0.45):
    """Detections the usual OpenCV way (blobFromImage, the yolo layers' rows, NMSBoxes per class) on a
    square RGB image the network's size: list of (class, score, box x1y1x2y2 pixels)."""
    size = rgb.shape[0]
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.setInput(cv2.dnn.blobFromImage(rgb, 1 / 255.0, (size, size), swapRB=False, crop=False))
    rows = np.concatenate(net.forward(net.getUnconnectedOutLayersNames()))
    out = []
    for c in range(rows.shape[1] - 5):
        scores = rows[:, 5 + c]
        keep = np.flatnonzero(scores > score_thresh)
        boxes = [[(rows[i, 0] - rows[i, 2] / 2) * size, (rows[i, 1] - rows[i, 3] / 2) * size,
                  rows[i, 2] * size, rows[i, 3] * size] for i in keep]
        for j in np.asarray(cv2.dnn.NMSBoxes(boxes, scores[keep].tolist(), score_thresh, iou_thresh)).ravel():
            x, y, bw, bh = boxes[j]
            out.append((c, float(scores[keep[j]]), np.array([x, y, x + bw, y + bh])))
    return out


@pytest.fixture(scope="session")
def compare_with_opencv():
    """compare_with_opencv(cfg, weights, image, size, min_scores=11, mean_rtol=None): our raw outputs and yolo
    layers against OpenCV's reader, layer by layer (assertions)."""
    return _compare_with_opencv


@pytest.fixture(scope="session")
def opencv_detections():
    """opencv_detections(cfg, weights, rgb, score_thresh=0.3, iou_thresh=0.45) -> [(class, score, box)] on a
    square RGB image the network's size."""
    return _opencv_detections


# Darknet's releases as ../shared/weights/darknet holds them (README.md and SHA256SUMS there)
RELEASE_FILES = ("yolov3-tiny.cfg", "yolov3-tiny.weights", "yolov4-tiny.cfg", "yolov4-tiny.weights", "coco.names",
                 "samples/dog.jpg", "samples/horses.jpg", "samples/person.jpg")
RELEASE_WEIGHTS_SHA256 = {
    "yolov3-tiny.weights": "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c",   # md5 3bcd6b39...
    "yolov4-tiny.weights": "cf9fbfd0f6d4869b35762f56100f50ed05268084078805f0e7989efe5bb8ca87",   # md5 8911bf80...
}


@pytest.fixture(scope="session")
def darknet_release(repo) -> Path:
    """The folder of Darknet's released COCO yolov3-tiny and yolov4-tiny beside the checkout
    (../shared/weights/darknet: their cfgs and weights, coco.names, samples/*.jpg); skip when absent: the package
    never needs it. A weights file other than the release's fails (the checks compare against what Darknet
    publishes). Its tests are `dataset` (tests/conftest.py's NEEDS_SHARED)."""
    root = repo.parent / "shared" / "weights" / "darknet"
    missing = [name for name in RELEASE_FILES if not (root / name).is_file()]
    if missing:
        pytest.skip(f"Darknet's tiny releases not found at {root} (missing {', '.join(missing)})")
    for name, expected in RELEASE_WEIGHTS_SHA256.items():
        digest = hashlib.sha256((root / name).read_bytes()).hexdigest()
        if digest != expected:
            pytest.fail(f"{root / name}: sha256 {digest}, not the release's {expected}")
    return root
