"""Our SGD (one `sgd_mom_update` per tensor) against MXNet's own SGD (grouped `multi_sgd_mom_update`): the same
weights and momentum after several steps, through Gluon's Trainer as training runs it."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon

from gluon_yolo3.engine.builders import no_bias_decay
from gluon_yolo3.optim.optimizers import SGD
from gluon_yolo3.registry import OPTIMIZERS


def small_net():
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Conv2D(8, 3, in_channels=3), gluon.nn.BatchNorm(in_channels=8),
            gluon.nn.Conv2D(4, 1, in_channels=8), gluon.nn.Dense(5, in_units=4 * 6 * 6))
    net.initialize(mx.init.Xavier(), ctx=mx.cpu())
    return net


def train(optimizer, steps=4, seed=0):
    """Weights and optimizer states after `steps` updates of a fixed random problem."""
    mx.random.seed(seed)
    np.random.seed(seed)
    net = small_net()
    params = net.collect_params()
    no_bias_decay(params)                          # as train.no_bias_decay does
    trainer = gluon.Trainer(params, optimizer, update_on_kvstore=False)
    for step in range(steps):
        x = mx.nd.array(np.random.RandomState(step).normal(size=(2, 3, 8, 8)))
        with mx.autograd.record():
            loss = (net(x) ** 2).sum()
        loss.backward()
        trainer.update(2)
    weights = {n: p.data().asnumpy() for n, p in net._collect_params_with_prefix().items()}
    states = {i: s.asnumpy() for i, s in trainer._updaters[0].states.items() if s is not None}
    return weights, states


@pytest.mark.parametrize("kwargs", [
    dict(learning_rate=0.01, momentum=0.9, wd=5e-4),
    dict(learning_rate=0.05, momentum=0.9, wd=1e-3, clip_gradient=0.5),
    dict(learning_rate=0.01, momentum=0.0, wd=5e-4),
])
def test_sgd_equals_mxnet_sgd(kwargs):
    ours, ours_states = train(SGD(**kwargs))
    ref, ref_states = train(mx.optimizer.SGD(**kwargs))
    assert mx.optimizer.SGD(**kwargs).aggregate_num > 1              # the reference takes the grouped path
    for name in ref:
        np.testing.assert_allclose(ours[name], ref[name], rtol=1e-6, atol=1e-7, err_msg=name)
    assert ours_states.keys() == ref_states.keys()
    assert (len(ours_states) > 0) == (kwargs["momentum"] > 0)
    for index in ref_states:
        np.testing.assert_allclose(ours_states[index], ref_states[index], rtol=1e-6, atol=1e-7)
    start, _ = train(SGD(**kwargs), steps=0)
    moved = [n for n in ref if not np.array_equal(ref[n], start[n])]
    assert len(moved) >= 6                     # the steps did change the weights being compared


def test_recipe_sgd_is_ours_and_keeps_its_checkpoint_name():
    opt = OPTIMIZERS.build({"type": "sgd", "lr": 0.01, "clip_gradient": 2.0})
    assert isinstance(opt, SGD) and opt.aggregate_num == 0
    assert type(opt).__name__.lower() == "sgd"          # the optimizer type saved beside its states
    assert opt.momentum == 0.9 and opt.wd == 5e-4 and opt.clip_gradient == 2.0
