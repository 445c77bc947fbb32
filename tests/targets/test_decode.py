"""The targets read back: `AnchorAssigner.decode` rebuilds every assigned box from its encoding alone, where the
seed guide's pitfalls ([y][x] order, xywh against x1y1x2y2) would misplace it; `data show` draws them."""
import cv2
import numpy as np
import pytest

from gluon_yolo3.registry import ASSIGNERS

ANCHORS = [[[10, 14], [23, 27], [37, 58]], [[81, 82], [135, 169], [344, 319]]]


@pytest.mark.parametrize("assigner", ["best_anchor", "multi_anchor"])
def test_decode_gives_back_each_encoded_box_at_its_cell(assigner):
    a = ASSIGNERS.build({"type": assigner}, anchors=ANCHORS, strides=[16, 32], num_classes=3)
    boxes = np.array([[10, 300, 60, 380], [100, 40, 300, 380], [330, 5, 345, 30]], np.float32)  # x1 y1 x2 y2
    targets = a(boxes, np.array([0, 2, 1]), (416, 416))
    found = a.decode(targets, (416, 416))
    for box, cls in zip(boxes, [0, 2, 1]):
        mine = [o for o in found if cls in o["classes"]]
        assert mine, cls
        for o in mine:
            np.testing.assert_allclose(o["box"], box, atol=1e-3)
            stride = [16, 32][o["scale"]]
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            assert (o["row"], o["col"]) == (int(cy // stride), int(cx // stride))   # row from y, column from x
    first = next(o for o in found if 0 in o["classes"])
    assert first["row"] > first["col"]                  # low on the image, at its left: a tall index pair


def test_data_show_writes_one_grid(tmp_path, demo_recipe, invoke, sets):
    out = tmp_path / "show.png"
    result = invoke("data", "show", demo_recipe, "--count", "6", "--out", out,
                    *sets(["model.input_size=64", "data.train.image_size=64", "data.train.num_images=8"]))
    assert result.exit_code == 0, result.output
    grid = cv2.imread(str(out))
    assert grid is not None and grid.shape[0] > 2 * 320 and grid.shape[1] >= 4 * 320 and grid.std() > 10
