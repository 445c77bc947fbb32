"""Augmentation: boxes still cover their objects' pixels after the whole chain (mosaic, mixup, expand, crop,
flip, colour, letterbox) on synthetic shapes with known masks; mosaic placement and mixup blending checked
on pixels; multi-scale batches (one size per batch, every device's slice alike) through a hybridized net."""
import cv2
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon
from scipy import stats

from gluon_yolo3 import api
from gluon_yolo3.data.mix import Mosaic, MixUp
from gluon_yolo3.data.pipeline import (EpochSampler, MultiScaleBatchSampler, TrainSamples, build_assigner,
                                       build_train_batches, multi_scale_sizes)
from gluon_yolo3.data.synthetic import SyntheticShapes
from gluon_yolo3.data.transforms import Compose, SampleContext
from gluon_yolo3.devices import split_batch
from gluon_yolo3.engine.builders import build_loss, build_model
from gluon_yolo3.registry import TRANSFORMS

CHAIN = [{"type": "mosaic", "p": 0.7}, {"type": "mixup", "p": 0.7}, {"type": "random_expand", "p": 0.5},
         {"type": "random_crop", "p": 0.6}, {"type": "random_flip"}, {"type": "color_jitter"},
         {"type": "letterbox", "size": 96}]


def mask_chain(cfgs):
    """The same chain for 0/255 mask images: nearest interpolation and black fills (same random draws)."""
    out = []
    for cfg in cfgs:
        cfg = dict(cfg)
        if cfg["type"] in ("mosaic", "letterbox"):
            cfg.update(interp="nearest", fill=0)
        if cfg["type"] in ("random_expand", "mixup"):
            cfg.update(fill=0)
        out.append(cfg)
    return out


def world_of(seed, count=5, size=(72, 88)):
    """`count` synthetic samples whose class column is a unique object id; returns (samples, masks)."""
    ds = SyntheticShapes(num_images=count, image_size=size, seed=seed, max_objects=4, min_size=0.15)
    samples, masks, next_id = [], [], 0
    for i in range(count):
        image, label, m = ds.sample_with_masks(i)
        label = label.copy()
        label[:, 4] = np.arange(next_id, next_id + len(label))
        next_id += len(label)
        samples.append((image, label))
        masks.append(m)
    return samples, masks


def run(cfgs, samples, seed, epoch=0):
    """The chain on samples[0], other images drawn from `samples` with the sample's generator."""
    source = lambda rng: samples[int(rng.integers(len(samples)))]        # noqa: E731
    context = SampleContext(source, epoch=epoch, epochs=10, size=48)
    image, label = samples[0]
    return Compose(cfgs)(image, label, np.random.default_rng(seed), context)


@pytest.mark.parametrize("seed", range(6))
def test_every_box_covers_its_objects_pixels_after_the_full_chain(seed, tmp_path):
    samples, masks = world_of(seed)
    image, label = run(CHAIN, samples, seed)
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    assert label.shape[1] == 6 and len(label) > 0
    drawn = image.copy()
    # Nearest resampling lights a pixel when its centre falls on the object: half a pixel off per resize.
    # Two resizes at most (the mosaic tile, then the letterbox): half a pixel, plus half a mosaic pixel
    # scaled by the letterbox (whose input size the chain without it tells: it draws nothing).
    before_letterbox, _ = run(CHAIN[:-1], samples, seed)
    tol = 0.5 + 0.5 * 96 / max(before_letterbox.shape[:2]) + 1e-3
    owner = {}
    for j, (_, lab) in enumerate(samples):
        for k, obj in enumerate(lab[:, 4].astype(int)):
            owner[obj] = (j, k)
    for row in label:
        obj = int(row[4])
        j, k = owner[obj]
        # the world again, with only this object's mask lit (255) and every other image black
        lit = [(np.zeros_like(img), lab) for img, lab in samples]
        lit[j] = (np.repeat(masks[j][k][..., None] * np.uint8(255), 3, axis=2), samples[j][1])
        mask_image, mask_label = run(mask_chain(CHAIN), lit, seed)
        np.testing.assert_allclose(mask_label, label, atol=1e-4, err_msg="same draws, same geometry")
        ys, xs = np.nonzero(mask_image.max(axis=2) > 0)
        assert len(xs), f"object {obj} has a box but no pixel left"
        x1, y1, x2, y2 = row[:4]
        assert xs.min() >= x1 - tol and xs.max() + 1 <= x2 + tol, (obj, row, xs.min(), xs.max())
        assert ys.min() >= y1 - tol and ys.max() + 1 <= y2 + tol, (obj, row, ys.min(), ys.max())
        cv2.rectangle(drawn, (int(x1), int(y1)), (int(np.ceil(x2)) - 1, int(np.ceil(y2)) - 1), (255, 0, 0), 1)
    cv2.imwrite(str(tmp_path / f"chain_{seed}.png"), drawn[:, :, ::-1])


def test_the_chain_mixes_images():
    """Over the seeds above, mosaic and mixup really bring in objects of other images."""
    foreign = 0
    for seed in range(6):
        samples, _ = world_of(seed)
        _, label = run(CHAIN, samples, seed)
        foreign += int((label[:, 4] >= len(samples[0][1])).sum())
    assert foreign >= 5


def flat_samples(shape_list, colours):
    """Uniform images of given (h, w) and colours, each with one full-image box of class k."""
    out = []
    for k, ((h, w), colour) in enumerate(zip(shape_list, colours)):
        image = np.empty((h, w, 3), np.uint8)
        image[:] = colour
        out.append((image, np.array([[0, 0, w, h, k, 0]], np.float32)))
    return out


COLOURS = [(250, 10, 10), (10, 250, 10), (10, 10, 250), (250, 250, 10)]


@pytest.mark.parametrize("crop", [False, True])
def test_mosaic_places_four_images_around_the_centre(crop):
    # the sample is image 0; draws take images 1, 2, 3 in order
    samples = flat_samples([(40, 60), (60, 40), (50, 50), (30, 80)], COLOURS)
    queue = iter(samples[1:])
    mosaic = Mosaic(size=64, crop=crop, fill=0, min_visible=0.0)
    image, label = mosaic(*samples[0], np.random.default_rng(3), lambda rng: next(queue))
    side = 64 if crop else 128
    assert image.shape == (side, side, 3)
    assert sorted(label[:, 4].astype(int).tolist()) == [0, 1, 2, 3] or crop
    painted = np.zeros(image.shape[:2], bool)
    for row in label:
        x1, y1, x2, y2 = (int(round(v)) for v in row[:4])
        region = image[y1:y2, x1:x2]
        assert region.size and (region == COLOURS[int(row[4])]).all(), row
        painted[y1:y2, x1:x2] = True
    assert (image[~painted] == 0).all(), "pixels outside the boxes are fill"
    # the four boxes meet at one point: the mosaic centre
    tl, tr, bl, br = (label[label[:, 4] == k][0] for k in range(4)) if len(label) == 4 else [None] * 4
    if tl is not None:
        assert tl[2] == tr[0] == bl[2] == br[0] and tl[3] == tr[3] == bl[1] == br[1]


def test_mosaic_tile_follows_the_batch_size():
    samples = flat_samples([(40, 60)] * 4, COLOURS)
    context = SampleContext(lambda rng: samples[1], size=96)
    image, _ = Mosaic()(*samples[0], np.random.default_rng(0), lambda rng: samples[1], context)
    assert image.shape == (96, 96, 3)


def test_mixup_blends_as_gluoncv_with_beta_lambdas():
    a = flat_samples([(30, 40)], [(200, 100, 40)])[0]
    b = (np.full((20, 50, 3), 80, np.uint8), np.array([[5, 5, 25, 15, 1, 1]], np.float32))
    mix = MixUp()
    lams = []
    for seed in range(300):
        image, label = mix(*a, np.random.default_rng(seed), lambda rng: b)
        assert image.shape == (30, 50, 3)
        # GluonCV: zero canvas of the largest size, a * lam + b * (1 - lam), both at the top-left
        lam = image[25, 10, 0] / 200.0                         # only `a` here
        ref = np.zeros((30, 50, 3))
        ref[:30, :40] += np.array([200, 100, 40]) * lam
        ref[:20, :50] += 80 * (1 - lam)
        np.testing.assert_allclose(image, ref, atol=1.6)
        np.testing.assert_array_equal(label, np.concatenate([a[1], b[1]]))   # both boxes, full weight
        lams.append(lam)
    assert stats.kstest(lams, stats.beta(1.5, 1.5).cdf).pvalue > 0.01


def test_mixup_switches_off_for_the_last_epochs():
    a, b = flat_samples([(20, 20), (20, 20)], COLOURS[:2])
    mix = MixUp(off_last_epochs=3)
    for epoch, mixed in ((0, True), (6, True), (7, False), (9, False)):
        context = SampleContext(lambda rng: b, epoch=epoch, epochs=10)
        _, label = mix(*a, np.random.default_rng(0), lambda rng: b, context)
        assert (len(label) == 2) == mixed, epoch
    until = MixUp(until_epoch=2)
    assert until.active(SampleContext(epoch=1)) and not until.active(SampleContext(epoch=2))
    with pytest.raises(ValueError, match="total epochs"):
        mix(*a, np.random.default_rng(0), lambda rng: b, SampleContext(epoch=0))
    with pytest.raises(ValueError, match="needs a SampleContext"):
        Compose([{"type": "mixup"}])(*a, np.random.default_rng(0))
    assert "mosaic" in TRANSFORMS and "mixup" in TRANSFORMS


# -------------------------------------------------------------------------------- multi-scale

@pytest.fixture
def tiny_recipe(demo_recipe):
    """tiny_recipe(*overrides) -> the demo recipe at 64 px with the overrides."""
    def tiny_recipe(*extra):
        return api.load(demo_recipe, ["model.input_size=64", "data.num_workers=0", *extra])
    return tiny_recipe


def test_multi_scale_batches_share_one_size_that_changes_every_n_batches():
    sampler = EpochSampler(200, seed=1)
    batches = MultiScaleBatchSampler(sampler, batch_size=4, num_sizes=5, every=3, seed=1)
    samples = TrainSamples.__new__(TrainSamples)
    samples.dataset, samples.sizes = range(200), (64, 96, 128, 160, 192)
    seen_sizes = set()
    for epoch in (0, 4):
        sampler.set_epoch(epoch)
        out = list(batches)
        assert len(out) == len(batches) == 50
        indices = []
        for b, keys in enumerate(out):
            decoded = [samples.decode(k) for k in keys]
            assert {d[0] for d in decoded} == {epoch}
            sizes = {d[1] for d in decoded}
            assert len(sizes) == 1, "one size per batch"
            if b % 3:
                assert sizes == {samples.decode(out[b - 1][0])[1]}, "a new size only every 3 batches"
            seen_sizes |= sizes
            indices += [d[2] for d in decoded]
        assert sorted(indices) == list(range(200)), "every image once per epoch"
    assert seen_sizes == set(range(5))
    # one size: the keys are the plain epoch * n + index keys of EpochSampler
    plain = MultiScaleBatchSampler(sampler, 4, num_sizes=1)
    flat = [k for keys in plain for k in keys]
    assert flat == list(sampler)


def test_multi_scale_sizes_from_the_recipe():
    assert multi_scale_sizes({"min_size": 320, "max_size": 416}, 416) == [320, 352, 384, 416]
    assert multi_scale_sizes({"min_size": None, "max_size": None}, 416) == [416]
    with pytest.raises(ValueError, match="multiples of 32"):
        multi_scale_sizes({"min_size": 300, "max_size": 416}, 416)


def test_multi_scale_training_step_through_the_hybridized_net_on_two_devices(tiny_recipe):
    recipe = tiny_recipe("data.multi_scale.min_size=64", "data.multi_scale.max_size=128",
                         "data.multi_scale.every=1", "data.train.image_size=96", "data.train.num_images=32")
    dataset = SyntheticShapes(num_images=32, image_size=96)
    contexts = [mx.cpu(0), mx.cpu(1)]
    net = build_model(recipe, dataset.classes, contexts)
    loss_fn = build_loss(recipe, net)
    loss_fn.initialize(ctx=contexts)
    net.hybridize(static_alloc=True, static_shape=True)
    loss_fn.hybridize(static_alloc=True, static_shape=True)
    assigner = build_assigner(recipe, net.anchors, net.strides, 3)
    samples, sampler, batches = build_train_batches(recipe, dataset, assigner, batch_size=4, seed=0)
    assert samples.sizes == (64, 96, 128) and samples.epochs == recipe["train"]["epochs"]
    loader = gluon.data.DataLoader(samples, batch_sampler=batches, num_workers=0)
    shapes = set()
    for x, target, gt in loader:
        size = x.shape[2]
        assert x.shape == (4, 3, size, size) and size in (64, 96, 128)
        assert target.shape[1] == assigner.num_predictions((size, size))
        positives = target.asnumpy()[..., 0] > 0
        boxes = target.asnumpy()[positives][:, 6:10]
        assert (boxes >= 0).all() and (boxes <= size).all() and (boxes[:, 2:] > boxes[:, :2]).all()
        parts = split_batch(x, contexts)
        assert {p.shape for p in parts} == {(2, 3, size, size)}
        with autograd.record():
            losses = [loss_fn(t, g, *net(xd)) for xd, t, g in
                      zip(parts, split_batch(target, contexts), split_batch(gt, contexts))]
            totals = [loss.sum() for loss in losses]
        autograd.backward(totals)
        assert all(np.isfinite(loss.asnumpy()).all() for loss in losses)
        shapes.add(size)
    assert len(shapes) >= 2
