"""api.load_detector(fuse=True): oneDNN's fused graph gives the plain graph's detections, at any batch and size;
it is the default on one CPU device."""
import mxnet as mx
import numpy as np
import pytest

from gluon_yolo3 import api


@pytest.fixture
def save_random_weights(demo_recipe):
    """save_random_weights(tmp_path) -> (recipe, classes): random demo weights saved as tmp_path/w.params."""
    def save_random_weights(tmp_path):
        recipe = api.load(demo_recipe, ["model.input_size=64", "data.train.num_images=4", "data.val.num_images=2",
                                        "data.num_workers=0", "model.nms.score_thresh=0.0"])
        classes = api.class_names(recipe)
        net = api.build(recipe, len(classes))
        mx.random.seed(0)
        net.initialize(mx.init.Xavier(magnitude=2.0))
        net(mx.nd.zeros((1, 3, 64, 64)))
        net.save_parameters(str(tmp_path / "w.params"))
        return recipe, classes
    return save_random_weights


def test_fused_detector_matches_plain_ops(tmp_path, save_random_weights):
    recipe, classes = save_random_weights(tmp_path)
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


def test_fusion_is_the_default_on_one_cpu_device_only(tmp_path, save_random_weights):
    recipe, classes = save_random_weights(tmp_path)
    weights = tmp_path / "w.params"

    def backend(**kwargs):
        net = api.load_detector(recipe, weights, classes=classes, **kwargs)
        assert net.fused == (getattr(net, "_backend", None) is not None)
        return getattr(net, "_backend", None)
    assert backend() == "MKLDNN"                                    # partitioned by optimize_for
    assert backend(fuse=False) is None and backend(hybridize=False) is None
    assert backend(contexts=[mx.cpu(0), mx.cpu(1)]) is None         # several devices: the plain graph
    predictor = api.Predictor(recipe, weights, classes=classes, fuse=False)
    assert getattr(predictor.net, "_backend", None) is None
