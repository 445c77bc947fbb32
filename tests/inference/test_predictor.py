"""Predictor: a batch gives each image's own detections, the class filter, `stream` over images and videos (every
runtime: MXNet, an exported model, ONNX), and the trained demo following a moving square frame by frame."""
import mxnet as mx
import numpy as np
import pytest

from gluon_yolo3 import api
from gluon_yolo3.boxes import box_iou
from gluon_yolo3.inference.sources import Source, read_frames

SETS = ["model.input_size=64", "data.train.num_images=4", "data.val.num_images=2", "data.num_workers=0",
        "model.nms.score_thresh=0.0"]


@pytest.fixture(scope="module")
def random_demo(tmp_path_factory, demo_recipe):
    """(recipe, weights path): the demo at 64 px with random weights (seed 0)."""
    folder = tmp_path_factory.mktemp("random_demo")
    recipe = api.load(demo_recipe, SETS)
    net = api.build(recipe, len(api.class_names(recipe)))
    mx.random.seed(0)
    net.initialize(mx.init.Xavier(magnitude=2.0))
    net(mx.nd.zeros((1, 3, 64, 64)))
    net.save_parameters(str(folder / "w.params"))
    return recipe, folder / "w.params"


def same_detections(got, want):
    assert got["names"] == want["names"]
    np.testing.assert_array_equal(got["ids"], want["ids"])
    np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-4)
    np.testing.assert_allclose(got["boxes"], want["boxes"], atol=1e-2)


def images(count, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (40 + 7 * k, 50 + 3 * k, 3), dtype=np.uint8) for k in range(count)]


def test_a_batch_gives_each_image_its_own_detections(random_demo):
    recipe, weights = random_demo
    predictor = api.Predictor(recipe, weights, score_thresh=0.2)
    batch = images(5)
    got = predictor.predict(batch)
    assert len(got) == 5 and sum(len(d["ids"]) for d in got) > 0
    for image, det in zip(batch, got):
        same_detections(det, predictor.predict_one(image))
        assert (det["scores"] >= 0.2).all()
        assert (det["boxes"][:, [0, 2]] <= image.shape[1]).all() and (det["boxes"][:, [1, 3]] <= image.shape[0]).all()


def test_keep_classes_filters_and_names_the_known_ones(random_demo):
    recipe, weights = random_demo
    predictor = api.Predictor(recipe, weights, score_thresh=0.1)
    everything = predictor.predict(images(4))
    kept = predictor.keep_classes(["triangle", "circle"]).predict(images(4))
    for det, full in zip(kept, everything):
        mask = np.isin(full["ids"], [0, 2])                    # circle, triangle
        assert set(det["names"]) <= {"circle", "triangle"}
        np.testing.assert_allclose(det["boxes"], full["boxes"][mask], atol=1e-2)
    assert sum(len(d["ids"]) for d in kept) < sum(len(d["ids"]) for d in everything)
    with pytest.raises(ValueError, match="unknown class 'dog': the model's classes are circle, square, triangle"):
        predictor.keep_classes(["dog"])


def test_stream_over_images_and_a_video_equals_predicting_each(random_demo, tmp_path, moving_dog, write_video):
    recipe, weights = random_demo
    predictor = api.Predictor(recipe, weights, score_thresh=0.2)
    frames, _ = moving_dog(7)
    video = write_video(tmp_path / "clip.mp4", frames)
    import cv2
    for k, image in enumerate(images(3)):
        cv2.imwrite(str(tmp_path / f"img{k}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    results = list(predictor.stream([tmp_path / "img*.png", video], batch_size=4))
    decoded = list(read_frames([Source("video", str(video))]))
    assert [f.index for f, _ in results] == [None] * 3 + list(range(7))
    for (frame, det), image in zip(results, images(3)):
        np.testing.assert_array_equal(frame.image, image)
        same_detections(det, predictor.predict_one(image))
    for (frame, det), want in zip(results[3:], decoded):
        np.testing.assert_array_equal(frame.image, want.image)
        same_detections(det, predictor.predict_one(want.image))


@pytest.mark.slow
def test_every_runtime_streams_the_same_sources(random_demo, tmp_path, moving_dog, write_video):
    """MXNet export and ONNX give the plain graph's detections; int8 and bf16 (their own numbers) give in a stream
    what they give image by image."""
    from gluon_yolo3.amx import cpu_bf16
    from gluon_yolo3.deploy.export import export_mxnet, export_onnx
    from gluon_yolo3.deploy.quantize import quantize_detector
    from gluon_yolo3.inference.deployed import deployed_predictor
    recipe, weights = random_demo
    video = write_video(tmp_path / "clip.mp4", moving_dog(5)[0])
    decoded = [f.image for f in read_frames([Source("video", str(video))])]
    want = [det for _, det in api.Predictor(recipe, weights, score_thresh=0.2, fuse=False).stream([video])]
    export_mxnet(recipe, weights, tmp_path / "mx")
    onnx = export_onnx(recipe, weights, tmp_path / "onnx")["onnx"]
    for path in (tmp_path / "mx", onnx):
        got = [det for _, det in deployed_predictor(path, recipe, score_thresh=0.2).stream([video], batch_size=2)]
        assert len(got) == 5
        for g, w in zip(got, want):
            same_detections(g, w)
    quantize_detector(recipe, weights, tmp_path / "int8", calib=4)
    others = [deployed_predictor(tmp_path / "int8", recipe, score_thresh=0.2)]
    if cpu_bf16():
        others.append(api.Predictor(recipe, weights, score_thresh=0.2, precision="bfloat16"))
    for predictor in others:
        got = [det for _, det in predictor.stream([video], batch_size=3)]
        assert len(got) == 5
        for g, image in zip(got, decoded):
            same_detections(g, predictor.predict_one(image))


@pytest.mark.slow
def test_the_zoo_model_follows_a_moving_dog_frame_by_frame(repo, tmp_path, moving_dog, write_video):
    frames, boxes = moving_dog(16, step=6)
    video = write_video(tmp_path / "dog.mp4", frames)
    zoo = repo / "zoo/yolov3_tiny_coco"
    predictor = api.Predictor(api.load(zoo / "recipe.yaml"), zoo, score_thresh=0.5)
    results = list(predictor.stream([video], batch_size=8))
    assert [f.index for f, _ in results] == list(range(16))
    for (frame, det), box in zip(results, boxes):       # the dog moves 6 px a frame; a box that lagged would miss
        assert det["names"] == ["dog"], f"frame {frame.index}: {det['names']}"
        centre_offset = (det["boxes"][0, :2] + det["boxes"][0, 2:]) / 2 - (box[:2] + box[2:]) / 2
        assert np.abs(centre_offset).max() < 10 and box_iou(det["boxes"], box[None])[0, 0] > 0.6, (frame.index,
                                                                                                   det["boxes"], box)
