"""int8 inference through MXNet's oneDNN quantization (`mxnet.contrib.quantization.quantize_net_v2`).

    quantize_detector(recipe, "runs/demo", "deploy/int8", calib=64)   # trunk-symbol.json, trunk-0000.params,
                                                                      # deploy.json
    det = inference.deployed.load_quantized("deploy/int8")   # det(x) -> ids, scores, boxes, as YOLOv3

What is quantized: the backbone, the neck and the head's hidden layers, i.e. every convolution (fused with
its BatchNorm and LeakyReLU by oneDNN) up to the head. What stays fp32: the head's linear output
convolutions (their outputs are logits and box offsets: with int8 steps, objectness logits near the
decision threshold move by a step and scores shift), and everything after them: the reshape/concat of the
outputs over scales, decoding and NMS (quantizing the final concat made every score 0 on GluonCV's YOLOv3).

Where the CPU has AMX (Sapphire Rapids and later Xeons), oneDNN runs these convolutions on its matrix tiles
(`gluon_yolo3/amx.py`, set at import): Darknet-53 at 416 px about 2x faster than with VNNI, the same integers.

Calibration: `calib` images of the recipe's training set, preprocessed as for evaluation (resize,
normalise, no augmentation), `naive` (min/max of each layer's output) or `entropy` (KL-optimal thresholds).
"""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

import mxnet as mx
import numpy as np
from mxnet.contrib.quantization import quantize_net_v2

from ..data.build import build_datasets
from ..data.feed import InputSpec
from ..data.pipeline import EvalSamples
from ..inference.deployed import DEPLOY_FILE
from ..inference.detector import class_names
from .export import RawOutputs, deploy_info, load_plain, staged

CALIB_MODES = ("naive", "entropy")


def calibration_images(recipe: Mapping[str, Any], count: int, split: str = "train") -> np.ndarray:
    """`(count, 3, S, S)` float32: the first `count` images of the recipe's `split` dataset, resized and
    normalised as for evaluation."""
    if count < 1:
        raise ValueError(f"calibration needs at least 1 image, got {count}")
    classes = class_names(recipe)
    dataset = build_datasets(recipe, splits=(split,), classes=classes)[split]
    samples = EvalSamples(dataset, InputSpec.from_recipe(recipe, classes), recipe["data"]["max_boxes"])
    if count > len(samples):
        raise ValueError(f"--calib {count}: the recipe's data.{split} dataset holds only {len(samples)} images")
    return np.stack([samples[i][0] for i in range(count)]).astype(np.float32)


def head_output_layers(net) -> list:
    """Name prefixes of the head's output convolutions (kept fp32)."""
    return [conv.prefix for conv in net.head.outputs]


def quantize_detector(recipe: Mapping[str, Any], weights, out, calib: int = 32, calib_mode: str = "naive",
                      batch_size: int = 8, exclude: Optional[Sequence[str]] = None,
                      quantize_head: bool = False, logger=None) -> Dict[str, Any]:
    """Quantize the recipe's detector with `weights` to int8; write `out/trunk-symbol.json`,
    `out/trunk-0000.params` and `out/deploy.json` (format int8). Returns a summary.

    `exclude`: more layer-name fragments to keep in fp32; `quantize_head`: quantize the head's output
    convolutions too (faster, less accurate)."""
    if calib_mode not in CALIB_MODES:
        raise ValueError(f"calib_mode must be one of {', '.join(CALIB_MODES)}, got {calib_mode!r}")
    net, classes = load_plain(recipe, weights)
    images = calibration_images(recipe, calib)
    trunk = RawOutputs(net)
    batch = max(1, min(int(batch_size), len(images)))
    calib_iter = mx.io.NDArrayIter(data=images[:len(images) // batch * batch], batch_size=batch,
                                   data_name="data")
    excluded = list(exclude or []) + ([] if quantize_head else head_output_layers(net))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qnet = quantize_net_v2(trunk, quantized_dtype="auto", quantize_mode="full",
                               exclude_layers_match=excluded, calib_data=calib_iter, calib_mode=calib_mode,
                               num_calib_examples=len(images), ctx=mx.cpu(),
                               logger=logger or logging.getLogger("gluon_yolo3.quantize"))
    qnet.hybridize(static_alloc=True)
    size = int(recipe["model"]["input_size"])
    qnet(mx.nd.zeros((1, 3, size, size)))
    info = deploy_info(recipe, classes, "int8", symbol="trunk-symbol.json", params="trunk-0000.params",
                       input_name="data", strides=list(net.strides), calib_images=len(images),
                       calib_mode=calib_mode, fp32_layers=excluded)
    files = [info["symbol"], info["params"], DEPLOY_FILE]
    out = Path(out)
    with staged(out) as (staging, publish):
        qnet.export(str(staging / "trunk"), epoch=0)
        (staging / DEPLOY_FILE).write_text(json.dumps(info, indent=1))
        publish(files)
    return {"folder": str(out), "files": files, "calib_images": len(images), "calib_mode": calib_mode,
            "fp32_layers": excluded}
