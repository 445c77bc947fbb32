"""Fixtures shared by every test folder; a folder's own conftest.py holds what only its tests use.

Tests get helpers as fixtures, never by importing another file of tests/ (no test folder is on sys.path:
pytest runs with --import-mode=importlib), and paths from fixtures (`repo`, `recipes`, `demo_recipe`), never
from the working directory or a test file's own location.

Markers (registered in pyproject.toml): `slow`, `dist` (always `slow` too: added here), `dataset`. Added here from
a test's fixtures: `slow` to every test of the session's trained demo, `dataset` to every test of a fixture that
needs ../shared.
"""
import os
import signal
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

import gluon_yolo3  # noqa: F401  (sets the thread and AMX variables before any test module imports MXNet)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
NEEDS_SHARED = {"bccd_root", "darknet_release"}   # fixtures that skip without ../shared: their tests are `dataset`
SLOW_FIXTURES = {"trained_demo"}      # fixtures that take long to set up: their tests are `slow`


def pytest_collection_modifyitems(items):
    """Marks that follow from a test's fixtures (directly or through other fixtures) or from its other marks."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if (item.get_closest_marker("dist") or SLOW_FIXTURES & fixtures) and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)
        if NEEDS_SHARED & fixtures and not item.get_closest_marker("dataset"):
            item.add_marker(pytest.mark.dataset)


# ------------------------------------------------------------------------------------------------ paths

@pytest.fixture(scope="session")
def repo() -> Path:
    """The checkout: the folder that holds gluon_yolo3/, recipes/, plugins/, zoo/ and tests/."""
    return REPO


@pytest.fixture(scope="session")
def recipes(repo) -> Path:
    return repo / "recipes"


@pytest.fixture(scope="session")
def demo_recipe(recipes) -> str:
    """recipes/demo_tiny.yaml, as a string."""
    return str(recipes / "demo_tiny.yaml")


@pytest.fixture(scope="session")
def bccd_root():
    """The BCCD dataset in Pascal VOC layout, shared next to the checkout; skip when absent."""
    root = SHARED / "datasets/BCCD"
    if not (root / "Annotations").is_dir():
        pytest.skip(f"BCCD dataset not found at {root}")
    return root


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """Run from a folder unrelated to the recipes, so that relative paths cannot resolve from cwd."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


# -------------------------------------------------------------------------------------- the command line

def _invoke(*args):
    """Run `gluon-yolo3 ARGS...` in-process; -> typer's Result (exit_code, output)."""
    from typer.testing import CliRunner

    from gluon_yolo3.cli import app
    return CliRunner().invoke(app, [str(a) for a in args])


def _sets(items):
    """["a=1", "b=2"] -> ["--set", "a=1", "--set", "b=2"]."""
    out = []
    for item in items:
        out += ["--set", item]
    return out


class Comparison(NamedTuple):
    fp32: float
    label: str          # the deployed model's kind: int8, mxnet, onnx, onnx-int8
    other: float
    delta: float
    line: str


def _compared_maps(output: str) -> Comparison:
    """The line `eval --weights W --deployed D` prints, `mAP (voc07): fp32 A   LABEL B   delta C`."""
    line = [ln for ln in output.splitlines() if ln.startswith("mAP (voc07): fp32")][0]
    words = line.split()
    return Comparison(float(words[3]), words[4], float(words[5]), float(words[7]), line)


@pytest.fixture(scope="session")
def invoke():
    """invoke(*args): run `gluon-yolo3 ARGS...` through typer's CliRunner -> Result (exit_code, output)."""
    return _invoke


@pytest.fixture(scope="session")
def sets():
    """sets(["a=1", "b=2"]) -> ["--set", "a=1", "--set", "b=2"]."""
    return _sets


@pytest.fixture(scope="session")
def compared_maps():
    """compared_maps(output) -> (fp32, label, other, delta, line) of the mAP line `eval --deployed` prints."""
    return _compared_maps


# ------------------------------------------------------------------------------------ the trained demo

# the demo at 64 px on larger, uncluttered shapes: reaches ~0.3 VOC07 mAP in 6 epochs of 1000 images
DEMO_SETS = ("model.input_size=64", "data.train.image_size=64", "data.val.image_size=64",
             "data.train.num_images=1000", "data.val.num_images=64", "train.epochs=6", "train.val_every=0",
             "data.train.min_size=0.25", "data.val.min_size=0.25", "data.train.clutter=false",
             "data.val.clutter=false", "data.num_workers=0", "eval.batch_size=16")


@pytest.fixture(scope="session")
def demo_sets():
    """The `--set` overrides of the trained demo (a new list at each use)."""
    return list(DEMO_SETS)


@pytest.fixture(scope="session")
def trained_demo(demo_recipe, tmp_path_factory):
    """(recipe dict, run folder) of the demo trained once per session (about a minute on 2 cores): the tests that
    use it are `slow`."""
    from gluon_yolo3 import api
    recipe = api.load(demo_recipe, list(DEMO_SETS))
    run = tmp_path_factory.mktemp("demo_trained") / "run"
    api.train(recipe, workdir=str(run), progress=False, log=lambda *a, **k: None)
    return recipe, run


# ------------------------------------------------------------------------------------------------ videos

DOG_BOX = (129, 186, 370, 517)   # the dog in Darknet's dog.jpg (zoo/yolov3_tiny_coco), x1y1x2y2 pixels


def _moving_dog(count, step=4, width=320, height=240, dog_height=150):
    """`count` frames `(H, W, 3) uint8 RGB`: the dog of zoo/yolov3_tiny_coco/dog.jpg, `dog_height` pixels high,
    moving right by `step` pixels a frame on grey; and its box `(count, 4)` x1y1x2y2 (pixel edges) in each."""
    import cv2
    dog = cv2.imread(str(REPO / "zoo/yolov3_tiny_coco/dog.jpg"))[DOG_BOX[1]:DOG_BOX[3], DOG_BOX[0]:DOG_BOX[2], ::-1]
    scale = dog_height / dog.shape[0]
    dog = cv2.resize(dog, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    h, w = dog.shape[:2]
    frames, boxes = [], []
    for i in range(count):
        x, y = 4 + i * step, (height - h) // 2
        image = np.full((height, width, 3), 110, np.uint8)
        image[y:y + h, x:x + w] = dog
        frames.append(image)
        boxes.append([x, y, x + w, y + h])
    return frames, np.array(boxes, np.float32)


def _write_video(path, frames, fps=25):
    """An H.264 MP4 of `(H, W, 3) uint8 RGB` frames at `fps`; returns `path`."""
    from gluon_yolo3.inference.video import VideoWriter
    h, w = frames[0].shape[:2]
    with VideoWriter(path, fps, (w, h)) as out:
        for frame in frames:
            out.write(frame)
    return path


@pytest.fixture(scope="session")
def moving_dog():
    """moving_dog(count, step=4, width=320, height=240, dog_height=150) -> (frames, boxes (count, 4)): the dog of
    zoo/yolov3_tiny_coco/dog.jpg moving right on grey (the zoo model finds it in every frame), and its box."""
    return _moving_dog


@pytest.fixture(scope="session")
def write_video():
    """write_video(path, frames, fps=25) -> path: an H.264 MP4 of `(H, W, 3) uint8 RGB` frames."""
    return _write_video


# ------------------------------------------------------------------------------------- child processes

@pytest.fixture(scope="session")
def job_env():
    """Variables for a test's child processes: one thread each, so that several of them share 2 cores."""
    return {"OMP_NUM_THREADS": "1", "MXNET_CPU_WORKER_NTHREADS": "1"}


def _kill_group(proc):
    """Kill a child started with start_new_session=True, with every process of its group, and reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def kill_group():
    """kill_group(proc): kill a child started with start_new_session=True, and its whole process group."""
    return _kill_group
