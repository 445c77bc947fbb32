"""api.load_detector(fuse=True): oneDNN's fused graph gives the plain graph's detections, at any batch and size."""
import mxnet as mx
import numpy as np

from gluon_yolo3 import api


def test_fused_detector_matches_plain_ops(tmp_path):
    recipe = api.load("recipes/demo_tiny.yaml", ["model.input_size=64", "data.train.num_images=4",
                                                   "data.val.num_images=2", "data.num_workers=0",
                                                   "model.nms.score_thresh=0.0"])
    classes = api.class_names(recipe)
    net = api.build(recipe, len(classes))
    mx.random.seed(0)
    net.initialize(mx.init.Xavier(magnitude=2.0))
    net(mx.nd.zeros((1, 3, 64, 64)))
    net.save_parameters(str(tmp_path / "w.params"))
    plain = api.load_detector(recipe, tmp_path / "w.params", classes=classes, hybridize=False)  # op by op
    fused = api.load_detector(recipe, tmp_path / "w.params", classes=classes, fuse=True)
    rng = np.random.default_rng(0)
    for shape in [(1, 3, 64, 64), (3, 3, 96, 96)]:
        x = mx.nd.array(rng.normal(size=shape))
        want = [o.asnumpy() for o in plain(x)]
        got = [o.asnumpy() for o in fused(x)]
        assert [g.shape for g in got] == [w.shape for w in want]
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-3)
