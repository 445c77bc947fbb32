"""Trust under bad input: one class list per run, no non-finite weights on disk, resume with changed settings,
nothing from a run folder executes, run names are names, and clear errors (file, key, reason) for bad files and
failed writes. Every test here failed before its fix."""
import errno
import json
import os
import pickle
from pathlib import Path

import cv2
import mxnet as mx
import numpy as np
import pytest

from gluon_yolo3 import api
from gluon_yolo3.engine import checkpoint as ckpt
from gluon_yolo3.inference.weights import CheckpointError, is_pickle
from gluon_yolo3.engine.trainer import NonFiniteGradient, NonFiniteLoss, Trainer
from gluon_yolo3.losses.terms import LossTerm, field, per_image_sum
from gluon_yolo3.registry import LOSSES

TINY = ["model.input_size=64", "data.train.image_size=64", "data.val.image_size=64", "data.num_workers=0",
        "data.train.num_images=16", "data.val.num_images=4", "train.batch_size=8", "train.val_every=0",
        "train.lr=0.01"]


def quiet(*_args, **_kwargs):
    pass


# ---- one class list per run ------------------------------------------------------------------------

def write_voc(root: Path, splits: dict):
    """A VOC folder: `splits = {split: [(image id, [(class name, x1, y1, x2, y2), ...]), ...]}` (64x64 JPEGs)."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, items in splits.items():
        (root / "ImageSets/Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i, _ in items))
        for image_id, objects in items:
            cv2.imwrite(str(root / "JPEGImages" / f"{image_id}.jpg"), rng.integers(0, 255, (64, 64, 3), np.uint8))
            xml = "".join(f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
                          f"<xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>" for n, a, b, c, d in objects)
            (root / "Annotations" / f"{image_id}.xml").write_text(
                f"<annotation><size><width>64</width><height>64</height><depth>3</depth></size>{xml}</annotation>")


@pytest.fixture(scope="module")
def shifted(tmp_path_factory, demo_recipe, invoke, sets):
    """A VOC folder whose val split lacks 'cat' (train has it) and holds 'zebra' (train has none), and a one-epoch
    run on it: (recipe path, run folder, CLI result)."""
    root = tmp_path_factory.mktemp("shifted") / "voc"
    train = [(f"t{i}", [("cat", 4, 4, 30, 30), ("dog", 30, 30, 60, 60)]) for i in range(8)]
    val = [(f"v{i}", [("dog", 4, 4, 40, 40), ("zebra", 40, 40, 60, 60), ("dog", 2, 40, 20, 62)]) for i in range(4)]
    write_voc(root, {"train": train, "val": val})
    recipe = root.parent / "voc.yaml"
    recipe.write_text(f"_base_: {demo_recipe}\nname: shifted\ndata:\n"
                      f"  train: {{type: voc, root: {root}, splits: [train], cache: false}}\n"
                      f"  val: {{type: voc, root: {root}, splits: [val], cache: false}}\n")
    run = root.parent / "run"
    result = invoke("train", recipe, "--workdir", run, "--no-progress",
                    *sets(["model.input_size=64", "data.num_workers=0", "train.batch_size=8", "train.epochs=1",
                           "train.val_every=1"]))
    return recipe, run, result


def test_the_run_has_the_training_sets_class_list_and_writes_it(shifted):
    _, run, result = shifted
    assert result.exit_code == 0, result.output
    written = api.load(run / "recipe.yaml")
    assert written["data"]["classes"] == ["cat", "dog"]
    assert "zebra" in result.output and "v0.xml" in result.output      # reported with its file, skipped
    val = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
           if json.loads(line)["kind"] == "val"][-1]
    assert list(val["per_class"]) == ["cat", "dog"]


def test_eval_counts_each_class_under_its_own_name(shifted, tmp_path, invoke):
    recipe, run, _ = shifted
    out = tmp_path / "eval.json"
    result = invoke("eval", recipe, "--weights", run, "--json", out, "--no-progress", "--report", tmp_path / "r")
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())
    assert scores["num_gt"] == {"cat": 0, "dog": 8}       # the val split's 8 dogs are dogs, not cats
    cat_row = [line for line in result.output.splitlines() if line.startswith("cat ")][0]
    assert "no ground truth" in cat_row
    truth = json.loads((tmp_path / "r/ground_truth_coco.json").read_text())   # its ids lead back to the photos
    assert [image["file_name"] for image in truth["images"]] == ["v0.jpg", "v1.jpg", "v2.jpg", "v3.jpg"]
    boxes = [a["bbox"] for a in truth["annotations"] if a["image_id"] == 2]      # v2's dogs, VOC 1-based to x y w h
    assert boxes == [[3, 3, 37, 37], [1, 39, 19, 23]]
    errors = json.loads((tmp_path / "r/errors.json").read_text())
    assert "errors.json: " in result.output and errors["missed"]                # one epoch: dogs are missed
    names = {e["image"] for e in errors["missed"] + errors["false_positives"]}
    assert names <= {"v0.jpg", "v1.jpg", "v2.jpg", "v3.jpg"}


def test_recipe_classes_that_differ_from_the_weights_are_refused(shifted, tmp_path, invoke):
    recipe, run, _ = shifted
    result = invoke("eval", recipe, "--weights", run, "--no-progress", "--set", "data.classes=[dog, cat]")
    assert result.exit_code == 2
    assert "['dog', 'cat']" in result.output and "['cat', 'dog']" in result.output


def test_eval_on_an_unknown_split_names_the_splits(shifted, invoke):
    recipe, run, _ = shifted
    result = invoke("eval", recipe, "--weights", run, "--split", "test", "--no-progress")
    assert result.exit_code == 2
    assert "'test'" in result.output and "train, val" in result.output and "Traceback" not in result.output


# ---- never a non-finite "good" checkpoint -----------------------------------------------------------

@LOSSES.register("test_nan_gradient", override=True)
class NaNGradient(LossTerm):
    """Zero in value, NaN in gradient: sqrt at 0 has an infinite slope, times relu's 0."""

    short_name = "nangrad"

    def hybrid_forward(self, F, pred, target, pred_boxes, noobj):
        return per_image_sum(F, F.sqrt(F.relu(field(F, pred, 0, 1) - 1e9)))


def all_finite(path: Path) -> bool:
    return all(np.isfinite(v.asnumpy()).all() for v in mx.nd.load(str(path)).values())


@pytest.mark.slow
def test_a_diverging_run_leaves_only_finite_checkpoints(tmp_path, demo_recipe):
    """lr 4 with no warm-up: before the fix, a step with a finite loss and NaN gradients was applied and
    epoch_0001.params (named the last good checkpoint) held NaN in 29 of 61 tensors."""
    recipe = api.load(demo_recipe, TINY + ["data.train.num_images=48", "train.batch_size=16", "train.lr=4",
                                           "train.lr_schedule.warmup_epochs=0.25", "train.epochs=4",
                                           "train.val_every=1", "data.val.num_images=8"])
    message = ""
    try:
        Trainer(recipe, tmp_path, progress=False, log=quiet).fit()
    except NonFiniteLoss as err:            # it may stop, or (gradients now finite) diverge to the end
        message = str(err)
    written = sorted((tmp_path / "checkpoints").glob("*.params"))
    assert written
    for path in written:
        assert all_finite(path), path.name
    if "Last good checkpoint" in message:
        named = Path(message.split("Last good checkpoint: ")[1].split(" ")[0])
        assert named.exists() and all_finite(named)


def test_non_finite_gradients_stop_training_naming_the_tensor(tmp_path, demo_recipe):
    recipe = api.load(demo_recipe, TINY + ["train.epochs=1", "loss.terms=[{type: xy_bce}, {type: test_nan_gradient}]"])
    trainer = Trainer(recipe, tmp_path, progress=False, log=quiet)
    trainer.setup()
    before = {k: v.data().asnumpy().copy() for k, v in trainer.net.collect_params().items() if v.grad_req != "null"}
    trainer.setup = lambda: None
    with pytest.raises(NonFiniteGradient) as err:
        trainer.fit()
    message = str(err.value)
    assert "'backbone.body16.0.conv.weight'" in message and "step 1" in message and "loss was finite" in message
    assert "head.outputs.0.weight" in err.value.names         # structural names, as in the .params files
    for name, value in before.items():               # the step was not applied
        np.testing.assert_array_equal(trainer.net.collect_params()[name].data().asnumpy(), value, err_msg=name)
    assert not list((tmp_path / "checkpoints").glob("*.params")) if (tmp_path / "checkpoints").exists() else True


def test_weights_with_nan_are_never_written(tmp_path, demo_recipe):
    recipe = api.load(demo_recipe, TINY)
    net = api.build(recipe, 3)
    net.initialize()
    net(mx.nd.zeros((1, 3, 64, 64)))
    name = "backbone.body16.0.conv.weight"
    param = net._collect_params_with_prefix()[name]
    value = param.data().asnumpy()
    value[0, 0, 0, 0] = np.nan
    param.set_data(mx.nd.array(value))
    manager = ckpt.CheckpointManager(tmp_path)
    with pytest.raises(ckpt.NonFiniteWeights, match=name.replace(".", r"\.")):
        manager.save_best(net)
    assert not (tmp_path / "checkpoints/best.params").exists()


# ---- resume: changed settings, no pickles, no last.json -------------------------------------------------

def lr_by_step(run: Path):
    return {m["step"]: m["lr"] for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if m["kind"] == "train"}


@pytest.mark.slow
def test_resume_with_more_epochs_continues_the_new_schedule(tmp_path, demo_recipe):
    base = TINY + ["train.log_every=1", "train.lr_schedule={type: warmup_cosine, warmup_epochs: 1}"]
    Trainer(api.load(demo_recipe, base + ["train.epochs=2"]), tmp_path / "run", progress=False, log=quiet).fit()
    logged = []
    longer = api.load(demo_recipe, base + ["train.epochs=4", "train.lr=0.02"])
    summary = Trainer(longer, tmp_path / "run", progress=False, log=logged.append).fit(resume=True)
    assert summary["steps"] == 8
    straight = tmp_path / "straight"
    Trainer(longer, straight, progress=False, log=quiet).fit()
    resumed, reference = lr_by_step(tmp_path / "run"), lr_by_step(straight)
    for step in (5, 6, 7):                 # the 4-epoch, lr 0.02 curve (it was 0.0 at every resumed step)
        assert resumed[step] > 0 and resumed[step] == pytest.approx(reference[step], rel=1e-6), step
    text = "\n".join(logged)
    assert "train.epochs changed from 2 to 4" in text and "train.lr changed from 0.01 to 0.02" in text
    assert api.load(tmp_path / "run/recipe.yaml")["train"]["epochs"] == 4


def test_resume_with_another_architecture_is_refused_before_writing(tmp_path, demo_recipe):
    Trainer(api.load(demo_recipe, TINY + ["train.epochs=1"]), tmp_path, progress=False, log=quiet).fit()
    before = (tmp_path / "recipe.yaml").read_text()
    wider = api.load(demo_recipe, TINY + ["train.epochs=2", "model.backbone.width=1.0", "model.neck.width=1.0"])
    with pytest.raises(CheckpointError, match="model.backbone.width changed from 0.5 to 1.0"):
        Trainer(wider, tmp_path, progress=False, log=quiet).fit(resume=True)
    assert (tmp_path / "recipe.yaml").read_text() == before


class WritesAFile:
    """A pickle payload that would create a file when unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_a_pickled_states_file_is_refused_and_never_run(tmp_path, demo_recipe):
    Trainer(api.load(demo_recipe, TINY + ["train.epochs=1"]), tmp_path, progress=False, log=quiet).fit()
    marker = tmp_path / "pwned"
    meta = ckpt.CheckpointManager(tmp_path).last()
    Path(meta["states"]).write_bytes(pickle.dumps(WritesAFile(marker), protocol=2))
    assert mx.nd.load(str(meta["params"]))                # the weights are still plain NDArrays
    with pytest.raises(CheckpointError, match="pickle"):
        Trainer(api.load(demo_recipe, TINY + ["train.epochs=2"]), tmp_path, progress=False, log=quiet).fit(resume=True)
    assert not marker.exists()


def test_checkpoint_states_are_ndarrays_and_json(tmp_path, demo_recipe):
    Trainer(api.load(demo_recipe, TINY + ["train.epochs=1"]), tmp_path, progress=False, log=quiet).fit()
    folder = tmp_path / "checkpoints"
    assert not is_pickle(folder / "epoch_0001.states")
    states = mx.nd.load(str(folder / "epoch_0001.states"))
    meta = json.loads((folder / "epoch_0001.json").read_text())
    assert len(states) > 30 and meta["optimizer"]["type"] == "sgd" and meta["classes"] == [
        "circle", "square", "triangle"]


@pytest.mark.slow
def test_resume_without_last_json_uses_the_newest_complete_epoch(tmp_path, demo_recipe):
    Trainer(api.load(demo_recipe, TINY + ["train.epochs=2"]), tmp_path, progress=False, log=quiet).fit()
    (tmp_path / "checkpoints/last.json").unlink()
    (tmp_path / "checkpoints/epoch_0002.states").unlink()            # epoch 2 is incomplete
    logged = []
    summary = Trainer(api.load(demo_recipe, TINY + ["train.epochs=3"]), tmp_path, progress=False,
                      log=logged.append).fit(resume=True)
    assert summary["steps"] == 6
    assert any("epoch_0001" in line and "epoch 1" in line for line in logged)


# ---- bad weight files ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, demo_recipe):
    run = tmp_path_factory.mktemp("tiny") / "run"
    Trainer(api.load(demo_recipe, TINY + ["train.epochs=1"]), run, progress=False, log=quiet).fit()
    return run


@pytest.mark.parametrize("content", [b"this is text, not weights\n", "truncated"])
def test_a_file_that_is_not_params_gets_a_clear_error(tiny_run, tmp_path, content, demo_recipe, invoke, sets):
    bad = tmp_path / "bad.params"
    if content == "truncated":
        data = (tiny_run / "checkpoints/epoch_0001.params").read_bytes()
        content = data[:len(data) // 2]
    bad.write_bytes(content)
    result = invoke("eval", demo_recipe, "--weights", bad, "--no-progress", *sets(TINY))
    assert result.exit_code == 2
    assert "not a valid MXNet parameter file (truncated or another format)" in result.output
    assert "Traceback" not in result.output


# ---- run names and folders -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["/an/absolute/path", "../../x", "..", "a/b"])
def test_a_run_name_is_a_name_not_a_path(tmp_path, elsewhere, name, demo_recipe, invoke, sets):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"_base_: {demo_recipe}\nname: '{name}'\n")
    result = invoke("train", recipe, "--no-progress", *sets(TINY + ["train.epochs=1"]))
    assert result.exit_code == 2
    assert "not a run name" in result.output and "--workdir" in result.output
    assert not (elsewhere / "runs").exists() and not Path("/an").exists()


def test_a_folder_holding_other_files_is_refused(tmp_path, elsewhere, demo_recipe, invoke, sets):
    for folder in (tmp_path / "mine", elsewhere / "runs" / "mine"):
        folder.mkdir(parents=True)
        (folder / "notes.txt").write_text("my notes")
    result = invoke("train", demo_recipe, "--workdir", tmp_path / "mine", "--no-progress",
                    *sets(TINY + ["train.epochs=1"]))
    assert result.exit_code == 2 and "not a gluon-yolo3 run" in result.output
    result = invoke("train", demo_recipe, "--no-progress", *sets(TINY + ["train.epochs=1", "name=mine"]))
    assert result.exit_code == 2 and "not a gluon-yolo3 run" in result.output
    for folder in (tmp_path / "mine", elsewhere / "runs" / "mine"):
        assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]



@pytest.mark.slow
def test_a_run_starts_beside_what_data_check_and_data_show_wrote(elsewhere, demo_recipe, invoke, sets):
    """docs/own-data.md's order, data check, data show, then train, all into runs/<name>: the run starts there and
    the checks' files stay."""
    tiny = sets(TINY + ["train.epochs=1", "name=mine"])
    assert invoke("data", "check", demo_recipe, "--no-progress", *tiny).exit_code == 0
    assert invoke("data", "show", demo_recipe, "--count", 2, *tiny).exit_code == 0
    result = invoke("train", demo_recipe, "--no-progress", *tiny)
    assert result.exit_code == 0, result.output
    folder = elsewhere / "runs" / "mine"
    assert {"data_check", "data_show.png", "recipe.yaml", "checkpoints"} <= {p.name for p in folder.iterdir()}
    assert (folder / "data_check/data_check.json").is_file()

# ---- failed writes: "cannot write PATH: reason", exit 2, what was saved stays ---------------------------

@pytest.mark.parametrize("where", ["read-only", "a file", "under a file"])
def test_workdir_that_cannot_be_written(tmp_path, where, demo_recipe, invoke, sets):
    target = {"read-only": Path("/sys/gluon_yolo3_run"), "a file": tmp_path / "file.txt",
              "under a file": tmp_path / "file.txt" / "run"}[where]
    (tmp_path / "file.txt").write_text("x")
    result = invoke("train", demo_recipe, "--workdir", target, "--no-progress", *sets(TINY + ["train.epochs=1"]))
    assert result.exit_code == 2, result.output
    assert "cannot write" in result.output and "Traceback" not in result.output


def test_eval_json_that_cannot_be_written(tiny_run, demo_recipe, invoke, sets):
    result = invoke("eval", demo_recipe, "--weights", tiny_run, "--json", "/sys/gluon_yolo3/eval.json", "--no-progress",
                    "--report", tiny_run / "report", *sets(TINY))
    assert result.exit_code == 2
    assert "cannot write /sys/gluon_yolo3" in result.output and "Traceback" not in result.output


def test_a_full_disk_at_a_checkpoint_is_a_clear_error_and_keeps_the_last_one(tmp_path, monkeypatch, demo_recipe, invoke,
                                                                             sets):
    from gluon_yolo3 import files
    real_fsync = os.fsync

    def full_at_epoch_2(fd):
        if "epoch_0002" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", full_at_epoch_2)
    result = invoke("train", demo_recipe, "--workdir", tmp_path, "--no-progress", *sets(TINY + ["train.epochs=2"]))
    assert result.exit_code == 2
    assert "cannot write" in result.output and "epoch_0002" in result.output and "No space left" in result.output
    monkeypatch.setattr(files.os, "fsync", real_fsync)
    assert ckpt.CheckpointManager(tmp_path).last()["epoch"] == 1
    assert api.load_detector(api.load(demo_recipe, TINY), tmp_path)


# ---- predict: one bad image among good ones -------------------------------------------------------------

def test_predict_skips_an_unreadable_image_and_keeps_same_stem_drawings_apart(tiny_run, tmp_path, demo_recipe, invoke,
                                                                              sets):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "img.png"), np.full((64, 64, 3), 90, np.uint8))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    out = tmp_path / "out"
    result = invoke("predict", demo_recipe, tmp_path / "a/img.png", broken, tmp_path / "b/img.png", "--weights",
                    tiny_run, "--out", out, *sets(TINY))
    assert result.exit_code == 2
    assert "broken.jpg" in result.output and "skipped" in result.output
    records = json.loads((out / "detections.json").read_text())
    assert [r["image"] for r in records] == [str(tmp_path / "a/img.png"), str(tmp_path / "b/img.png")]
    assert sorted(p.name for p in out.glob("*.jpg")) == ["img.jpg", "img_2.jpg"]
    assert [r["drawing"] for r in records] == ["img.jpg", "img_2.jpg"]


def test_a_run_that_fails_before_writing_leaves_no_empty_folder(tmp_path, demo_recipe, invoke, sets):
    result = invoke("train", demo_recipe, "--workdir", tmp_path / "run", "--no-progress",
                    *sets(TINY + ["model.input_size=100"]))
    assert result.exit_code == 2 and "model.input_size 100" in result.output
    assert not (tmp_path / "run").exists()
