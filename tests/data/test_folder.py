"""`data.root`: one folder, VOC or YOLO txt, with or without split files; a seeded 80/20 split when it has none,
written into the run folder; and a recipe's length as a step budget."""
import json
from pathlib import Path

import numpy as np
import pytest

from gluon_yolo3 import api
from gluon_yolo3.data.base import DatasetError
from gluon_yolo3.data.build import build_datasets
from gluon_yolo3.data.folder import seeded_split
from gluon_yolo3.data.pipeline import build_assigner, build_train_batches
from gluon_yolo3.engine.trainer import Trainer

TINY = ["model.input_size=64", "data.num_workers=0", "train.batch_size=2", "train.val_every=0", "train.lr=0.01",
        "data.transforms=[]"]


def voc_folder(root, write_voc, count=10, splits=None):
    """A VOC folder of `count` images; `splits`: {split name: [indices]} files (none: no split files)."""
    objects = {f"img{i:02d}": [("cat" if i % 2 else "dog", 4, 4, 30, 40, 0)] for i in range(count)}
    write_voc(root, objects, split="all")
    (root / "ImageSets/Main/all.txt").unlink()
    for name, indices in (splits or {}).items():
        (root / "ImageSets/Main" / f"{name}.txt").write_text("".join(f"img{i:02d}\n" for i in indices))
    return root


def ids(dataset):
    return [dataset.image_id(i) for i in range(len(dataset))]


def test_a_voc_folder_with_trainval_and_test(tmp_path, demo_recipe, write_voc):
    root = voc_folder(tmp_path / "voc", write_voc, splits={"trainval": range(7), "train": range(3),
                                                           "test": [7, 8, 9], "val": [3]})
    sets = build_datasets(api.load(demo_recipe, [f"data.root={root}"]))
    assert ids(sets["train"]) == [f"img{i:02d}" for i in range(7)] and ids(sets["val"]) == ["img07", "img08", "img09"]
    assert sets["train"].split_source == "trainval" and sets["val"].split_source == "test"
    assert sets["train"].classes == ("cat", "dog") == sets["val"].classes


def test_a_folder_without_split_files_gets_a_seeded_80_20_split_written_into_the_run(tmp_path, demo_recipe,
                                                                                       write_voc):
    root = voc_folder(tmp_path / "voc", write_voc)
    recipe = api.load(demo_recipe, TINY + [f"data.root={root}", "train.epochs=1"])
    sets = build_datasets(recipe)
    train, val = ids(sets["train"]), ids(sets["val"])
    assert len(train) == 8 and len(val) == 2 and not set(train) & set(val)
    assert sets["val"].split_source == "seeded 80/20 split"
    again = build_datasets(recipe)                      # the same split every time
    assert ids(again["val"]) == val
    Trainer(recipe, tmp_path / "run", progress=False, log=lambda *_: None).fit()
    assert (tmp_path / "run/splits/val.txt").read_text().split() == val
    assert (tmp_path / "run/splits/train.txt").read_text().split() == train


def test_a_yolo_folder_with_train_only_is_split_and_with_val_is_not(tmp_path, demo_recipe, write_yolo):
    folder, _ = write_yolo(tmp_path / "yolo", num_images=10)
    sets = build_datasets(api.load(demo_recipe, [f"data.root={folder}"]))
    assert sets["val"].split_source == "val" and len(sets["train"]) == 10
    text = (folder / "data.yaml").read_text().replace("val: images/val\n", "")
    (folder / "data.yaml").write_text(text)
    sets = build_datasets(api.load(demo_recipe, [f"data.root={folder}"]))
    assert sets["val"].split_source == "seeded 80/20 split"
    assert len(sets["train"]) == 8 and len(sets["val"]) == 2
    assert not set(ids(sets["train"])) & set(ids(sets["val"]))


def test_seeded_split_is_sorted_then_permuted_and_keeps_one_of_each():
    assert seeded_split(["b", "a", "c", "d", "e"], 0, 0.2) == seeded_split(["e", "d", "c", "b", "a"], 0, 0.2)
    train, val = seeded_split([str(i) for i in range(100)], 0, 0.2)
    assert len(val) == 20 and len(train) == 80 and sorted(train + val, key=int) == [str(i) for i in range(100)]
    assert seeded_split(["a", "b"], 0, 0.9)[0]
    with pytest.raises(DatasetError, match="at least 2 images"):
        seeded_split(["a"], 0, 0.2)


def test_a_folder_that_is_no_dataset_is_named(tmp_path, demo_recipe):
    (tmp_path / "photos").mkdir()
    with pytest.raises(DatasetError, match="photos: neither a Pascal VOC folder"):
        build_datasets(api.load(demo_recipe, [f"data.root={tmp_path / 'photos'}"]))


def test_a_step_budget_sets_the_epochs(tmp_path, demo_recipe):
    recipe = api.load(demo_recipe, TINY + ["model.input_size=64", "data.train.image_size=64",
                                           "data.val.image_size=64", "data.train.num_images=10",
                                           "data.val.num_images=2", "train.steps=12"])
    logged = []
    summary = Trainer(recipe, tmp_path / "run", progress=False, log=logged.append).fit()
    assert summary["epochs"] == 3 and summary["steps"] == 15     # 5 steps per epoch: 3 epochs cover 12
    assert "train.steps 12: 3 epochs of 5 steps" in logged
    assert api.load(tmp_path / "run/recipe.yaml")["train"]["epochs"] == 3


@pytest.mark.parametrize("images, epochs, expected", [
    (150, 30, 45),     # 9 steps per epoch: 30 epochs are 270 steps, under the 400: 45 epochs (405 steps)
    (292, 30, 30),     # 18 steps per epoch: 30 epochs are 540 steps, over the 400: the recipe's 30
    (16, 1, 400),      # one step per epoch
])
def test_min_steps_raises_the_epochs_of_a_small_dataset_only(images, epochs, expected):
    from gluon_yolo3.engine.builders import epochs_for
    cfg, logged = {"epochs": epochs, "steps": None, "min_steps": 400}, []
    assert epochs_for(cfg, images, 16, 1, logged.append) == expected == cfg["epochs"]
    assert f"train.min_steps 400: {expected} epochs of {max(1, images // 16)} steps" in logged[0]


@pytest.mark.parametrize("images, expected", [
    (150, 45),         # 9 steps per epoch: min_steps 400 -> 45 epochs (405 steps), under the 1000
    (657, 24),         # 41 steps per epoch: 30 epochs are 1230 steps, over the 1000: 24 epochs (984 steps)
    (20000, 1),        # 1250 steps per epoch: one epoch, though over the budget
])
def test_max_steps_lowers_the_epochs_of_a_large_dataset_only(images, expected):
    from gluon_yolo3.engine.builders import epochs_for
    cfg, logged = {"epochs": 30, "steps": None, "min_steps": 400, "max_steps": 1000}, []
    assert epochs_for(cfg, images, 16, 1, logged.append) == expected == cfg["epochs"]
    assert (f"train.epochs 30, train.min_steps 400, train.max_steps 1000: {expected} epochs of {images // 16} steps"
            in logged[0])


def test_anchors_auto_are_fitted_logged_and_written(tmp_path, demo_recipe):
    recipe = api.load(demo_recipe, TINY + ["data.train.image_size=64", "data.val.image_size=64",
                                           "data.train.num_images=40", "data.val.num_images=2", "train.epochs=1",
                                           "model.anchors=auto"])
    logged = []
    Trainer(recipe, tmp_path / "run", progress=False, log=logged.append).fit()
    written = api.load(tmp_path / "run/recipe.yaml")["model"]["anchors"]
    assert len(written) == 2 and all(len(group) == 3 for group in written)
    areas = [w * h for group in written for w, h in group]
    assert areas == sorted(areas)                                # finest scale gets the smallest
    line = next(line for line in logged if line.startswith("model.anchors (auto, k-means)"))
    assert "mean best IoU" in line and "best possible recall" in line and "the default anchors" in line


def test_explicit_anchors_that_fit_badly_get_the_command_that_fixes_them(tmp_path, demo_recipe):
    recipe = api.load(demo_recipe, TINY + ["data.train.image_size=64", "data.val.image_size=64",
                                           "data.train.num_images=40", "data.val.num_images=2", "train.epochs=1",
                                           "model.anchors=[[[1, 1], [1, 2], [2, 1]], [[2, 2], [2, 3], [3, 2]]]"])
    logged = []
    Trainer(recipe, tmp_path / "run", progress=False, log=logged.append).fit()
    warning = next(line for line in logged if line.startswith("warning: model.anchors fit the training boxes badly"))
    assert f"gluon-yolo3 anchors {demo_recipe}" in warning and "< 0.98" in warning and "auto" in warning
    assert np.isfinite(float(warning.split("recall ")[1].split(" ")[0]))


def test_photos_without_boxes_train_as_background_in_the_custom_recipe(tmp_path, repo, write_voc):
    """docs/own-data.md, "When the figure falls short": a look-alike photo with an annotation but no <object> stays
    in the training split, and the recipe's whole chain gives it an all-background target (objectness 0
    everywhere, so every cell learns "nothing here"), while a photo with a box gets a positive."""
    root = write_voc(tmp_path / "voc", {"raccoon": [("raccoon", 4, 4, 40, 60, 0)], "cat": []}, split="trainval")
    write_voc(root, {"test": [("raccoon", 4, 4, 40, 60, 0)]}, split="test")
    recipe = api.load(repo / "recipes/custom_voc.yaml", [f"data.root={root}", "train.init_from=null"])
    train = build_datasets(recipe, ("train",))["train"]
    assert ids(train) == ["raccoon", "cat"] and train.label(1).shape == (0, 6)
    assigner = build_assigner(recipe, recipe["model"]["anchors"], (16, 32), len(train.classes))
    samples, _, _ = build_train_batches(recipe, train, assigner, batch_size=2, seed=0)
    for epoch in range(3):                                     # keys: (epoch, size index, image index)
        with_box, background = samples[epoch * 2 * len(samples.sizes)], samples[epoch * 2 * len(samples.sizes) + 1]
        assert with_box[1][:, 0].sum() >= 1 and background[1][:, 0].sum() == 0
        assert (background[2] == -1).all()                     # no ground truth box at all


# ---- the split a run recorded ---------------------------------------------------------------------------

def test_a_recorded_split_is_read_back_and_changes_since_are_said(tmp_path, demo_recipe, write_voc):
    from gluon_yolo3.engine.builders import record_splits
    root = voc_folder(tmp_path / "voc", write_voc)
    recipe = api.load(demo_recipe, [f"data.root={root}"])
    drawn = build_datasets(recipe)
    assert record_splits(drawn, tmp_path / "run")
    write_voc(root, {"img10": [("cat", 4, 4, 30, 40, 0)]}, split="extra")        # a photo added since
    gone = ids(drawn["val"])[0]
    (root / "Annotations" / f"{gone}.xml").unlink()                                 # and one removed
    again = build_datasets(api.load(demo_recipe, [f"data.root={root}", f"data.split_dir={tmp_path / 'run/splits'}"]))
    assert ids(again["train"]) == ids(drawn["train"]) and ids(again["val"]) == ids(drawn["val"])[1:]
    assert again["val"].split_source == f"the split recorded in {tmp_path / 'run/splits/val.txt'}"
    assert again["val"].warnings[-1:] == [f"{root} changed since the split in {tmp_path / 'run/splits'} was recorded: 1 "
                                     f"image(s) added, in neither split (img10); 1 of the 2 recorded val image(s) "
                                     f"gone ({gone})"]
    redrawn = build_datasets(recipe)                                  # without it, the folder as it is now
    assert ids(redrawn["val"]) != ids(again["val"])


def test_a_yolo_split_is_recorded_as_paths_and_old_stems_still_read(tmp_path, demo_recipe, write_yolo):
    from gluon_yolo3.engine.builders import record_splits
    folder, _ = write_yolo(tmp_path / "yolo", num_images=10)
    (folder / "data.yaml").write_text((folder / "data.yaml").read_text().replace("val: images/val\n", ""))
    drawn = build_datasets(api.load(demo_recipe, [f"data.root={folder}"]))
    record_splits(drawn, tmp_path / "run")
    lines = (tmp_path / "run/splits/val.txt").read_text().split()
    assert all(line.startswith("images/train/") and line.endswith(".png") for line in lines)
    (tmp_path / "run/splits/val.txt").write_text("".join(f"{Path(line).stem}\n" for line in lines))   # as 0.x wrote
    again = build_datasets(api.load(demo_recipe, [f"data.root={folder}", f"data.split_dir={tmp_path / 'run/splits'}"]))
    assert ids(again["val"]) == ids(drawn["val"]) and again["val"].warnings == []


@pytest.mark.slow
def test_eval_data_check_and_resume_read_the_split_the_run_recorded(tmp_path, demo_recipe, write_voc, invoke, sets):
    """Before: eval drew the split again from the folder as it was now: after one photo was added it evaluated on a
    training photo and skipped a held-out one, with no warning."""
    root = voc_folder(tmp_path / "voc", write_voc)
    recipe = tmp_path / "mine.yaml"
    recipe.write_text(f"_base_: {demo_recipe}\nname: mine\ndata:\n  root: {root}\n")
    run = tmp_path / "run"
    assert invoke("train", recipe, "--workdir", run, "--no-progress", *sets(TINY + ["train.epochs=1"])).exit_code == 0
    recorded = (run / "splits/val.txt").read_text().split()
    assert api.load(run / "recipe.yaml")["data"]["split_dir"] == str(run / "splits")
    write_voc(root, {"img10": [("dog", 4, 4, 30, 40, 0)]}, split="extra")
    for given in (run / "recipe.yaml", recipe):
        result = invoke("eval", given, "--weights", run, "--no-progress", "--report", tmp_path / "r", *sets(TINY))
        assert result.exit_code == 0, result.output
        assert f"data.val: the split recorded in {run / 'splits/val.txt'}" in result.output
        assert "1 image(s) added, in neither split (img10)" in result.output
        truth = json.loads((tmp_path / "r/ground_truth_coco.json").read_text())
        assert [image["file_name"] for image in truth["images"]] == [f"{i}.jpg" for i in recorded]
    check = invoke("data", "check", run / "recipe.yaml", "--out", tmp_path / "c", "--no-progress", *sets(TINY))
    assert check.exit_code == 0 and json.loads((tmp_path / "c/data_check.json").read_text())["val"]["images"] == 2
    resumed = invoke("train", recipe, "--workdir", run, "--resume", "--no-progress", *sets(TINY + ["train.epochs=2"]))
    assert resumed.exit_code == 0 and f"data.val: 2 images, the split recorded in {run / 'splits/val.txt'}" in \
        resumed.output
    assert (run / "splits/val.txt").read_text().split() == recorded
