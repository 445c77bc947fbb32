"""int8 quantization for ONNX Runtime (`quantize --runtime onnxruntime`) of the trained demo: int8
convolutions in the file, the head's output convolutions and the decoding left in fp32, outputs close to the
fp32 export, mAP close to fp32 as `eval --deployed` reports it."""
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from gluon_yolo3.deploy.export import export_onnx
from gluon_yolo3.deploy.onnx_int8 import downstream_nodes, head_output_nodes
from gluon_yolo3.deploy.quantize import calibration_images
from gluon_yolo3.inference.deployed import OnnxDetector, load_deployed

MAX_MAP_DROP = 0.05


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, demo_sets, invoke, sets, trained_demo):
    recipe, run = trained_demo
    out = tmp_path_factory.mktemp("onnx_int8") / "int8"
    result = invoke("quantize", recipe["_file_"], "--weights", run, "--runtime", "onnxruntime", "--calib", 32,
                    "--batch-size", 4, "--out", out, *sets(demo_sets))
    assert result.exit_code == 0, result.output
    return recipe, run, out


def weight_source(graph):
    """Conv node name -> how its weight arrives: 'int8' (DequantizeLinear of an int8 initializer) or 'fp32'."""
    producers = {o: n for n in graph.node for o in n.output}
    initializers = {i.name: i for i in graph.initializer}
    kinds = {}
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        source = producers.get(node.input[1])
        if source is not None and source.op_type == "DequantizeLinear":
            assert initializers[source.input[0]].data_type == TensorProto.INT8
            kinds[node.name] = "int8"
        else:
            assert node.input[1] in initializers
            kinds[node.name] = "fp32"
    return kinds


def test_convolutions_are_int8_except_the_head_outputs(quantized):
    _, _, out = quantized
    model = onnx.load(str(out / "model.onnx"))
    info = json.loads((out / "deploy.json").read_text())
    kinds = weight_source(model.graph)
    head = head_output_nodes(model.graph, info["head_output_weights"])
    # yolov3-tiny: 11 conv + BN + LeakyReLU layers in int8 (BN folded), the 2 linear output convolutions fp32
    assert len(kinds) == 13 and len(head) == 2
    assert sorted(k for k, v in kinds.items() if v == "fp32") == sorted(head)
    # nothing after the output convolutions is quantized: the decoding runs on fp32 tensors
    after = downstream_nodes(model.graph, head)
    assert not [n.name for n in model.graph.node if n.name in after and "QuantizeLinear" in n.op_type]
    assert info["format"] == "onnx" and info["precision"] == "int8" and info["calib_images"] == 32
    assert info["batch_size"] == 4 and not info["dynamic"]
    embedded = json.loads({e.key: e.value for e in model.metadata_props}["gluon_yolo3"])
    assert embedded == info


def test_int8_outputs_follow_the_fp32_export(quantized, tmp_path):
    recipe, run, out = quantized
    x = calibration_images(recipe, 48)[32:]                      # 16 images not used for calibration
    fp32 = OnnxDetector(export_onnx(recipe, run, tmp_path / "fp32")["onnx"]).outputs(x)
    int8 = load_deployed(out / "model.onnx").outputs(x)        # batch 4 model: four chunks
    assert int8["objectness"].shape == fp32["objectness"].shape == (16, fp32["objectness"].shape[1])
    assert np.corrcoef(int8["objectness"].ravel(), fp32["objectness"].ravel())[0, 1] > 0.98
    confident = fp32["objectness"] > 0.5
    assert confident.sum() >= 8, "the demo model did not train"
    shift = np.abs(int8["boxes"] - fp32["boxes"])[confident].max()
    assert shift < 0.1 * recipe["model"]["input_size"], f"box corners moved {shift:.1f} px"


def test_eval_reports_onnx_int8_map_beside_fp32(quantized, tmp_path, compared_maps, demo_sets, invoke, sets):
    recipe, run, out = quantized
    result = invoke("eval", recipe["_file_"], "--weights", run, "--deployed", out / "model.onnx", "--report",
                    tmp_path, "--no-progress", *sets(demo_sets))
    assert result.exit_code == 0, result.output
    fp32, label, int8, _, line = compared_maps(result.output)
    assert label == "onnx-int8"
    assert fp32 > 0.15, f"the demo model did not train ({line})"
    assert int8 > fp32 - MAX_MAP_DROP, line


def test_quantize_onnx_rejects_bad_arguments(tmp_path, demo_sets, invoke, sets, trained_demo):
    recipe, run = trained_demo
    for args, message in ((["--runtime", "tensorrt"], "mxnet, onnxruntime or openvino"),
                          (["--runtime", "onnxruntime", "--calib", 2, "--batch-size", 4], "at least the batch size"),
                          (["--runtime", "onnxruntime", "--calib-mode", "kl"], "naive, entropy")):
        result = invoke("quantize", recipe["_file_"], "--weights", run, "--out", tmp_path / "q", *args,
                        *sets(demo_sets))
        assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "q").exists()


def test_downstream_nodes_by_hand():
    """a -> b -> d, a -> c, e alone: downstream of b is {b, d}; of a, {a, b, c, d}."""
    def node(name, inputs, output):
        return helper.make_node("Relu", inputs, [output], name=name)
    graph = helper.make_graph([node("a", ["x"], "ta"), node("b", ["ta"], "tb"), node("c", ["ta"], "tc"),
                               node("d", ["tb"], "td"), node("e", ["x"], "te")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])], [])
    assert downstream_nodes(graph, ["b"]) == {"b", "d"}
    assert downstream_nodes(graph, ["a"]) == {"a", "b", "c", "d"}
    assert downstream_nodes(graph, []) == set()


def test_quantize_head_makes_every_convolution_int8(tmp_path, demo_sets, invoke, sets, trained_demo):
    recipe, run = trained_demo
    result = invoke("quantize", recipe["_file_"], "--weights", run, "--runtime", "onnxruntime", "--calib", 8,
                    "--quantize-head", "--out", tmp_path / "q", *sets(demo_sets))
    assert result.exit_code == 0, result.output
    model = onnx.load(str(tmp_path / "q/model.onnx"))
    info = json.loads((tmp_path / "q/deploy.json").read_text())
    assert set(weight_source(model.graph).values()) == {"int8"}
    # the head's int8 weights come through DequantizeLinear nodes named after them
    producers = {o: n for n in model.graph.node for o in n.output}
    head = [n.name for n in model.graph.node if n.op_type == "Conv"
            and producers[n.input[1]].input[0].startswith(tuple(info["head_output_weights"]))]
    assert len(head) == 2
    # int8 output convolutions hand their output over through one QuantizeLinear/DequantizeLinear pair; the
    # decoding after it runs on fp32 tensors
    outputs = {o for n in model.graph.node if n.name in head for o in n.output}
    after = downstream_nodes(model.graph, head) - set(head)
    requantized = [n for n in model.graph.node if n.name in after and n.op_type == "QuantizeLinear"]
    assert len(requantized) == 2 and all(n.input[0] in outputs for n in requantized)
    assert len(after) > 4 * len(requantized)
