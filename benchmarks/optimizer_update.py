"""One optimizer update of darknet53's weights: ours against GluonCV's, side by side.

    python benchmarks/optimizer_update.py              # 10 updates per round, 3 rounds
    python benchmarks/optimizer_update.py --json out.json

Both sides update the weights of GluonCV's `yolo3_darknet53_voc` (61.6 M values in 222 tensors, the shapes of
our darknet53 detector but for the 1x1 output convolutions) with SGD, momentum 0.9 and weight decay 5e-4,
through Gluon's Trainer with `update_on_kvstore=False`, as both training loops run it. GluonCV's
train_yolo3.py names MXNet's `sgd`, which MXNet 1.9.1 applies as one `multi_sgd_mom_update` per four tensors;
ours (`train.optimizer: {type: sgd}`, gluon_yolo3/optim/optimizers.py) runs one `sgd_mom_update` per tensor
(the same arithmetic; tests/optim/test_optimizers.py checks the weights match). Milliseconds per update = the
median of `--updates` updates (each waited for), the best of `--rounds` rounds that alternate the sides.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import common  # first: gluon_yolo3 before MXNet (its thread count, see common.py)
import mxnet as mx
from mxnet import gluon

from gluon_yolo3.optim.optimizers import SGD

SETTINGS = dict(learning_rate=0.001, momentum=0.9, wd=5e-4)


def trainer_of(optimizer) -> gluon.Trainer:
    """A Gluon Trainer with `optimizer` over a fresh darknet53 detector's weights, gradients filled."""
    net = common.gluoncv_model("yolo3_darknet53_voc", pretrained_base=False)
    net(mx.nd.zeros((1, 3, 320, 320)))                 # deferred shapes
    params = net.collect_params()
    for p in params.values():
        if p.grad_req != "null":
            p.grad()[:] = mx.nd.random.normal(scale=1e-3, shape=p.shape)
    trainer = gluon.Trainer(params, optimizer, update_on_kvstore=False)
    update(trainer)                                     # creates the momentum buffers
    mx.nd.waitall()
    return trainer


def update(trainer: gluon.Trainer):
    """`trainer.update(1)` on the gradients already there, marked fresh as a backward pass marks them."""
    for p in trainer._params:
        if p.grad_req != "null":
            p.data()._fresh_grad = True
    trainer.update(1)


def ms_per_update(trainer: gluon.Trainer, updates: int) -> float:
    times = []
    for _ in range(updates):
        start = time.perf_counter()
        update(trainer)
        mx.nd.waitall()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    sides = {"gluoncv": trainer_of(mx.optimizer.SGD(**SETTINGS)), "ours": trainer_of(SGD(**SETTINGS))}
    trained = [p for p in sides["ours"]._params if p.grad_req != "null"]
    count = sum(p.data().size for p in trained)
    print(f"mxnet {mx.__version__}, OMP threads {common.omp_threads()}: SGD update of {count / 1e6:.1f} M weights "
          f"in {len(trained)} tensors")
    best = {key: float("inf") for key in sides}
    for r in range(args.rounds):
        for key, trainer in sides.items():
            best[key] = min(best[key], ms_per_update(trainer, args.updates))
            print(f"  round {r + 1}: {key:<8} {best[key]:7.1f} ms per update (best so far)", flush=True)
    ratio = best["gluoncv"] / best["ours"]
    print(f"  ours {best['ours']:.1f} ms, GluonCV (MXNet's grouped SGD) {best['gluoncv']:.1f} ms: {ratio:.2f}x")
    common.write_json(args.json, {"ours_ms": best["ours"], "gluoncv_ms": best["gluoncv"], "ratio": ratio,
                                  "weights": count})


if __name__ == "__main__":
    main()
