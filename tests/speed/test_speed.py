"""Speed measurement (`gluon-yolo3 benchmark`): FLOP counts against Darknet's published figures, and the
verb's figures consistent with each other. No wall-clock time is asserted."""
import json

import pytest

from gluon_yolo3 import api
from gluon_yolo3.speed.timing import conv_gflop
from gluon_yolo3.models.detector import build_detector

COCO80 = [f"c{i}" for i in range(80)]
TINY_DEMO = ["model.input_size=64", "data.train.image_size=64", "data.val.image_size=64",
             "data.train.num_images=16", "data.val.num_images=4", "data.num_workers=0", "train.batch_size=4"]


@pytest.mark.parametrize("recipe, darknet_bflops", [
    # Darknet prints these totals for yolov3.cfg and yolov3-tiny.cfg at 416 with 80 classes
    (["model.anchors=[[[10, 13], [16, 30], [33, 23]], [[30, 61], [62, 45], [59, 119]], "
      "[[116, 90], [156, 198], [373, 326]]]"], 65.879),
    (["model.backbone={type: darknet_tiny}", "model.neck={type: yolov3_tiny}",
      "model.anchors=[[[10, 14], [23, 27], [37, 58]], [[81, 82], [135, 169], [344, 319]]]"], 5.571),
])
def test_conv_gflop_matches_darknets_count(recipe, darknet_bflops, demo_recipe):
    cfg = api.load(demo_recipe, ["model.backbone={type: darknet53}", "model.neck={type: yolov3}",
                                 "model.input_size=416"] + recipe)
    net = build_detector(cfg, len(COCO80))
    assert conv_gflop(net, 416) == pytest.approx(darknet_bflops, rel=2e-3)


def test_benchmark_verb_times_training_and_inference(tmp_path, invoke, sets, demo_recipe):
    out = tmp_path / "speed.json"
    result = invoke("benchmark", demo_recipe, "--train-steps", 2, "--warmup", 1, "--batch-sizes", "1,2",
                    "--runs", 2, "--json", out, *sets(TINY_DEMO))
    assert result.exit_code == 0, result.output
    assert "training:" in result.output and "inference (fused graph), batch 2, 64 px" in result.output
    figures = json.loads(out.read_text())
    train = figures["train"]
    assert train["batch_size"] == 4 and train["steps"] == 2 and train["img_s"] > 0
    assert train["img_s"] == pytest.approx(4 / train["s_per_step"])
    assert 0 <= train["data_wait_s"] < train["s_per_step"]
    block = figures["inference"]
    assert block["fused"] is True                       # what eval and predict run on one CPU
    assert set(block["batches"]) == {"1", "2"}
    for batch, row in block["batches"].items():
        assert row["gflops"] == pytest.approx(block["gflop_per_image"] * int(batch) / (row["ms"] / 1000))
    result = invoke("benchmark", demo_recipe, "--train-steps", 0, "--batch-sizes", "1", "--runs", 1,
                    "--no-fuse", "--json", out, *sets(TINY_DEMO))
    assert result.exit_code == 0, result.output
    assert "training:" not in result.output and "inference, batch 1, 64 px" in result.output
    assert json.loads(out.read_text())["inference"]["fused"] is False


def test_benchmark_times_a_deployed_model_beside_the_recipe(tmp_path, invoke, sets, demo_recipe):
    import mxnet as mx
    from gluon_yolo3.deploy.export import export_onnx
    recipe = api.load(demo_recipe, TINY_DEMO)
    net = build_detector(recipe, len(api.class_names(recipe)))
    net.initialize()
    net(mx.nd.zeros((1, 3, 64, 64)))
    net.save_parameters(str(tmp_path / "w.params"))
    onnx_file = export_onnx(recipe, tmp_path / "w.params", tmp_path / "onnx", batch_size=1, dynamic=False)["onnx"]
    out = tmp_path / "speed.json"
    result = invoke("benchmark", demo_recipe, "--train-steps", 0, "--batch-sizes", "1,2", "--runs", 1,
                    "--deployed", onnx_file, "--json", out, *sets(TINY_DEMO))
    assert result.exit_code == 0, result.output
    assert f"onnx ({onnx_file}), batch 2, 64 px" in result.output      # batch 1 export, run in two chunks
    deployed = json.loads(out.read_text())["deployed"][str(onnx_file)]
    assert deployed["model"] == "onnx" and set(deployed["batches"]) == {"1", "2"}
    # exported at 64 px: refused, with the file named, for a recipe at 96
    result = invoke("benchmark", demo_recipe, "--train-steps", 0, "--batch-sizes", "1", "--runs", 1,
                    "--deployed", onnx_file, *sets(TINY_DEMO + ["model.input_size=96"]))
    assert result.exit_code != 0 and str(onnx_file) in result.output and "64 px" in result.output


def test_benchmark_names_a_bad_recipe_key(invoke, demo_recipe):
    result = invoke("benchmark", demo_recipe, "--set", "train.bach_size=4")
    assert result.exit_code != 0 and "batch_size" in result.output


def test_training_gflop_counts_both_gradients_but_none_for_the_image():
    from mxnet.gluon import nn
    net = nn.HybridSequential()
    net.add(nn.Conv2D(8, 3, padding=1, in_channels=3, use_bias=False),            # reads the image
            nn.Conv2D(4, 1, strides=2, in_channels=8, use_bias=False))             # 8 x 8 output
    first, second = 2 * 16 * 16 * 8 * 3 * 9, 2 * 8 * 8 * 4 * 8
    assert conv_gflop(net, 16) == pytest.approx((first + second) / 1e9)
    # forward + weight gradient for both; input gradient for the second only
    assert conv_gflop(net, 16, training=True) == pytest.approx((2 * first + 3 * second) / 1e9)
