"""`predict` on what users have: a folder tree, globs, list files and videos, through the zoo's COCO model; the
annotated video and its JSON lines; labels written and read back by `data check`; bad files and frames skipped."""
import json

import cv2
import numpy as np
import pytest

from gluon_yolo3.boxes import box_iou
from gluon_yolo3.data.build import build_datasets
from gluon_yolo3.inference.video import open_video


@pytest.fixture(scope="module")
def zoo(repo):
    """(recipe path, weights folder) of zoo/yolov3_tiny_coco, Darknet's COCO yolov3-tiny."""
    return repo / "zoo/yolov3_tiny_coco/recipe.yaml", repo / "zoo/yolov3_tiny_coco"


@pytest.fixture
def predict(zoo, invoke):
    """predict(*args) -> Result: `gluon-yolo3 predict` with the zoo model, without a progress bar."""
    recipe, weights = zoo
    return lambda *args: invoke("predict", recipe, *args, "--weights", weights, "--no-progress")


def save(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


def records_by_image(out):
    return {r["image"]: r for r in json.loads((out / "detections.json").read_text())}


def json_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_folder_tree_glob_and_list_file_with_a_missing_image(predict, tmp_path, moving_dog):
    frames, boxes = moving_dog(4)
    tree = tmp_path / "tree"
    shots = [save(tree / "a.JPG", frames[0]), save(tree / "sub/b.png", frames[1]), save(tree / "sub/c.Jpeg", frames[2])]
    (tree / "notes.md").write_text("x")
    (tree / "sub/labels.csv").write_text("x")
    extra = save(tmp_path / "more/d.png", frames[3])
    listing = tmp_path / "list.txt"
    listing.write_text("more/d.png\nmissing.jpg\n")
    out = tmp_path / "out"
    result = predict(tree, str(tmp_path / "more/*.png"), listing, "--out", out)
    assert result.exit_code == 2, result.output
    assert "2 file(s) in the folders or glob matches are neither images nor videos: skipped" in result.output
    assert "warning: cannot read image" in result.output and "missing.jpg" in result.output
    assert "1 input(s) or frame(s) skipped" in result.output
    records = records_by_image(out)
    assert sorted(records) == sorted(str(p) for p in shots + [extra])      # d.png once, though named twice
    for path, box in zip(shots + [extra], boxes):
        record = records[str(path)]
        assert [d["class"] for d in record["detections"]] == ["dog"]
        assert box_iou(np.array([record["detections"][0]["box"]]), box[None])[0, 0] > 0.6
        assert cv2.imread(str(out / record["drawing"])).shape == (240, 320, 3)
    assert sorted(r["drawing"] for r in records.values()) == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]


def test_video_gives_an_annotated_video_and_json_lines(predict, tmp_path, moving_dog, write_video):
    frames, boxes = moving_dog(12, step=6)
    video = write_video(tmp_path / "walk.mp4", frames, fps=15)
    out = tmp_path / "out"
    result = predict(video, "--out", out, "--batch-size", "4")
    assert result.exit_code == 0, result.output
    assert "0 image(s), 12 video frame(s) from 1 video(s)" in result.output
    written = open_video(out / "walk.mp4")
    assert (written.info.fps, written.info.width, written.info.height) == (15, 320, 240)
    drawn = [image for _, _, image in written.frames()]
    assert len(drawn) == 12
    lines = json_lines(out / "walk.jsonl")
    assert [line["frame"] for line in lines] == list(range(12))
    assert [line["time"] for line in lines] == pytest.approx([i / 15 for i in range(12)], abs=1e-3)
    for line, box, image in zip(lines, boxes, drawn):
        assert [d["class"] for d in line["detections"]] == ["dog"]
        assert box_iou(np.array([line["detections"][0]["box"]]), box[None])[0, 0] > 0.6
        x1, y1 = (int(v) for v in line["detections"][0]["box"][:2])
        assert np.abs(image[y1 + 2, x1 + 5:x1 + 30].astype(int) - frames[0][0, 0]).sum() > 0   # the box is drawn
    result = predict(video, "--out", tmp_path / "sparse", "--every", "3", "--max-frames", "3")
    assert result.exit_code == 0, result.output
    assert [line["frame"] for line in json_lines(tmp_path / "sparse/walk.jsonl")] == [0, 3, 6]
    sparse = open_video(tmp_path / "sparse/walk.mp4")
    assert sparse.info.fps == 5 and len(list(sparse.frames())) == 3


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["voc", "yolo"])
def test_saved_labels_are_read_back_by_data_check(fmt, zoo, predict, invoke, tmp_path, moving_dog, write_video, repo):
    frames, _ = moving_dog(5, step=10)
    video = write_video(tmp_path / "walk.mp4", frames)
    photo = repo / "zoo/yolov3_tiny_coco/dog.jpg"
    out = tmp_path / "out"
    result = predict(photo, video, "--out", out, "--save-labels", fmt, "--score-thresh", "0.4")
    assert result.exit_code == 0, result.output
    want = {"dog": records_by_image(out)[str(photo)]["detections"]}
    want.update({f"walk_{line['frame']:06d}": line["detections"] for line in json_lines(out / "walk.jsonl")})
    assert len(want) == 6 and sum(len(d) for d in want.values()) >= 9      # dog.jpg: bicycle, dog, car, truck
    sets = ["--set", f"data.root={out / 'labels'}", "--set", "train.batch_size=2"]     # 5 training images
    checked = invoke("data", "check", zoo[0], *sets, "--out", tmp_path / "check", "--no-progress", "--strict")
    assert checked.exit_code == 0, checked.output
    report = json.loads((tmp_path / "check/data_check.json").read_text())
    assert report["train"]["images"] + report["val"]["images"] == 6
    assert report["train"]["problems"] == [] and report["val"]["problems"] == []
    assert report["train"]["boxes"] + report["val"]["boxes"] == sum(len(d) for d in want.values())
    recipe = __import__("gluon_yolo3.api", fromlist=["load"]).load(zoo[0], [f"data.root={out / 'labels'}"])
    got = {}
    for dataset in build_datasets(recipe).values():
        for i in range(len(dataset)):
            got[dataset.image_id(i)] = dataset.label(i)
    assert sorted(got) == sorted(want)
    classes = recipe["data"]["classes"]
    for name, detections in want.items():
        boxes = np.array([d["box"] for d in detections], np.float32).reshape(-1, 4)
        label = got[name]
        assert [classes[int(c)] for c in label[:, 4]] == [d["class"] for d in detections]
        tolerance = 0.5 if fmt == "voc" else 0.01           # VOC holds whole pixels
        np.testing.assert_allclose(label[:, :4], boxes, atol=tolerance + 0.01)
    again = predict(photo, "--out", out, "--save-labels", fmt)
    assert again.exit_code == 2 and "already holds annotations" in again.output


def test_classes_keeps_those_and_an_unknown_one_is_refused(predict, repo, tmp_path):
    photo = repo / "zoo/yolov3_tiny_coco/dog.jpg"
    result = predict(photo, "--out", tmp_path / "a", "--classes", "dog,bicycle", "--classes", "truck")
    assert result.exit_code == 0, result.output
    found = {d["class"] for d in records_by_image(tmp_path / "a")[str(photo)]["detections"]}
    assert found == {"dog", "bicycle", "truck"}                          # the car is left out
    result = predict(photo, "--out", tmp_path / "b", "--classes", "dog,unicorn")
    assert result.exit_code == 2
    assert "unknown class 'unicorn': the model's classes are person, bicycle, car" in result.output
    assert not (tmp_path / "b").exists()


def test_a_corrupt_frame_is_skipped_and_the_rest_written(predict, tmp_path, moving_dog):
    frames, _ = moving_dog(8, step=8)
    path = tmp_path / "rec.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 240))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i:i + 3] == b"\xff\xd8\xff"]
    data[starts[3]:starts[3] + 300] = bytes(300)
    path.write_bytes(bytes(data))
    out = tmp_path / "out"
    result = predict(path, "--out", out)
    assert result.exit_code == 2
    assert "rec.avi: a corrupt frame at 0.30 s skipped" in result.output
    assert [line["frame"] for line in json_lines(out / "rec.jsonl")] == [0, 1, 2, 4, 5, 6, 7]
    assert len(list(open_video(out / "rec.mp4").frames())) == 7
