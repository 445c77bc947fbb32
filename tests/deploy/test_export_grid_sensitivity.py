"""Exports of a network with yolov4-tiny's channel split and grid sensitivity (zoo/yolov4_tiny_coco, Darknet's COCO
weights): ONNX equals the MXNet graph at any multiple of 32, and MXNet int8 finds on dog.jpg what float32 finds,
decoding with the same `scale_x_y`."""
import json
import shutil

import mxnet as mx
import numpy as np
import onnxruntime as ort
import pytest

from gluon_yolo3 import api
from gluon_yolo3.deploy.export import DecodedOutputs, export_onnx
from gluon_yolo3.deploy.quantize import quantize_detector
from gluon_yolo3.inference.deployed import deployed_predictor, load_deployed


@pytest.fixture(scope="module")
def zoo(repo):
    folder = repo / "zoo" / "yolov4_tiny_coco"
    return api.load(folder / "recipe.yaml"), folder


def test_onnx_equals_the_mxnet_graph(zoo, tmp_path):
    recipe, folder = zoo
    assert recipe["model"]["scale_x_y"] == 1.05
    export_onnx(recipe, folder, tmp_path)
    info = json.loads((tmp_path / "deploy.json").read_text())
    assert info["scale_x_y"] == [1.05, 1.05]
    core = DecodedOutputs(api.load_detector(recipe, folder, hybridize=False))
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch, size in ((1, 416), (2, 320)):
        x = np.random.default_rng(size).uniform(0, 1, (batch, 3, size, size)).astype(np.float32)
        for name, ref, got in zip(("boxes", "objectness", "class_scores"), core(mx.nd.array(x)),
                                  session.run(None, {"data": x})):
            ref = ref.asnumpy()
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(ref).max()), err_msg=name)


def voc_folder(root, photo, count=4):
    """A Pascal VOC folder of `count` copies of `photo`, each with one `dog` box (calibration data)."""
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for i in range(count):
        shutil.copy(photo, root / "JPEGImages" / f"{i}.jpg")
        (root / "Annotations" / f"{i}.xml").write_text(
            f"<annotation><filename>{i}.jpg</filename><size><width>768</width><height>576</height><depth>3</depth>"
            "</size><object><name>dog</name><difficult>0</difficult><bndbox><xmin>128</xmin><ymin>210</ymin>"
            "<xmax>328</xmax><ymax>530</ymax></bndbox></object></annotation>")
    return root


@pytest.mark.slow
def test_int8_finds_what_float32_finds(zoo, tmp_path):
    recipe, folder = zoo
    data = voc_folder(tmp_path / "voc", folder / "dog.jpg")
    calib = api.load(folder / "recipe.yaml", [f"data.root={data}", "data.classes=null"])
    quantize_detector(calib, folder, tmp_path / "int8", calib=3)     # 3 of the 4 photos are the split's training
    assert load_deployed(tmp_path / "int8").post.decoder.scale_x_y == (1.05, 1.05)
    photo = api.read_image(folder / "dog.jpg")
    ours = deployed_predictor(tmp_path / "int8", recipe).predict_one(photo)
    fp32 = api.Predictor(recipe, folder).predict_one(photo)
    assert sorted(ours["names"]) == sorted(fp32["names"]) == ["bicycle", "car", "dog", "truck"]
    for name, box, score in zip(fp32["names"], fp32["boxes"], fp32["scores"]):
        k = list(ours["names"]).index(name)
        assert np.abs(ours["boxes"][k] - box).max() < 15 and abs(ours["scores"][k] - score) < 0.15, name
