"""Every benchmark in one run: training step, inference, video, optimizer update, data pipeline -> results/<date>.json, .md.

    python benchmarks/run_all.py            # full repeats (about half an hour on 2 cores before the OpenVINO and
                                            # yolov3-tiny rows came; more with them)
    python benchmarks/run_all.py --quick    # fewer repeats (about 15 minutes there, before them)

Each benchmark runs in its own process (one after the other, never side by side), prints its own
table, and hands its figures back as JSON; this script gathers them with the date and the machine (CPU
model from /proc/cpuinfo, cores) into `benchmarks/results/<YYYY-MM-DD>.json` and a markdown table
`benchmarks/results/<YYYY-MM-DD>.md`. Every ratio is from this one run on this one machine.

Threads: ours and GluonCV share each benchmark process, so every ratio in the main table compares them
at the same OpenMP thread count, the one gluon_yolo3 sets (one per physical core, threads.py). MXNet
left alone uses half the logical CPUs; where that differs (cores without hyper-threads), GluonCV is
also timed alone in a process with MXNet's default (and libgomp's default spinning), and a second table
gives ours / GluonCV "as installed": what a user of each package gets without setting a thread variable.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List

HERE = Path(__file__).resolve().parent
TARGETS = {"train": 1.25, "infer_fp32": 1.2, "infer_mxnet_int8": 3.0, "infer_bf16": 6.0,
           "infer_fastest": {"1": 10.0, "8": 12.0}, "data": 3.0}
FASTEST = "openvino int8"       # the runtime the fastest-inference target is for


def inference_target(key: str, batch: str) -> str:
    """The target of an inference row (ours / GluonCV fp32, darknet53), or "-"."""
    if key.startswith("mxnet fp32"):
        return f">= {TARGETS['infer_fp32']}x"
    if key == FASTEST and batch in TARGETS["infer_fastest"]:
        return f">= {TARGETS['infer_fastest'][batch]:g}x (fastest)"
    return {"mxnet int8": f">= {TARGETS['infer_mxnet_int8']:g}x",
            "openvino bf16": f">= {TARGETS['infer_bf16']:g}x"}.get(key, "-")


def machine() -> Dict[str, Any]:
    """CPU model, logical cores, the versions the figures depend on, and whether int8 runs on AMX tiles."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from gluon_yolo3.amx import amx_enabled, cpu_bf16
    from gluon_yolo3.threads import physical_cores
    import mxnet as mx
    return {"cpu": model, "cores": os.cpu_count(), "physical_cores": physical_cores(),
            "python": platform.python_version(), "mxnet": mx.__version__, "platform": platform.platform(),
            "amx_int8": amx_enabled(), "bf16": cpu_bf16(), "onnxruntime": installed("onnxruntime"),
            "openvino": installed("openvino")}


def installed(package: str) -> str | None:
    """The installed version of `package`, or None."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def run(script: str, args: List[str], threads: int, mxnet_defaults: bool = False) -> str:
    """Run one benchmark script with this interpreter and `threads` OpenMP threads; echo, return stdout.

    `mxnet_defaults`: libgomp's own spin setting (GOMP_SPINCOUNT=300000, wait policy unset) instead of the
    one gluon_yolo3 sets (threads.py), for GluonCV "as installed"."""
    cmd = [sys.executable, str(HERE / script)] + args
    spin = {"GOMP_SPINCOUNT": "300000"} if mxnet_defaults else {}
    variables = [f"{k}={v}" for k, v in spin.items()] + [f"MXNET_OMP_MAX_THREADS={threads}"]
    print(f"\n$ {' '.join(variables + cmd[1:])}", flush=True)
    # MXNet's own thread variable, as gluon_yolo3 sets it; OMP_NUM_THREADS (read by numpy's OpenBLAS in the
    # data workers too) stays unset, as on a user's machine
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(spin)
    env["MXNET_OMP_MAX_THREADS"] = str(threads)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    print(proc.stdout, flush=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{script} failed with exit code {proc.returncode}")
    return proc.stdout


def data_figures(text: str) -> Dict[str, float]:
    """The figures data_pipeline.py prints (it has no JSON output)."""
    def number(pattern):
        found = re.search(pattern, text)
        return float(found.group(1)) if found else None
    return {"ours_img_s": number(r"TrainSamples \(same augmentation \+ targets\)\s+([\d.]+)"),
            "gluoncv_img_s": number(r"YOLO3DefaultTrainTransform \(\+ targets\)\s+([\d.]+)"),
            "ratio": number(r"ratio ours / GluonCV: ([\d.]+)x")}


def markdown(result: Dict[str, Any]) -> str:
    m = result["machine"]
    lines = [f"# Benchmarks, {result['date']}" + (" (quick)" if result["quick"] else ""), "",
             f"Machine: {m['cpu']}, {m['cores']} logical cores; MXNet {m['mxnet']}, onnxruntime "
             f"{m.get('onnxruntime')}, OpenVINO {m.get('openvino')}, Python {m['python']}; "
             + ("MXNet int8 on AMX tiles (gluon_yolo3/amx.py)" if m.get("amx_int8") else "no AMX for MXNet int8")
             + (f"; bfloat16 on the CPU's {m['bf16']}." if m.get("bf16") else "; no bfloat16 on this CPU."),
             f"Command: `{result['command']}`. Ratios are ours / GluonCV (speed), all from this one run, both "
             f"sides at {result['threads']} OpenMP threads (MXNET_OMP_MAX_THREADS).", "",
             "| benchmark | ours | GluonCV | ratio | target |", "|---|---|---|---|---|"]
    pipe = result["train_step"]["pipeline"]
    lines.append(f"| training, data pipeline included ({pipe['workers']} workers), darknet53, batch 8, 320 px | "
                 f"{pipe['ours_img_s']:.2f} img/s | {pipe['gluoncv_img_s']:.2f} img/s | {pipe['ratio']:.2f}x | "
                 ">= 1.25x |")
    if "ours_bf16_img_s" in pipe:
        lines.append(f"| training in bfloat16 (AMX), data pipeline included, darknet53, batch 8, 320 px | "
                     f"{pipe['ours_bf16_img_s']:.2f} img/s | {pipe['gluoncv_img_s']:.2f} img/s (fp32) | "
                     f"{pipe['ratio_bf16']:.2f}x | >= 2x |")
    for name, row in result["train_step"]["step"].items():
        lines.append(f"| training step only (decoded batch), {name}, batch 8, 320 px | {row['ours_img_s']:.2f} "
                     f"img/s | {row['gluoncv_img_s']:.2f} img/s (darknet53) | {row['ratio']:.2f}x | - |")
    for model, block in result["inference"].items():
        for batch, rows in block["batches"].items():
            gcv = rows.get("gluoncv fp32")
            for key, row in rows.items():
                if key.startswith("gluoncv"):
                    continue
                target = inference_target(key, batch) if gcv else "-"
                first = f", first call {row['first_call_s']:.1f} s" if "first_call_s" in row else ""
                lines.append(f"| inference {key}, {model}, batch {batch} | {row['ms']:.1f} ms, "
                             f"{row['gflops']:.0f} GFLOP/s{first} | "
                             + (f"{gcv['ms']:.1f} ms fp32 ({rows['gluoncv fused']['ms']:.1f} ms fused) | "
                                f"{row['vs_gluoncv_fp32']:.2f}x | {target} |" if gcv else "- | - | - |"))
    epoch = result["train_step"].get("epoch", {})
    if "bfloat16" in epoch:
        f32, b16 = epoch["float32"], epoch["bfloat16"]
        lines.append(f"| one epoch of recipes/bccd_tiny.yaml ({f32['images']} images, {f32['steps']} steps), "
                     f"bfloat16 against our float32 | {b16['seconds']:.1f} s | {f32['seconds']:.1f} s (ours fp32) | "
                     f"{f32['seconds'] / b16['seconds']:.2f}x | - |")
    video = result.get("video")
    if video:
        gcv = video["fps"]["gluoncv fp32, frame by frame"]
        for key in ("ours fused fp32, stream", "ours int8, stream", "gluoncv fp32 in our stream"):
            lines.append(f"| predict on a {video['size']} px video, decoding included (video.py), darknet53, {key} "
                         f"(batch {video['batch_size']}) | {video['fps'][key]:.2f} frames/s | {gcv:.2f} frames/s "
                         f"(frame by frame) | {video['vs_gluoncv'][key]:.2f}x | - |")
    upd = result.get("optimizer_update")
    if upd:
        lines.append(f"| SGD update of darknet53's {upd['weights'] / 1e6:.1f} M weights (optimizer_update.py) | "
                     f"{upd['ours_ms']:.1f} ms | {upd['gluoncv_ms']:.1f} ms | {upd['ratio']:.2f}x | - |")
    d = result["data_pipeline"]
    if d.get("ratio") is not None:
        lines.append(f"| data pipeline at 416, batch 16 | {d['ours_img_s']:.1f} img/s | "
                     f"{d['gluoncv_img_s']:.1f} img/s | {d['ratio']:.2f}x | >= 3x |")
    ceiling, step = result["train_step"].get("ceiling"), result["train_step"]["step"].get("darknet53", {})
    if ceiling and pipe.get("budget") and "ours_gflops" in step:
        b = pipe["budget"]
        lines += ["", f"Training ceiling: one large 3x3 convolution, forward and both gradients, runs at "
                  f"{ceiling['conv_gflops']:.0f} GFLOP/s; a darknet53 training step at 320 px is "
                  f"{ceiling['gflop_per_image']:.1f} GFLOP of convolutions per image. Step alone: ours "
                  f"{step['ours_gflops']:.0f} GFLOP/s, GluonCV {step['gluoncv_gflops']:.0f} GFLOP/s. 1.25x GluonCV "
                  f"with the data pipeline needs {b['need_gflops']:.0f} GFLOP/s over the whole iteration "
                  f"({b['need_share']:.0%} of the ceiling): {b['budget_s']:.2f} s per batch, of which the "
                  f"convolutions at the ceiling take {b['conv_s_at_ceiling']:.2f} s, leaving {b['rest_s']:.2f} s for "
                  f"BatchNorm, LeakyReLU, additions, loss, update and data (benchmarks/PROFILE.md)."]
    lines += ["", "GFLOP per image (convolutions, 2 x multiply-adds): "
              + ", ".join(f"{k} {v['gflop_per_image']:.2f}" for k, v in result["inference"].items()), ""]
    block = result["inference"].get("darknet53")
    if block and block.get("conv_ceiling_gflops"):
        for batch, ceiling in block["conv_ceiling_gflops"].items():
            rows = block["batches"][batch]
            gcv = rows["gluoncv fp32"]["gflops"]
            lines.append(f"fp32 ceiling, batch {batch}: one large 3x3 convolution alone runs at {ceiling:.0f} "
                         f"GFLOP/s; GluonCV's darknet53 at {gcv:.0f} GFLOP/s ({gcv / ceiling:.0%} of it), so "
                         f"1.2x GluonCV in fp32 needs {1.2 * gcv:.0f} GFLOP/s ({1.2 * gcv / ceiling:.0%}).")
        lines.append("")
    default = result.get("gluoncv_default_threads")
    if default:
        lines += [f"As installed: ours at {result['threads']} OpenMP threads (gluon_yolo3's default) against "
                  f"GluonCV alone in a process at MXNet's default of {default['threads']} thread(s) and libgomp's "
                  f"default spinning.", "",
                  "| benchmark | ours | GluonCV, MXNet's default threads | ratio |", "|---|---|---|---|"]
        ours, gcv = result["train_step"]["pipeline"], default["pipeline"]
        lines.append(f"| training, data pipeline included, darknet53, batch 8, 320 px | "
                     f"{ours['ours_img_s']:.2f} img/s | {gcv['gluoncv_img_s']:.2f} img/s | "
                     f"{ours['ours_img_s'] / gcv['gluoncv_img_s']:.2f}x |")
        for batch, rows in default["inference"]["darknet53"]["batches"].items():
            gms = rows["gluoncv fp32"]["ms"]
            for key, row in result["inference"]["darknet53"]["batches"][batch].items():
                if not key.startswith("gluoncv"):
                    lines.append(f"| inference {key}, darknet53, batch {batch} | {row['ms']:.1f} ms | "
                                 f"{gms:.1f} ms fp32 | {gms / row['ms']:.2f}x |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats in every benchmark")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for <date>.json and .md")
    args = parser.parse_args(argv)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    info = machine()
    threads = int(os.environ.get("MXNET_OMP_MAX_THREADS") or info["physical_cores"] or 1)
    mxnet_default = max(1, (os.cpu_count() or 2) // 2)
    result: Dict[str, Any] = {"date": date, "quick": args.quick, "machine": info, "threads": threads,
                              "command": "python benchmarks/run_all.py" + (" --quick" if args.quick else "")}
    train_args = ["--quick"] if args.quick else []
    infer_args = ["--runs", "3", "--rounds", "1"] if args.quick else ["--runs", "10", "--rounds", "2"]
    with tempfile.TemporaryDirectory() as tmp:
        train_json, infer_json = Path(tmp) / "train.json", Path(tmp) / "infer.json"
        run("train_step.py", train_args + ["--pipeline", "--json", str(train_json)], threads)
        result["train_step"] = json.loads(train_json.read_text())
        run("train_step.py", ["--epoch-only", "--json", str(train_json)], threads)
        result["train_step"].update(json.loads(train_json.read_text()))
        run("inference.py", infer_args + ["--json", str(infer_json)], threads)
        result["inference"] = json.loads(infer_json.read_text())
        video_json = Path(tmp) / "video.json"
        run("video.py", (["--frames", "16", "--rounds", "1"] if args.quick else []) + ["--json", str(video_json)],
            threads)
        result["video"] = json.loads(video_json.read_text())
        update_json = Path(tmp) / "update.json"
        run("optimizer_update.py", (["--rounds", "1"] if args.quick else []) + ["--json", str(update_json)], threads)
        result["optimizer_update"] = json.loads(update_json.read_text())
        if mxnet_default != threads:
            run("train_step.py", train_args + ["--gluoncv-only", "--json", str(train_json)], mxnet_default,
                mxnet_defaults=True)
            run("inference.py", infer_args + ["--gluoncv-only", "--json", str(infer_json)], mxnet_default,
                mxnet_defaults=True)
            result["gluoncv_default_threads"] = {"threads": mxnet_default,
                                                 "pipeline": json.loads(train_json.read_text())["pipeline"],
                                                 "inference": json.loads(infer_json.read_text())}
    text = run("data_pipeline.py", ["--batches", "8", "--rounds", "1"] if args.quick else [], threads)
    result["data_pipeline"] = data_figures(text)
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown(result)
    for suffix, body in ((".json", json.dumps(result, indent=1)), (".md", table)):
        path = args.out / f"{date}{suffix}"
        tmp_path = path.with_name(f".{path.name}.tmp")
        tmp_path.write_text(body)
        os.replace(tmp_path, path)
    print("\n" + table)
    print(f"written: {args.out / date}.json and .md")


if __name__ == "__main__":
    main()
