"""OpenVINO out (`export --format openvino`, `quantize --runtime openvino`): the COCO zoo model's IR gives the MXNet
model's float32 detections on Darknet's dog.jpg (shipped in zoo/), at any batch and multiple of 32; predict, eval and
benchmark take it; bfloat16 on a CPU without it and a missing openvino extra get clear errors; int8 and bf16 find on
Darknet's sample photos what float32 finds. int8 and bf16 mAP on BCCD: test_zoo_bccd.py."""
import copy
import json
import sys

import mxnet as mx
import numpy as np
import pytest

from gluon_yolo3 import amx, api
from gluon_yolo3.boxes import iou_pairs
from gluon_yolo3.deploy.export import DecodedOutputs
from gluon_yolo3.deploy.openvino_ir import write_ir
from gluon_yolo3.inference.deployed import load_deployed

pytestmark = pytest.mark.slow          # an export of the COCO yolov3-tiny: a few seconds


@pytest.fixture(scope="module")
def coco(repo):
    """(recipe file, zoo folder, recipe dict) of the committed COCO yolov3-tiny (zoo/yolov3_tiny_coco)."""
    folder = repo / "zoo/yolov3_tiny_coco"
    return folder / "recipe.yaml", folder, api.load(folder / "recipe.yaml", [])


@pytest.fixture(scope="module")
def exported(coco, tmp_path_factory, invoke):
    """The COCO zoo model exported through the CLI to an OpenVINO folder (float32)."""
    recipe, zoo, _ = coco
    out = tmp_path_factory.mktemp("openvino") / "fp32"
    result = invoke("export", recipe, "--weights", zoo, "--format", "openvino", "--out", out)
    assert result.exit_code == 0, result.output
    assert f"predict {recipe} --exported {out}" in result.output
    return out


def detections(invoke, recipe, image, out, *source):
    """`predict` of one image -> its detections (class, score, box in original pixels), by descending score."""
    result = invoke("predict", recipe, image, *source, "--out", out)
    assert result.exit_code == 0, result.output
    return json.loads((out / "detections.json").read_text())[0]["detections"]


def test_export_gives_the_mxnet_detections_on_a_photo(coco, exported, invoke, tmp_path):
    """Same classes, scores within 1e-4 and box corners within 0.05 px of the MXNet float32 model on dog.jpg (768 x
    576). The tolerance bites: the MXNet model with its anchors transposed (w <-> h) moves boxes by pixels."""
    recipe, zoo, cfg = coco
    image = zoo / "dog.jpg"
    reference = detections(invoke, recipe, image, tmp_path / "mx", "--weights", zoo)
    got = detections(invoke, recipe, image, tmp_path / "ov", "--exported", exported)
    assert {d["class"] for d in reference} >= {"bicycle", "dog", "car"}
    assert [d["class"] for d in got] == [d["class"] for d in reference]
    for a, b in zip(reference, got):
        assert abs(a["score"] - b["score"]) < 1e-4 and np.allclose(a["box"], b["box"], atol=0.05), (a, b)
    transposed = copy.deepcopy(cfg)
    transposed["model"]["anchors"] = [[[h, w] for w, h in scale] for scale in cfg["model"]["anchors"]]
    wrong = api.Predictor(transposed, zoo).predict_one(str(image))
    best = {d["class"]: d["box"] for d in reversed(reference)}
    moved = [np.abs(np.array(best[n]) - b).max() for n, b in zip(wrong["names"], wrong["boxes"]) if n in best]
    assert moved and max(moved) > 1.0


def test_the_ir_runs_any_batch_and_multiple_of_32(coco, exported):
    """Raw outputs (before NMS) equal MXNet's decoded outputs at shapes other than the export's; the IR's input is
    dynamic and its deploy info travels inside it."""
    _, zoo, cfg = coco
    detector = load_deployed(exported)
    assert detector.model.inputs[0].get_partial_shape().is_dynamic
    assert json.loads((exported / "deploy.json").read_text()) == detector.info
    assert detector.info["format"] == "openvino" and detector.info["precision"] == "float32"
    assert detector.config["INFERENCE_PRECISION_HINT"] == "f32"     # never OpenVINO's bf16 default on AMX
    core = DecodedOutputs(api.load_detector(cfg, zoo, hybridize=False))
    rng = np.random.default_rng(0)
    for batch, size in ((2, 320), (3, 96)):
        x = rng.normal(0, 1, (batch, 3, size, size)).astype(np.float32)
        reference = [o.asnumpy() for o in core(mx.nd.array(x))]
        got = detector.outputs(x)
        for name, r in zip(("boxes", "objectness", "class_scores"), reference):
            np.testing.assert_allclose(got[name], r, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(r).max()), err_msg=name)
    assert set(detector.requests) == {(2, 3, 320, 320), (3, 3, 96, 96)}     # one compiled model per shape


def test_export_refuses_the_fixed_shape_options_of_onnx(coco, invoke, tmp_path):
    recipe, zoo, _ = coco
    for extra in (["--no-dynamic"], ["--batch-size", 8]):
        result = invoke("export", recipe, "--weights", zoo, "--format", "openvino", "--out", tmp_path / "ov", *extra)
        assert result.exit_code == 2 and "are for --format onnx" in result.output, result.output
    assert not (tmp_path / "ov").exists()


def test_benchmark_times_the_openvino_model(coco, exported, invoke, tmp_path):
    recipe, zoo, _ = coco
    out = tmp_path / "speed.json"
    result = invoke("benchmark", recipe, "--weights", zoo, "--train-steps", 0, "--batch-sizes", "1,2", "--runs", 1,
                    "--deployed", exported, "--json", out)
    assert result.exit_code == 0, result.output
    assert f"openvino ({exported}), batch 2, 416 px" in result.output
    assert json.loads(out.read_text())["deployed"][str(exported)]["model"] == "openvino"


def test_bfloat16_on_a_cpu_without_it_gets_the_clear_error(coco, exported, invoke, tmp_path, monkeypatch):
    """As every bfloat16 path: the export refuses at once, and a bfloat16 IR written elsewhere refuses to load."""
    recipe, zoo, _ = coco
    bf16 = tmp_path / "bf16"
    ir = load_deployed(exported)
    write_ir(ir.model, {**ir.info, "precision": "bfloat16"}, bf16)
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_vnni amx_tile amx_int8\n")
    monkeypatch.setattr(amx, "CPUINFO", info)
    result = invoke("export", recipe, "--weights", zoo, "--format", "openvino", "--precision", "bfloat16",
                    "--out", tmp_path / "refused")
    assert result.exit_code == 2
    assert "--precision bfloat16 needs a CPU with amx_bf16 or avx512_bf16" in result.output
    assert not (tmp_path / "refused").exists()
    with pytest.raises(ValueError, match="OpenVINO bfloat16 model needs a CPU with amx_bf16 or avx512_bf16"):
        load_deployed(bf16)
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n")
    assert load_deployed(bf16).config["INFERENCE_PRECISION_HINT"] == "bf16"


def test_a_missing_openvino_extra_names_the_pip_install(coco, exported, invoke, tmp_path, monkeypatch):
    recipe, zoo, _ = coco
    monkeypatch.setitem(sys.modules, "openvino", None)          # `import openvino` raises ImportError
    install = 'pip install "numpy==1.23.5" -e ".[openvino]"'
    for args in (["export", recipe, "--weights", zoo, "--format", "openvino", "--out", tmp_path / "ov"],
                 ["quantize", recipe, "--weights", zoo, "--runtime", "openvino", "--out", tmp_path / "q"],
                 ["predict", recipe, zoo / "dog.jpg", "--exported", exported, "--out", tmp_path / "p"]):
        result = invoke(*args)
        assert result.exit_code == 2 and "OpenVINO is not installed" in result.output, result.output
        assert install in result.output.replace("\n", "")
    assert not (tmp_path / "ov").exists() and not (tmp_path / "q").exists()


# ------------------------------------------------------------------ int8 on Darknet's photos (../shared)

@pytest.fixture(scope="module")
def photos(repo):
    """(raccoon photos to calibrate on, Darknet's sample photos), beside the checkout; skip when absent."""
    raccoon, samples = repo.parent / "shared/datasets/raccoon", repo.parent / "shared/weights/darknet/samples"
    if not (raccoon / "Annotations").is_dir() or not sorted(samples.glob("*.jpg")):
        pytest.skip(f"raccoon photos ({raccoon}) or Darknet's samples ({samples}) not found")
    return raccoon, sorted(samples.glob("*.jpg"))


@pytest.mark.dataset
def test_int8_and_bf16_find_on_darknets_photos_what_float32_finds(coco, photos, invoke, tmp_path):
    """int8 calibrated on 32 raccoon photos (COCO itself is not here), and bf16 where the CPU has it: on each of
    Darknet's 7 sample photos, the same classes as many times as the float32 model, each box on a float32 box of its
    class (IoU >= 0.7; VOC counts 0.5 a hit)."""
    recipe, zoo, _ = coco
    raccoon, samples = photos
    commands = {"int8": ["quantize", recipe, "--weights", zoo, "--runtime", "openvino", "--calib", 32,
                         "--set", f"data.root={raccoon}", "--out", tmp_path / "int8"]}
    if amx.cpu_bf16():
        commands["bf16"] = ["export", recipe, "--weights", zoo, "--format", "openvino", "--precision", "bfloat16",
                            "--out", tmp_path / "bf16"]
    for kind, command in commands.items():
        result = invoke(*command)
        assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "int8/deploy.json").read_text())["precision"] == "int8"
    found = 0
    for image in samples:
        reference = detections(invoke, recipe, image, tmp_path / "mx", "--weights", zoo)
        for kind in commands:
            got = detections(invoke, recipe, image, tmp_path / f"{kind}_pred", "--exported", tmp_path / kind)
            assert sorted(d["class"] for d in got) == sorted(d["class"] for d in reference), (kind, image.name)
            for d in got:
                twins = np.array([r["box"] for r in reference if r["class"] == d["class"]], np.float32)
                assert iou_pairs(np.array([d["box"]], np.float32), twins).max() >= 0.7, (kind, image.name, d)
        found += len(reference)
    assert found >= 15
