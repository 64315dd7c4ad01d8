"""Benchmark: `ureca train` at InternVL3-1B size (random weights from the packaged config) on one GPU, in bf16.

Builds a random-weight InternVL at the size of OpenGVLab/InternVL3-1B-hf (no hub needed) and saves it as a base
folder, draws synthetic scenes at SA-1B size (2250x1500 and 1500x2250, so 12 image tiles plus the thumbnail
per sample, as on real data), then runs the real command, `python -m ureca_cli train`, three times:

1. stage 1 then stage 2 (`--stage both`) with gradient checkpointing (the default);
2. stage 2 again from that stage-1 checkpoint without gradient checkpointing.

It prints, side by side, each run's samples per second and peak GPU memory (the figures `ureca train` itself
prints at the end of a stage), and the ratios of run 2 to run 1's stage 2. Random weights train as fast as real
ones; the loss means nothing here.

    python bench/train_gpu.py                        # H100: about 3 minutes
    python bench/train_gpu.py --config tiny --cpu    # a smoke run of the same code on the CPU
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DONE = re.compile(r"stage (\d): done, (\d+) steps, mean loss ([\d.]+), ([\d.]+) samples/s(?:, peak GPU memory ([\d.]+) GiB)?")
PARAMS = re.compile(r"stage (\d): ([\d,]+) trainable of ([\d,]+) parameters")


def log(msg: str) -> None:
    print(f"[train_gpu {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def train(args: argparse.Namespace, extra: list[str], name: str) -> dict:
    cmd = [sys.executable, "-m", "ureca_cli", "train", str(args.work / "data" / "train.jsonl"),
           "--out", str(args.work / name), "--max-steps", str(args.steps), "--batch-size", str(args.batch_size),
           "--global-batch", str(args.global_batch), "--logging-steps", "5", "--save-steps", "100000",
           "--no-validate", *extra]
    if args.cpu:
        cmd.append("--cpu")
    log(" ".join(cmd[1:]))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    sys.stderr.write(proc.stderr)
    if proc.returncode:
        raise SystemExit(f"{name}: ureca train exited {proc.returncode}")
    out: dict = {"wall_s": time.perf_counter() - t0}
    for m in PARAMS.finditer(proc.stderr):
        out.setdefault(m.group(1), {})["trainable"] = m.group(2)
        out[m.group(1)]["total"] = m.group(3)
    for m in DONE.finditer(proc.stderr):
        st = out.setdefault(m.group(1), {})
        st.update(steps=int(m.group(2)), loss=float(m.group(3)), rate=float(m.group(4)),
                  peak=float(m.group(5)) if m.group(5) else float("nan"))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="internvl3_1b", help="packaged config: internvl3_1b or tiny")
    ap.add_argument("--work", type=Path, default=Path("/tmp/ureca-train-gpu"))
    ap.add_argument("--scenes", type=int, default=24, help="synthetic training scenes (2-4 regions each)")
    ap.add_argument("--size", default="2250x1500", help="scene size WxH (the transposed size is used too)")
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps per stage")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--global-batch", type=int, default=16)
    ap.add_argument("--cpu", action="store_true")
    args = ap.parse_args()

    import torch

    if not args.cpu and not torch.cuda.is_available():
        print("bench/train_gpu.py: no CUDA device here, nothing measured (--config tiny --cpu gives a smoke run)")
        return 0
    from ureca_cli.model import random_internvl
    from ureca_cli.train.synthetic import SceneConfig, write_dataset

    base = args.work / "base"
    if not (base / "config.json").is_file():
        t0 = time.perf_counter()
        model, processor = random_internvl(args.config, seed=0)
        model.save_pretrained(str(base))
        processor.save_pretrained(str(base))
        del model
        log(f"random {args.config} base saved to {base} ({time.perf_counter() - t0:.0f}s)")
    w, h = (int(x) for x in args.size.split("x"))
    if not (args.work / "data" / "train.jsonl").is_file():
        write_dataset(args.work / "data", train=args.scenes, test=1, seed=0, cfg=SceneConfig(sizes=((w, h), (h, w))))
    device = "cpu" if args.cpu or not torch.cuda.is_available() else torch.cuda.get_device_name(0)
    runs = {
        "both, checkpointing": train(args, ["--stage", "both", "--base", str(base)], "both"),
        "2, no checkpointing": train(args, ["--stage", "2", "--init", str(args.work / "both" / "stage1"),
                                            "--no-gradient-checkpointing"], "s2-nockpt"),
    }
    print(f"\n`ureca train` at {args.config} size, random weights, on {device}: {args.steps} steps per stage, "
          f"global batch {args.global_batch} ({args.batch_size} per forward), scenes {w}x{h} and {h}x{w}\n")
    print("| run | stage | trainable / total parameters | samples/s | peak GPU memory (GiB) | mean loss |")
    print("|---|---|---|---|---|---|")
    for name, r in runs.items():
        for stage in ("1", "2"):
            if stage in r and "rate" in r[stage]:
                s = r[stage]
                print(f"| {name} | {stage} | {s.get('trainable', '?')} / {s.get('total', '?')} | {s['rate']:.2f} | "
                      f"{s['peak']:.2f} | {s['loss']:.3f} |")
    a, b = runs["both, checkpointing"].get("2", {}), runs["2, no checkpointing"].get("2", {})
    if "rate" in a and "rate" in b:
        print(f"\nstage 2 without checkpointing: {b['rate'] / a['rate']:.2f}x the samples/s, "
              f"{b['peak'] / a['peak']:.2f}x the peak memory")  # nan without a GPU
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
