"""Benchmark: where a single `ureca caption` spends its time, before and after reading the weights as stored.

A URECA checkpoint at InternVL3-1B size with random weights (the packaged config, 938M parameters), saved as a
trained one is: the base in bfloat16 (the dtype of the hub's -hf checkpoints), a LoRA adapter of the paper's rank
(r 128 on the language model), the mask encoder and the added token rows. Each run is a fresh process that does
what one `ureca caption IMAGE --box ...` does, through the package's public API, and times its phases:
imports (torch, transformers), load (`Captioner(...)`: the checkpoint into the model), preprocess (image and mask
tiles, tokens) and generate (vision encoding, prefill, 8 new tokens) for one region of a 448x448 photo.

- before: the code given with `--before DIR` (a checkout from before this change), `--dtype auto`; without
  `--before`, this code with `--dtype float32` (what auto meant on the CPU before: the weights loaded and cast);
- after: this code, `--dtype auto` (on the CPU: the weights read memory-mapped in their own dtype where the CPU
  computes bfloat16 at speed; the adapter filled from its file, in the model's dtype).

Runs alternate (before, after, before, ...) after one warm-up run of each (page cache); the medians are printed
side by side with after/before ratios.

    .venv/bin/python bench/caption.py                          # CPU; builds the checkpoint once in --work
    .venv/bin/python bench/caption.py --before ../ureca-old    # against an older checkout
    .venv/bin/python bench/caption.py --device cuda            # on a GPU (auto is bfloat16 there)
    .venv/bin/python bench/caption.py --config tiny            # a seconds-long smoke run of the same code
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PHASES = ("imports", "load", "preprocess", "generate", "total")

# one caption, timed phase by phase, through what both old and new code offer (Captioner, its processor)
ONE_RUN = r"""
import json, sys, time
t0 = time.perf_counter()
import torch, transformers
transformers.AutoProcessor, transformers.InternVLForConditionalGeneration
t1 = time.perf_counter()
from PIL import Image
from ureca_cli.caption.captioner import CaptionConfig, Captioner
from ureca_cli.masks.regions import mask_from_box
ckpt, photo, dtype, device, tokens = sys.argv[1:6]
image = Image.open(photo).convert("RGB")
mask = mask_from_box("100,120,200,150", image.size)
cap = Captioner(CaptionConfig(model=ckpt, dtype=dtype, device=device, max_new_tokens=int(tokens)))
sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
sync()
t2 = time.perf_counter()
cap.processor(image, mask, None)
t3 = time.perf_counter()
cap.caption_masks(image, [mask])  # preprocessing again, then generation
sync()
t4 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "load": t2 - t1, "preprocess": t3 - t2, "generate": (t4 - t3) - (t3 - t2),
                  "total": t4 - t0, "dtype": str(cap.model.dtype).removeprefix("torch.")}))
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build(folder: Path, config: str) -> Path:
    """The checkpoint (built once): random weights, bfloat16 base, LoRA r 128 (r 4 for tiny), and a photo."""
    import numpy as np
    import torch
    from PIL import Image

    from ureca_cli.model import save_checkpoint
    from ureca_cli.model.tiny import random_internvl
    from ureca_cli.model.ureca import UrecaConfig, build_ureca

    ckpt = folder / f"ureca-{config}"
    if not (ckpt / "ureca.json").is_file():
        t = time.perf_counter()
        base, proc = random_internvl(config, dtype="bfloat16")
        base = base.to(torch.bfloat16)
        size = base.config.vision_config.image_size
        tile = size[0] if isinstance(size, (list, tuple)) else size
        model = build_ureca(base, proc, UrecaConfig(base=None, tile_size=tile))
        tiny = config == "tiny"
        model.add_lora(r=4 if tiny else 128, alpha=8 if tiny else 256, dropout=0.05)
        with torch.no_grad():
            for name, p in model.base.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.01)
        save_checkpoint(model, ckpt)
        log(f"built {ckpt} in {time.perf_counter() - t:.0f} s")
    photo = folder / "photo.png"
    if not photo.is_file():
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 255, (448, 448, 3), dtype=np.uint8)).save(photo)
    return ckpt


def run(tree: Path, ckpt: Path, photo: Path, dtype: str, device: str, tokens: int) -> dict:
    cmd = [sys.executable, "-c", ONE_RUN, str(ckpt), str(photo), dtype, device, str(tokens)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)})
    if proc.returncode != 0:
        raise SystemExit(f"the caption run failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="internvl3_1b", help="packaged config: internvl3_1b or tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each (the median is printed)")
    ap.add_argument("--tokens", type=int, default=8, help="new tokens per caption")
    ap.add_argument("--before", type=Path, default=None, help="a checkout of the code before (its ureca_cli "
                    "runs with --dtype auto); default: this code with --dtype float32")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "ureca-bench-caption",
                    help="folder for the checkpoint (kept between runs)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    ckpt = build(args.work, args.config)
    photo = args.work / "photo.png"
    if args.before is not None:
        before = (args.before.resolve(), "auto", f"{args.before} (--dtype auto)")
    else:
        before = (ROOT, "float32" if args.device == "cpu" else "bfloat16", "this code, --dtype float32")
    contenders = {"before": before, "after": (ROOT, "auto", "this code, --dtype auto")}
    runs: dict[str, list[dict]] = {name: [] for name in contenders}
    for tree, dtype, _ in contenders.values():  # warm-up: page cache, compiled bytecode
        run(tree, ckpt, photo, dtype, args.device, args.tokens)
    for i in range(args.repeats):
        for name, (tree, dtype, _) in contenders.items():
            runs[name].append(run(tree, ckpt, photo, dtype, args.device, args.tokens))
            log(f"{name} {i + 1}/{args.repeats}: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                                               for k, v in runs[name][-1].items()))
    med = {name: {k: statistics.median(r[k] for r in rs) for k in PHASES} for name, rs in runs.items()}
    print(f"one `ureca caption` of one region (448x448 photo, {args.tokens} new tokens), {args.config} with LoRA, "
          f"{args.device}; medians of {args.repeats} fresh processes")
    for name, (_, _, what) in contenders.items():
        print(f"  {name}: {what}; weights in memory: {runs[name][0]['dtype']}")
    print(f"{'phase':<12}{'before s':>10}{'after s':>10}{'after/before':>14}")
    for k in PHASES:
        b, a = med["before"][k], med["after"][k]
        print(f"{k:<12}{b:>10.2f}{a:>10.2f}{(a / b if b else float('nan')):>13.2f}x")


if __name__ == "__main__":
    main()
