"""The command line, through typer's CliRunner: one tiny training shared by the eval/predict tests."""
import json
import math

import cv2
import pytest

from gluon_yolo3.data.synthetic import SyntheticShapes
from gluon_yolo3.registry import ALL

TINY = ["data.train.num_images=16", "data.val.num_images=8", "train.batch_size=8", "train.epochs=1",
        "model.input_size=64", "data.train.image_size=64", "data.val.image_size=64", "data.num_workers=0"]
CLASSES = ("circle", "square", "triangle")


@pytest.fixture(scope="module")
def run(tmp_path_factory, demo_recipe, invoke, sets):
    """One tiny training through the CLI; returns (result, run folder)."""
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    result = invoke("train", demo_recipe, "--workdir", run_dir, "--no-progress", *sets(TINY))
    return result, run_dir


@pytest.mark.parametrize("verb, options", [
    ("train", ["--set", "--devices", "--kvstore", "--workdir", "--resume", "--progress"]),
    ("eval", ["--weights", "--set", "--metric", "--split", "--devices", "--json", "--progress", "--deployed"]),
    ("predict", ["--weights", "--out", "--set", "--score-thresh", "--devices", "--exported", "--onnx", "--batch-size",
                 "--every", "--max-frames", "--save-labels", "--classes", "--progress"]),
    ("components", ["--plugin"]),
    ("import-darknet", ["--out", "--names"]),
    ("export-darknet", ["--weights", "--out", "--set"]),
    ("export", ["--weights", "--format", "--out", "--dynamic", "--batch-size", "--set"]),
    ("quantize", ["--weights", "--calib", "--out", "--calib-mode", "--quantize-head", "--set"]),
    ("pack", ["--weights", "--out", "--dtype", "--set"]),
    ("benchmark", ["--weights", "--train-steps", "--batch-sizes", "--fuse", "--json", "--set"]),
])
def test_help_of_every_verb(verb, options, invoke):
    result = invoke(verb, "--help")
    assert result.exit_code == 0, result.output
    for option in options:
        assert option in result.output, f"{verb} --help does not mention {option}"


def test_top_level_help_lists_verbs(invoke):
    result = invoke("--help")
    assert result.exit_code == 0
    for verb in ("train", "eval", "predict", "components"):
        assert verb in result.output


def test_components_lists_every_registry(invoke):
    result = invoke("components")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for name, registry in ALL.items():
        assert f"{name}:" in lines
        for entry in registry.names():
            assert any(line.strip().startswith(entry) for line in lines), entry
    for entry, doc_start in [("darknet53", "Darknet-53"), ("best_anchor", "YOLOv3's rule"),
                             ("class_aware", "Multi-label"), ("voc07", "Pascal VOC2007")]:
        line = next(line for line in lines if line.strip().split()[:1] == [entry])
        assert doc_start in line
    # entries sit under their own registry
    assert lines.index("METRICS:") < next(i for i, line in enumerate(lines) if line.strip().startswith("voc07"))
    assert lines.index("NMS:") < next(i for i, line in enumerate(lines) if line.strip().startswith("class_aware"))


def test_components_with_a_plugin(tmp_path, invoke):
    plugin = tmp_path / "cli_plugin_metric.py"
    plugin.write_text('from gluon_yolo3.registry import METRICS\n\n'
                      '@METRICS.register("cli_test_metric_xyz")\n'
                      'def cli_test_metric(class_names, iou_thresh=0.5):\n'
                      '    """A metric from a CLI plugin."""\n')
    try:
        result = invoke("components", "--plugin", plugin)
        assert result.exit_code == 0, result.output
        assert "cli_test_metric_xyz" in result.output and "A metric from a CLI plugin." in result.output
    finally:
        ALL["METRICS"]._entries.pop("cli_test_metric_xyz", None)


def test_components_with_missing_plugin_exits_2(tmp_path, invoke):
    result = invoke("components", "--plugin", tmp_path / "missing_plugin.py")
    assert result.exit_code == 2
    assert "missing_plugin.py" in result.output and "not found" in result.output


def test_train_writes_the_run_folder(run):
    result, run_dir = run
    assert result.exit_code == 0, result.output
    assert (run_dir / "recipe.yaml").is_file()
    assert (run_dir / "training.png").stat().st_size > 0
    last = json.loads((run_dir / "checkpoints/last.json").read_text())
    assert last["epoch"] == 1 and last["step"] == 2
    assert (run_dir / "checkpoints" / last["params"]).is_file()
    assert (run_dir / "checkpoints/best.params").is_file()
    assert len(list((run_dir / "predictions").glob("*.jpg"))) == 6
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [m for m in metrics if m["kind"] == "train"]
    assert train and all(math.isfinite(m["loss"]) for m in train)
    val = [m for m in metrics if m["kind"] == "val"]
    assert len(val) == 1 and set(val[0]["per_class"]) == set(CLASSES)
    # the summary is printed as JSON at the end
    summary = json.loads(result.output[result.output.rindex("{\n"):])
    assert summary["run_dir"] == str(run_dir) and summary["epochs"] == 1 and summary["steps"] == 2


def test_train_records_the_resolved_recipe_with_overrides(run):
    import yaml
    _, run_dir = run
    saved = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    assert "_base_" not in saved and "_file_" not in saved
    assert saved["name"] == "demo_tiny"
    assert saved["model"]["input_size"] == 64
    assert saved["data"]["train"]["num_images"] == 16
    assert saved["model"]["backbone"] == {"type": "darknet_tiny", "width": 0.5}


def test_train_again_into_same_workdir_needs_resume(run, demo_recipe, invoke, sets):
    _, run_dir = run
    before = (run_dir / "metrics.jsonl").read_text()
    result = invoke("train", demo_recipe, "--workdir", run_dir, "--no-progress", *sets(TINY))
    assert result.exit_code == 2
    assert "--resume" in result.output
    assert str(run_dir) in result.output
    assert (run_dir / "metrics.jsonl").read_text() == before        # the earlier run is untouched


def test_eval_prints_table_and_writes_json(run, tmp_path, demo_recipe, invoke, sets):
    _, run_dir = run
    out = tmp_path / "sub/eval.json"
    result = invoke("eval", demo_recipe, "--weights", run_dir, "--json", out, "--no-progress", *sets(TINY))
    assert result.exit_code == 0, result.output
    for name in CLASSES:
        assert any(line.startswith(name) for line in result.output.splitlines()), name
    assert "mAP (voc07)" in result.output
    data = json.loads(out.read_text())
    assert {"metric", "map", "per_class"} <= set(data)
    assert data["metric"] == "voc07"
    assert set(data["per_class"]) == set(CLASSES)
    assert data["map"] is None or 0.0 <= data["map"] <= 1.0


def test_eval_of_a_run_never_scores_best_on_the_data_it_was_picked_on(run, demo_recipe, invoke, sets):
    """best.params is the best of the run's validations on data.val: scored there it would flatter the run, so eval
    takes the run's last checkpoint and says so; on other data (here the training split) it takes best.params."""
    _, run_dir = run
    folder = run_dir / "checkpoints"
    assert (folder / "best.params").is_file() and (folder / "epoch_0001.params").is_file()
    result = invoke("eval", demo_recipe, "--weights", run_dir, "--no-progress", *sets(TINY))
    assert result.exit_code == 0, result.output
    assert (f"weights: {folder / 'epoch_0001.params'}, the run's last (epoch 1): its best.params was picked by "
            f"validating on this same data (type synthetic, split val") in result.output
    result = invoke("eval", demo_recipe, "--weights", run_dir, "--split", "train", "--no-progress", *sets(TINY))
    assert result.exit_code == 0, result.output
    assert (f"weights: {folder / 'best.params'}, the best of the run's validations on type synthetic, split val"
            in result.output)
    result = invoke("eval", demo_recipe, "--weights", folder / "best.params", "--no-progress", *sets(TINY))
    assert f"weights: {folder / 'best.params'}\n" in result.output          # a file is taken as given


def test_eval_with_other_metric(run, tmp_path, demo_recipe, invoke, sets):
    _, run_dir = run
    out = tmp_path / "voc.json"
    result = invoke("eval", demo_recipe, "--weights", run_dir, "--metric", "voc", "--json", out, "--no-progress",
                    *sets(TINY))
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["metric"] == "voc"
    assert "mAP (voc)" in result.output


def test_eval_with_missing_weights_exits_2(tmp_path, demo_recipe, invoke, sets):
    result = invoke("eval", demo_recipe, "--weights", tmp_path / "no_run", "--no-progress", *sets(TINY))
    assert result.exit_code == 2
    assert "no weights at" in result.output and "no_run" in result.output


@pytest.mark.parametrize("verb", ["train", "eval", "benchmark"])
def test_a_missing_dataset_root_exits_2_naming_it(run, tmp_path, verb, demo_recipe, invoke, sets):
    _, run_dir = run
    voc = ["data.train={type: voc, root: " + str(tmp_path / "no_voc") + "}", "data.val={type: voc, root: "
           + str(tmp_path / "no_voc") + "}", "data.classes=[circle, square, triangle]"]
    args = {"train": ["--workdir", tmp_path / "w", "--no-progress"], "eval": ["--weights", run_dir, "--no-progress"],
            "benchmark": ["--train-steps", 1, "--batch-sizes", ""]}[verb]
    result = invoke(verb, demo_recipe, *args, *sets(TINY + voc))
    assert result.exit_code == 2, result.output
    assert "VOC root not found" in result.output and "no_voc" in result.output


def test_predict_writes_drawings_and_json(run, tmp_path, demo_recipe, invoke, sets):
    _, run_dir = run
    image, _ = SyntheticShapes(num_images=1, image_size=64, split="test")[0]
    png = tmp_path / "shapes_image.png"
    assert cv2.imwrite(str(png), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    out = tmp_path / "pred_out"
    result = invoke("predict", demo_recipe, png, "--weights", run_dir, "--out", out, "--score-thresh", "0.0",
                    *sets(TINY))
    assert result.exit_code == 0, result.output
    drawn = cv2.imread(str(out / "shapes_image.jpg"))
    assert drawn is not None and drawn.shape == (64, 64, 3)
    records = json.loads((out / "detections.json").read_text())
    assert isinstance(records, list) and len(records) == 1
    assert records[0]["image"] == str(png)
    assert isinstance(records[0]["detections"], list)
    for det in records[0]["detections"]:
        assert det["class"] in CLASSES and CLASSES[det["class_id"]] == det["class"]
        assert 0.0 <= det["score"] <= 1.0 and len(det["box"]) == 4
    assert f"{png}: {len(records[0]['detections'])} detections" in result.output


def test_predict_unreadable_image_exits_2(run, tmp_path, demo_recipe, invoke, sets):
    _, run_dir = run
    result = invoke("predict", demo_recipe, tmp_path / "ghost.png", "--weights", run_dir, "--out", tmp_path / "o",
                    *sets(TINY))
    assert result.exit_code == 2
    assert "cannot read image" in result.output and "ghost.png" in result.output


def test_recipe_with_unknown_key_exits_2(tmp_path, demo_recipe, invoke):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text(f"_base_: {demo_recipe}\ntrain:\n  epochz: 3\n")
    result = invoke("train", recipe, "--workdir", tmp_path / "w", "--no-progress")
    assert result.exit_code == 2
    assert "train.epochz" in result.output and "train.epochs" in result.output
    assert not (tmp_path / "w").exists()                         # nothing was started


def test_unknown_override_key_exits_2(tmp_path, demo_recipe, invoke):
    result = invoke("eval", demo_recipe, "--weights", tmp_path, "--set", "eval.metrik=voc")
    assert result.exit_code == 2
    assert "eval.metrik" in result.output and "eval.metric" in result.output


def test_missing_recipe_exits_2(tmp_path, invoke):
    result = invoke("train", tmp_path / "absent.yaml", "--workdir", tmp_path / "w")
    assert result.exit_code == 2
    assert "absent.yaml" in result.output


@pytest.mark.parametrize("verb", ["train", "eval"])
def test_gpu_device_on_a_cpu_machine_exits_2(verb, run, tmp_path, demo_recipe, invoke, sets):
    import mxnet as mx
    if mx.context.num_gpus() > 0:
        pytest.skip("this machine has a GPU")
    _, run_dir = run
    extra = ["--workdir", tmp_path / "gpu_run"] if verb == "train" else ["--weights", run_dir]
    result = invoke(verb, demo_recipe, "--devices", "gpu:0", "--no-progress", *extra, *sets(TINY))
    assert result.exit_code == 2
    assert "gpu:0" in result.output and "no GPU" in result.output
    assert "Traceback" not in result.output


def test_malformed_device_exits_2(tmp_path, demo_recipe, invoke, sets):
    result = invoke("train", demo_recipe, "--devices", "tpu:0", "--workdir", tmp_path / "w", "--no-progress",
                    *sets(TINY))
    assert result.exit_code == 2
    assert "bad device 'tpu:0'" in result.output


def test_misspelled_component_argument_exits_2(tmp_path, demo_recipe, invoke, sets):
    result = invoke("train", demo_recipe, "--workdir", tmp_path / "w", "--no-progress",
                    *sets(TINY + ["model.nms.iou_tresh=0.3"]))
    assert result.exit_code == 2
    assert "iou_tresh" in result.output and "iou_thresh" in result.output
