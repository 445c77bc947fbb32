"""`gluon-yolo3 benchmark RECIPE`: training throughput and inference latency of a recipe on this machine."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Optional

import typer

from ..devices import parse_devices
from ..files import atomic_write_text
from ..speed.timing import deployed_latency, inference_latency, training_throughput
from .common import DevicesOption, FuseOption, PrecisionOption, RecipeArg, SetOption, cli_errors, load_recipe


@cli_errors
def benchmark(recipe: RecipeArg,
              weights: Optional[Path] = typer.Option(None, help="Weights for the inference timing (default: "
                                                                "random; latency does not depend on them)."),
              train_steps: int = typer.Option(10, help="Timed training iterations (0: skip training)."),
              warmup: int = typer.Option(3, help="Untimed training iterations first (graph building)."),
              batch_sizes: str = typer.Option("1,8", help="Inference batch sizes, comma-separated "
                                                          "(empty: skip inference)."),
              runs: int = typer.Option(10, help="Timed inference calls per batch size (median)."),
              fuse: FuseOption = None, precision: PrecisionOption = None,
              deployed: Optional[List[Path]] = typer.Option(
                  None, help="Also time this exported or quantized model (an int8 folder from `quantize`, an "
                             "export folder (MXNet, OpenVINO), an .onnx file), at the same batch sizes. "
                             "Repeatable."),
              devices: DevicesOption = None,
              json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the figures here."),
              set_: SetOption = None):
    """Time a recipe: training iterations with its data pipeline, and inference latency with NMS.

    Against GluonCV, side by side: `make bench` (benchmarks/run_all.py)."""
    cfg = load_recipe(recipe, set_)
    sizes = [int(b) for b in batch_sizes.split(",") if b.strip()]
    contexts = parse_devices(devices or cfg["train"]["devices"])
    result = {"recipe": str(recipe), "mxnet_omp_threads": os.environ.get("MXNET_OMP_MAX_THREADS"),
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    if train_steps > 0:
        t = training_throughput(cfg, steps=train_steps, warmup=warmup, devices=devices)
        result["train"] = t
        typer.echo(f"training: {t['img_s']:.2f} images/s ({t['s_per_step']:.3f} s per step of "
                   f"{t['batch_size']} images on {','.join(t['devices'])}, {t['workers']} data workers, "
                   f"{t['data_wait_s']:.3f} s per step waiting for data)")
    if sizes:
        r = result["inference"] = inference_latency(cfg, weights, sizes, runs, fuse=fuse, contexts=contexts[:1],
                                                    precision=precision)
        kind = " (fused graph)" if r["fused"] else " (bfloat16)" if precision else ""
        for batch, row in r["batches"].items():
            typer.echo(f"inference{kind}, batch {batch}, {r['size']} px: "
                       f"{row['ms']:.2f} ms ({row['img_s']:.1f} images/s, {row['gflops']:.1f} GFLOP/s; "
                       f"{r['gflop_per_image']:.2f} GFLOP per image)")
        for path in deployed or []:
            d = deployed_latency(path, sizes, runs, ctx=contexts[0], size=r["size"],
                                 gflop_per_image=r["gflop_per_image"])
            result.setdefault("deployed", {})[str(path)] = d
            for batch, row in d["batches"].items():
                typer.echo(f"{d['model']} ({path}), batch {batch}, {d['size']} px: {row['ms']:.2f} ms "
                           f"({row['img_s']:.1f} images/s, {row['gflops']:.1f} GFLOP/s; "
                           f"{r['batches'][batch]['ms'] / row['ms']:.2f}x as fast as the MXNet detector above)")
    if json_out:
        atomic_write_text(json_out, json.dumps(result, indent=1, default=str))
        typer.echo(f"wrote {json_out}")
