"""HeadConv's padded computation (a oneDNN speed work-around) gives a plain Conv2D's outputs and gradients."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd
from mxnet.gluon import nn

from gluon_yolo3.models.head import HeadConv, YOLOHead


def _outputs_and_grads(block, x):
    x = x.copy()
    x.attach_grad()
    with autograd.record():
        y = block(x)
        loss = (y * mx.nd.arange(y.size).reshape(y.shape) / y.size).sum()
    loss.backward()
    params = list(block.collect_params().values())
    return y.asnumpy(), x.grad.asnumpy(), [p.grad().asnumpy() for p in params]


@pytest.mark.parametrize("channels", [24, 8, 21])
@pytest.mark.parametrize("hybridize", [False, True])
def test_padded_head_conv_matches_plain_conv(channels, hybridize):
    rng = np.random.default_rng(0)
    x = mx.nd.array(rng.normal(size=(2, 16, 5, 7)))
    weight = rng.normal(size=(channels, 16, 1, 1))
    bias = rng.normal(size=(channels,))
    plain = nn.Conv2D(channels, 1, in_channels=16)
    padded = HeadConv(channels, kernel_size=1, in_channels=16)
    padded.pad_to = 16
    for block in (plain, padded):
        block.initialize()
        block.weight.set_data(mx.nd.array(weight))
        block.bias.set_data(mx.nd.array(bias))
        if hybridize:
            block.hybridize(static_alloc=True, static_shape=True)
    y_ref, gx_ref, gp_ref = _outputs_and_grads(plain, x)
    y, gx, gp = _outputs_and_grads(padded, x)
    assert y.shape == (2, channels, 5, 7)
    # the outputs against numpy too: a 1x1 conv is a matrix product over channels
    ref = np.einsum("bchw,oc->bohw", x.asnumpy(), weight[:, :, 0, 0]) + bias[None, :, None, None]
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(gp, gp_ref):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_yolo_head_pads_only_channels_8_mod_16_and_keeps_parameters():
    head = YOLOHead([32, 64], [3, 3], num_classes=3)      # 24 channels each: padded
    voc = YOLOHead([32], [3], num_classes=20)             # 75 channels: left plain
    head.pad_outputs(True)
    voc.pad_outputs(True)
    assert [c.pad_to for c in head.outputs] == [16, 16]
    assert [c.pad_to for c in voc.outputs] == [0]
    head.initialize()
    outs = head(mx.nd.ones((1, 32, 4, 4)), mx.nd.ones((1, 64, 2, 2)))
    assert [o.shape for o in outs] == [(1, 4, 4, 3, 8), (1, 2, 2, 3, 8)]
    assert {k: v.shape for k, v in head.collect_params().items()} == {
        k: v.shape for k, v in YOLOHead([32, 64], [3, 3], num_classes=3, prefix=head.prefix)
        .collect_params().items()}
