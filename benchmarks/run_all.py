"""Every benchmark in one run: training step, inference, data pipeline; writes results/<date>.json and .md.

    python benchmarks/run_all.py            # full repeats (about an hour on 2 busy cores)
    python benchmarks/run_all.py --quick    # fewer repeats (about 15 minutes there)

Each benchmark runs in its own process (one after the other, never side by side), prints its own
table, and hands its figures back as JSON; this script gathers them with the date and the machine (CPU
model from /proc/cpuinfo, cores) into `benchmarks/results/<YYYY-MM-DD>.json` and a markdown table
`benchmarks/results/<YYYY-MM-DD>.md`. Every ratio is from this one run on this one machine.
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
from pathlib import Path
from typing import Any, Dict, List

HERE = Path(__file__).resolve().parent
TARGETS = {"train": 1.25, "infer_fp32": 1.2, "infer_fastest": 3.0, "data": 3.0}


def machine() -> Dict[str, Any]:
    """CPU model, logical cores, and the versions the figures depend on."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import mxnet as mx
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "mxnet": mx.__version__, "platform": platform.platform()}


def run(script: str, args: List[str]) -> str:
    """Run one benchmark script with this interpreter; echo and return its stdout."""
    cmd = [sys.executable, str(HERE / script)] + args
    print(f"\n$ {' '.join(cmd[1:])}", flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
             f"Machine: {m['cpu']}, {m['cores']} logical cores; MXNet {m['mxnet']}, Python {m['python']}.",
             f"Command: `{result['command']}`. Ratios are ours / GluonCV (speed), all from this one run.", "",
             "| benchmark | ours | GluonCV | ratio | target |", "|---|---|---|---|---|"]
    for name, row in result["train_step"].items():
        lines.append(f"| training step, {name}, batch 8, 320 px | {row['ours_img_s']:.2f} img/s | "
                     f"{row['gluoncv_img_s']:.2f} img/s (darknet53) | {row['ratio']:.2f}x | "
                     f"{'>= 1.25x' if name == 'darknet53' else '-'} |")
    for model, block in result["inference"].items():
        for batch, rows in block["batches"].items():
            gcv = rows.get("gluoncv fp32")
            for key, row in rows.items():
                if key.startswith("gluoncv"):
                    continue
                target = (">= 1.2x" if key.startswith("mxnet fp32") else ">= 3x (fastest)") if gcv else "-"
                lines.append(f"| inference {key}, {model}, batch {batch} | {row['ms']:.1f} ms, "
                             f"{row['gflops']:.0f} GFLOP/s | "
                             + (f"{gcv['ms']:.1f} ms fp32 ({rows['gluoncv fused']['ms']:.1f} ms fused) | "
                                f"{row['vs_gluoncv_fp32']:.2f}x | {target} |" if gcv else "- | - | - |"))
    d = result["data_pipeline"]
    if d.get("ratio") is not None:
        lines.append(f"| data pipeline at 416, batch 16 | {d['ours_img_s']:.1f} img/s | "
                     f"{d['gluoncv_img_s']:.1f} img/s | {d['ratio']:.2f}x | >= 3x |")
    lines += ["", "GFLOP per image (convolutions, 2 x multiply-adds): "
              + ", ".join(f"{k} {v['gflop_per_image']:.2f}" for k, v in result["inference"].items()), ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats in every benchmark")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for <date>.json and .md")
    args = parser.parse_args(argv)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    result: Dict[str, Any] = {"date": date, "quick": args.quick, "machine": machine(),
                              "command": "python benchmarks/run_all.py" + (" --quick" if args.quick else "")}
    with tempfile.TemporaryDirectory() as tmp:
        train_json, infer_json = Path(tmp) / "train.json", Path(tmp) / "infer.json"
        run("train_step.py", (["--quick"] if args.quick else []) + ["--json", str(train_json)])
        result["train_step"] = json.loads(train_json.read_text())
        run("inference.py", (["--runs", "3", "--rounds", "1"] if args.quick else ["--runs", "10", "--rounds", "2"])
            + ["--json", str(infer_json)])
        result["inference"] = json.loads(infer_json.read_text())
    text = run("data_pipeline.py", ["--batches", "8", "--rounds", "1"] if args.quick else [])
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
