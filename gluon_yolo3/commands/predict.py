"""`gluon-yolo3 predict RECIPE SOURCE...`: images, folders, globs, list files, videos and streams through any
runtime; drawings, detections.json, annotated videos with JSON lines, and labels into a folder."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from tqdm import tqdm

from .. import api
from ..devices import parse_devices
from ..inference.outputs import PredictionWriter
from ..inference.sources import Sources
from .common import (DevicesOption, FuseOption, PrecisionOption, ProgressOption, RecipeArg, SetOption, cli_errors,
                     fail, load_recipe)

SOURCES_HELP = ("Images, folders (searched recursively for images and videos), globs ('shots/*.jpg'), .txt files "
                "listing paths, videos, stream URLs (rtsp://...) or a camera index (0).")


@cli_errors
def predict(recipe: RecipeArg,
            sources: List[str] = typer.Argument(..., metavar="SOURCE...", help=SOURCES_HELP),
            weights: Optional[Path] = typer.Option(None, help="A .params file, a run folder or a zoo folder."),
            exported: Optional[Path] = typer.Option(None, help="Instead of --weights: a folder written by "
                                                               "`export --format mxnet` or `--format openvino` "
                                                               "(or `quantize`)."),
            onnx: Optional[Path] = typer.Option(None, help="Instead of --weights: an ONNX file written by "
                                                           "`export --format onnx` (onnxruntime + numpy NMS)."),
            out: Path = typer.Option(Path("predictions"), help="Folder for drawings, detections.json, annotated "
                                                               "videos with their .jsonl, and labels/."),
            set_: SetOption = None,
            score_thresh: Optional[float] = typer.Option(None, help="Keep detections scoring at least this "
                                                                    "(default: the recipe's predict.score_thresh)."),
            batch_size: int = typer.Option(8, help="Images or frames per network call (decoding runs in a worker "
                                                   "thread beside it); 1 for the lowest latency on a live stream."),
            every: int = typer.Option(1, help="Take one video frame in N (the annotated video's frame rate is "
                                              "divided by N)."),
            max_frames: Optional[int] = typer.Option(None, help="At most this many frames taken from each video "
                                                                "or stream (after --every)."),
            save_labels: Optional[str] = typer.Option(None, help="voc or yolo: write each image and frame with its "
                                                                 "detections as a dataset in OUT/labels/, which "
                                                                 "`data check` and `train` read (data.root)."),
            classes: Optional[List[str]] = typer.Option(None, help="Keep only these classes (repeatable or "
                                                                   "comma-separated: --classes dog,cat)."),
            devices: DevicesOption = None, fuse: FuseOption = None, precision: PrecisionOption = None,
            progress: ProgressOption = True):
    """Detect objects in images and videos; write them drawn and as JSON into --out (and as labels with
    --save-labels). An unreadable file or a corrupt frame is skipped with a warning (everything else is still
    written) and the exit code is then 2."""
    if sum(x is not None for x in (weights, exported, onnx)) != 1:
        raise ValueError("give exactly one of --weights, --exported, --onnx")
    if save_labels not in (None, "voc", "yolo"):
        raise ValueError(f"--save-labels must be voc or yolo, got {save_labels!r}")
    cfg = load_recipe(recipe, set_)
    contexts = parse_devices(devices or "cpu:0")[:1]
    if weights is not None:
        predictor = api.Predictor(cfg, weights, contexts=contexts, score_thresh=score_thresh, fuse=fuse,
                                  precision=precision)
    else:
        predictor = api.deployed_predictor(exported or onnx, cfg, score_thresh=score_thresh, ctx=contexts[0])
    if classes:
        predictor.keep_classes([n.strip() for item in classes for n in item.split(",") if n.strip()])
    found = Sources(sources)
    if found.ignored:
        typer.echo(f"{found.ignored} file(s) in the folders or glob matches are neither images nor videos: skipped")
    problems: List[str] = []
    bar = tqdm(total=found.frame_count(every, max_frames) if progress else None, unit="frame",
               disable=not progress, dynamic_ncols=True)

    def skipped(text: str):
        problems.append(text)
        bar.clear()
        typer.secho(f"warning: {text}", fg=typer.colors.YELLOW, err=True)

    images = frames = 0
    with bar, PredictionWriter(out, predictor.classes, labels=save_labels, every=every) as writer:
        for frame, det in predictor.stream(found, batch_size=batch_size, every=every, max_frames=max_frames,
                                           on_problem=skipped):
            writer.add(frame, det)
            bar.update(1)
            if frame.video is None:
                images += 1
                bar.write(f"{frame.source.location}: {len(det['ids'])} detections")
            else:
                frames += 1
    typer.echo(f"wrote {out}/: {images} image(s), {frames} video frame(s) from {len(writer.videos)} video(s)"
               + (f", labels in {out}/labels ({save_labels})" if save_labels else ""))
    if problems:
        fail(f"{len(problems)} input(s) or frame(s) skipped: " + "; ".join(problems[:5])
             + (" ..." if len(problems) > 5 else ""))
