"""int8 quantization (MXNet oneDNN) of the trained demo: real int8 convolutions, scores alive, mAP close to
fp32 as `eval --deployed` reports it."""
import json

import mxnet as mx
import numpy as np
import pytest

from gluon_yolo3 import api
from gluon_yolo3.deploy.quantize import calibration_images
from gluon_yolo3.inference.deployed import load_quantized

MAX_MAP_DROP = 0.05


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, demo_sets, invoke, sets, trained_demo):
    recipe, run = trained_demo
    out = tmp_path_factory.mktemp("int8") / "int8"
    result = invoke("quantize", recipe["_file_"], "--weights", run, "--calib", 32, "--out", out, *sets(demo_sets))
    assert result.exit_code == 0, result.output
    return recipe, run, out


def test_convolutions_run_in_int8(quantized):
    _, _, out = quantized
    graph = json.loads((out / "trunk-symbol.json").read_text())
    convs = [n for n in graph["nodes"] if n["op"] == "_sg_mkldnn_conv"]
    int8 = [n for n in convs if n.get("attrs", {}).get("quantized") == "true"]
    # yolov3-tiny: 11 conv + BN + LeakyReLU layers in int8; the 2 linear output convolutions stay fp32
    assert len(convs) == 13 and len(int8) == 11
    assert all("yolohead" not in n["name"] for n in int8)
    info = json.loads((out / "deploy.json").read_text())
    assert info["format"] == "int8" and info["calib_images"] == 32


def test_int8_scores_follow_fp32(quantized):
    recipe, run, out = quantized
    x = mx.nd.array(calibration_images(recipe, 48)[32:])          # 16 images not used for calibration
    int8 = load_quantized(out)
    fp32 = api.load_detector(recipe, run)
    raw_q = [r.asnumpy() for r in int8.raw(x)]
    raw_f = [r.asnumpy() for r in fp32.head(*fp32.neck(*fp32.backbone(x)))]
    for q, f in zip(raw_q, raw_f):
        objectness_q, objectness_f = q[..., 4].ravel(), f[..., 4].ravel()
        assert np.abs(objectness_q).max() > 0, "every int8 objectness logit is 0"
        assert np.corrcoef(objectness_q, objectness_f)[0, 1] > 0.98
        assert np.abs(q - f).max() < 0.1 * np.abs(f).max() + 0.5
    ids, scores, _ = int8(x)
    best = scores.asnumpy()[:, 0, 0]
    assert (best > 0.3).sum() >= 8, "int8 scores collapsed"


def test_eval_reports_int8_map_beside_fp32(quantized, tmp_path, compared_maps, demo_sets, invoke, sets):
    recipe, run, out = quantized
    result = invoke("eval", recipe["_file_"], "--weights", run, "--deployed", out, "--report", tmp_path,
                    "--no-progress", *sets(demo_sets))
    assert result.exit_code == 0, result.output
    fp32, label, int8, delta, line = compared_maps(result.output)
    assert label == "int8" and abs(delta - (int8 - fp32)) < 2e-4
    assert fp32 > 0.15, f"the demo model did not train ({line})"
    assert int8 > fp32 - MAX_MAP_DROP, line


def test_predict_runs_the_int8_model(quantized, tmp_path, demo_sets, invoke, sets):
    import cv2

    from gluon_yolo3.data.synthetic import SyntheticShapes
    recipe, run, out = quantized
    data = SyntheticShapes(num_images=6, image_size=64, split="val", min_size=0.25, clutter=False)
    paths = []
    for i in range(len(data)):
        paths.append(tmp_path / f"img{i}.png")
        cv2.imwrite(str(paths[-1]), cv2.cvtColor(data[i][0], cv2.COLOR_RGB2BGR))
    found = {}
    for name, source in (("fp32", ["--weights", run]), ("int8", ["--exported", out])):
        result = invoke("predict", recipe["_file_"], *paths, *source, "--out", tmp_path / name,
                        "--score-thresh", "0.2", *sets(demo_sets))
        assert result.exit_code == 0, result.output
        records = json.loads((tmp_path / name / "detections.json").read_text())
        found[name] = [sorted(d["class"] for d in r["detections"]) for r in records]
    assert sum(map(len, found["int8"])) >= 2, found
    agree = sum(a == b for a, b in zip(found["fp32"], found["int8"]))
    assert agree >= 4, found


def test_int8_model_loads_in_a_fresh_process(quantized):
    """Nothing but the deploy runtime imported: the NMS registry must fill itself."""
    import subprocess
    import sys
    _, _, out = quantized
    code = ("import numpy as np; from gluon_yolo3.inference.deployed import load_deployed; "
            f"d = load_deployed({str(out)!r}); ids, scores, boxes = d(np.zeros((1, 3, 64, 64), np.float32)); "
            "print(d.info['format'], ids.shape)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "int8 (1, 100, 1)" in result.stdout


def test_quantize_rejects_bad_calibration(tmp_path, demo_sets, invoke, sets, trained_demo):
    recipe, run = trained_demo
    result = invoke("quantize", recipe["_file_"], "--weights", run, "--calib", 5000, "--out", tmp_path / "q",
                    *sets(demo_sets))
    assert result.exit_code == 2 and "holds only 1000 images" in result.output
    result = invoke("quantize", recipe["_file_"], "--weights", run, "--calib-mode", "kl", "--out", tmp_path / "q",
                    *sets(demo_sets))
    assert result.exit_code == 2 and "naive, entropy" in result.output
    assert not (tmp_path / "q").exists()
