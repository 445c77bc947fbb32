"""Export: the MXNet symbol folder (any multiple-of-32 input), ONNX checked with onnxruntime, the numpy NMS
against the NMS registry, and predict/eval running from the exports."""
import json

import cv2
import mxnet as mx
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from gluon_yolo3 import api
from gluon_yolo3.deploy.export import DecodedOutputs
from gluon_yolo3.postprocess.numpy_nms import build_numpy_nms
from gluon_yolo3.registry import NMS


@pytest.fixture(scope="module")
def demo(trained_demo):
    return trained_demo


@pytest.fixture(scope="module")
def exports(demo, tmp_path_factory, demo_sets, invoke, sets):
    """The demo exported three ways through the CLI: mxnet, onnx (dynamic), onnx (fixed batch 1)."""
    recipe, run = demo
    root = tmp_path_factory.mktemp("exports")
    for fmt, folder, extra in (("mxnet", "mx", []), ("onnx", "onnx", []), ("onnx", "onnx_fixed", ["--no-dynamic"])):
        result = invoke("export", recipe["_file_"], "--weights", run, "--format", fmt, "--out", root / folder,
                        *extra, *sets(demo_sets))
        assert result.exit_code == 0, result.output
    return root


def images(count, size, seed=0):
    return np.random.default_rng(seed).normal(0, 1, (count, 3, size, size)).astype(np.float32)


def test_mxnet_export_runs_at_any_multiple_of_32(demo, exports):
    recipe, run = demo
    info = json.loads((exports / "mx" / "deploy.json").read_text())
    assert info["format"] == "mxnet" and info["classes"] == ["circle", "square", "triangle"]
    block = mx.gluon.SymbolBlock.imports(str(exports / "mx" / info["symbol"]), ["data"],
                                         str(exports / "mx" / info["params"]))
    net = api.load_detector(recipe, run, fuse=False)    # the plain graph: the export keeps every operator
    for size in (64, 96, 160):
        x = mx.nd.array(images(2, size))
        for ours, theirs in zip(block(x), net(x)):
            np.testing.assert_allclose(ours.asnumpy(), theirs.asnumpy(), rtol=1e-5, atol=1e-4)
    # the anchors travel with the parameters, as graph constants
    params = mx.nd.load(str(exports / "mx" / info["params"]))
    anchors = [v.asnumpy() for k, v in sorted(params.items()) if "anchors" in k]
    assert [a.reshape(-1, 2).tolist() for a in anchors] == recipe["model"]["anchors"]


def test_onnx_outputs_equal_mxnet(demo, exports):
    recipe, run = demo
    path = exports / "onnx" / "model.onnx"
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == ["data"]          # weights are not graph inputs
    net = api.load_detector(recipe, run, hybridize=False)
    core = DecodedOutputs(net)
    # every weight (BatchNorm statistics and anchors included) is an initializer, plus a few small constants
    weights = sum(p.data().size for p in core.collect_params().values())
    stored = sum(int(np.prod(i.dims)) for i in model.graph.initializer)
    assert weights <= stored < weights + 1000, (weights, stored)
    assert [o.name for o in model.graph.output] == ["boxes", "objectness", "class_scores"]
    assert all(n.op_type not in ("NonMaxSuppression", "TopK") for n in model.graph.node)   # no NMS inside
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, size in ((1, 64), (2, 96), (3, 128)):
        x = images(batch, size, seed=size)
        ref = [o.asnumpy() for o in core(mx.nd.array(x))]
        got = session.run(None, {"data": x})
        assert [g.shape for g in got] == [r.shape for r in ref]
        for name, r, g in zip(("boxes", "objectness", "class_scores"), ref, got):
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(r).max()), err_msg=name)
    fixed = onnx.load(str(exports / "onnx_fixed" / "model.onnx"))
    dims = [d.dim_value for d in fixed.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 64, 64]


def test_fixed_batch_onnx_runs_any_batch(exports):
    from gluon_yolo3.inference.deployed import OnnxDetector
    x = images(3, 64, seed=5)
    free = OnnxDetector(exports / "onnx" / "model.onnx").outputs(x)
    fixed = OnnxDetector(exports / "onnx_fixed" / "model.onnx").outputs(x)     # batch 1, run 3 times
    for name, value in free.items():
        np.testing.assert_allclose(fixed[name], value, rtol=1e-5, atol=1e-4, err_msg=name)


def test_onnx_metadata_carries_preprocessing_and_nms(exports):
    model = onnx.load(str(exports / "onnx" / "model.onnx"))
    meta = {p.key: json.loads(p.value) for p in model.metadata_props}["gluon_yolo3"]
    assert meta["input_size"] == 64 and meta["mean"] == [0.485, 0.456, 0.406]
    assert meta["nms"]["type"] == "class_aware" and meta["classes"] == ["circle", "square", "triangle"]


# ---------------------------------------------------------------------------------- numpy NMS

def random_candidates(seed, batch=2, boxes=300, classes=4):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 100, (batch, boxes, 2))
    wh = rng.uniform(5, 40, (batch, boxes, 2))
    scores = rng.uniform(0, 1, (batch, boxes, 1)) * rng.uniform(0, 1, (batch, boxes, classes))
    return np.concatenate([xy, xy + wh], -1).astype(np.float32), scores.astype(np.float32)


@pytest.mark.parametrize("cfg", [
    {"type": "class_aware"}, {"type": "multi_label", "topk": 50, "max_det": 20}, {"type": "class_agnostic"},
    {"type": "soft_nms", "topk": 100, "max_det": 30},
    {"type": "soft_nms", "method": "gaussian", "sigma": 0.3, "topk": 100, "max_det": 30},
    {"type": "diou_nms", "iou_thresh": 0.3, "topk": 100, "max_det": 30},
])
def test_numpy_nms_equals_the_registry(cfg):
    cfg = {"score_thresh": 0.05, **cfg}
    boxes, scores = random_candidates(len(str(cfg)))
    block = NMS.build(dict(cfg))
    block.hybridize()
    ref = [o.asnumpy() for o in block(mx.nd.array(boxes), mx.nd.array(scores))]
    got = build_numpy_nms(cfg)(boxes, scores)
    assert (ref[0] >= 0).sum() > 10
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)


def test_numpy_nms_by_hand():
    boxes = np.array([[[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]]], np.float32)  # IoU(0, 1) = 9/11
    scores = np.array([[[0.9, 0.0], [0.0, 0.8], [0.7, 0.0]]], np.float32)
    ids, sc, bx = build_numpy_nms({"type": "class_aware", "max_det": 4})(boxes, scores)
    assert ids[0, :, 0].tolist() == [0, 1, 0, -1] and np.allclose(sc[0, :3, 0], [0.9, 0.8, 0.7])
    ids, sc, _ = build_numpy_nms({"type": "class_agnostic", "max_det": 4})(boxes, scores)
    assert ids[0, :, 0].tolist() == [0, 0, -1, -1]
    same = np.array([[[0.9], [0.8], [0.7]]], np.float32)
    _, sc, _ = build_numpy_nms({"type": "soft_nms", "max_det": 4})(boxes, same)
    assert np.allclose(sc[0, :3, 0], [0.9, 0.7, 0.8 * (1 - 9 / 11)])
    with pytest.raises(ValueError, match="did you mean 'soft_nms'"):
        build_numpy_nms({"type": "sofft_nms"})


# ------------------------------------------------------------------------------ predict and eval

@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    from gluon_yolo3.data.synthetic import SyntheticShapes
    folder = tmp_path_factory.mktemp("images")
    data = SyntheticShapes(num_images=4, image_size=(80, 100), split="val", min_size=0.25, clutter=False)
    paths = []
    for i in range(len(data)):
        path = folder / f"img{i}.png"
        cv2.imwrite(str(path), cv2.cvtColor(data[i][0], cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


@pytest.fixture
def predict(invoke, sets, demo_sets):
    """predict(demo, image_files, tmp_path, name, *source) -> detections.json of `predict` from the source."""
    def predict(demo, image_files, tmp_path, name, *source):
        recipe, _ = demo
        out = tmp_path / name
        result = invoke("predict", recipe["_file_"], *image_files, *source, "--out", out, "--score-thresh", "0.2",
                        *sets(demo_sets))
        assert result.exit_code == 0, result.output
        return json.loads((out / "detections.json").read_text())
    return predict


def test_predict_from_exports_matches_weights(demo, exports, image_files, tmp_path, predict):
    _, run = demo
    reference = predict(demo, image_files, tmp_path, "weights", "--weights", run)
    assert sum(len(r["detections"]) for r in reference) >= 3
    for name, source in (("exported", ["--exported", exports / "mx"]),
                         ("onnx", ["--onnx", exports / "onnx" / "model.onnx"]),
                         ("onnx_fixed", ["--onnx", exports / "onnx_fixed" / "model.onnx"])):
        records = predict(demo, image_files, tmp_path, name, *source)
        for ref, got in zip(reference, records):
            assert [d["class"] for d in got["detections"]] == [d["class"] for d in ref["detections"]], name
            for a, b in zip(ref["detections"], got["detections"]):
                assert abs(a["score"] - b["score"]) < 1e-4 and np.allclose(a["box"], b["box"], atol=0.02), name


def test_predict_needs_exactly_one_model(demo, exports, image_files, tmp_path, invoke):
    recipe, run = demo
    result = invoke("predict", recipe["_file_"], image_files[0], "--weights", run, "--onnx",
                    exports / "onnx" / "model.onnx", "--out", tmp_path)
    assert result.exit_code == 2 and "exactly one of --weights, --exported, --onnx" in result.output
    result = invoke("predict", recipe["_file_"], image_files[0], "--exported", tmp_path, "--out", tmp_path)
    assert result.exit_code == 2 and "no deploy.json" in result.output


def test_eval_of_onnx_model_equals_fp32(demo, exports, tmp_path, compared_maps, demo_sets, invoke, sets):
    recipe, run = demo
    result = invoke("eval", recipe["_file_"], "--weights", run, "--deployed", exports / "onnx" / "model.onnx",
                    "--report", tmp_path / "report", "--no-progress", *sets(demo_sets))
    assert result.exit_code == 0, result.output
    fp32, _, onnx_map, _, line = compared_maps(result.output)
    assert fp32 > 0.1 and abs(fp32 - onnx_map) < 1e-3, line
