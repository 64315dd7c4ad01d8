"""Benchmark: the URECA model at InternVL3-1B size (random weights from the packaged config), on one device.

Prints, side by side:
1. mask tiling + mask encoding of an SA-1B-sized mask (1500x2250, 7 tiles), against the image's own
   preprocessing + vision encoding;
2. the whole forward (prefill, next-token logits) of plain InternVL (no mask tokens) and of URECA (mask encoder +
   K x tiles mask tokens) for images of 1 and 7 tiles: URECA's overhead (target < 5%);
3. prefill of 20 regions of one image: the shared image encoding (vision once, prompt prefix once, the 20
   suffixes batched from a copy of its KV cache) against one region at a time (a whole forward per region;
   measured on --single regions and scaled to 20, since each costs the same). Target: several times faster.

    .venv/bin/python bench/model.py                 # CPU, float32 (about 4 GB of weights)
    .venv/bin/python bench/model.py --device cuda --dtype bfloat16
    .venv/bin/python bench/model.py --config tiny   # a seconds-long smoke run of the same code
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def timed(fn, repeats: int, sync) -> float:
    """Median wall time of `repeats` calls of fn (seconds)."""
    times = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="internvl3_1b", help="packaged config: internvl3_1b or tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--mask-tokens", type=int, default=8)
    ap.add_argument("--regions", type=int, default=20)
    ap.add_argument("--single", type=int, default=3, help="regions timed one at a time (scaled to --regions)")
    ap.add_argument("--batch-size", type=int, default=10, help="regions per batch in the shared prefill")
    ap.add_argument("--repeats", type=int, default=2, help="timings per figure (the median is printed)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    from ureca_cli.model.tiling import tile_mask
    from ureca_cli.model.tiny import random_internvl
    from ureca_cli.model.ureca import UrecaConfig, build_ureca

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)

    t0 = time.perf_counter()
    base, hf_proc = random_internvl(args.config, dtype=args.dtype)
    size = base.config.vision_config.image_size
    tile = size[0] if isinstance(size, (list, tuple)) else size
    config = UrecaConfig(base=None, num_mask_tokens=args.mask_tokens, tile_size=tile)
    model = build_ureca(base, hf_proc, config).to(dev).eval()
    proc = model.processor
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    enc_params = sum(p.numel() for p in model.mask_encoder.parameters()) / 1e6
    log(f"built {args.config} ({n_params:.0f}M parameters, mask encoder {enc_params:.1f}M) in "
        f"{time.perf_counter() - t0:.1f} s")

    rng = np.random.default_rng(0)

    def image(w: int, h: int) -> Image.Image:
        return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))

    def ellipse(w: int, h: int, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        yy, xx = np.mgrid[:h, :w]
        return (((xx - cx * w) / (rx * w)) ** 2 + ((yy - cy * h) / (ry * h)) ** 2 <= 1).astype(np.uint8)

    def plain_inputs(img):
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": config.question}]}]
        text = hf_proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        return hf_proc(images=[img], text=[text], return_tensors="pt", **proc._image_kwargs())

    rows: list[tuple[str, str, str, str]] = []
    with torch.inference_mode():
        # warm-up (allocator, kernels) on a small input
        warm = proc(image(tile, tile), ellipse(tile, tile, 0.5, 0.5, 0.3, 0.3))
        model(**warm, logits_to_keep=1)

        # 1. mask tiling and encoding vs the image's preprocessing and vision encoding (7 tiles)
        big_w, big_h = 2250, 1500
        big_mask = ellipse(big_w, big_h, 0.4, 0.6, 0.2, 0.3)
        big_img = image(big_w, big_h)
        t_tile = timed(lambda: tile_mask(big_mask, tile, max_tiles=config.max_tiles), 5, sync)
        tiles = torch.from_numpy(tile_mask(big_mask, tile, max_tiles=config.max_tiles)).to(dev)
        t_enc = timed(lambda: model.mask_features(tiles), 5, sync)
        t_imgproc = timed(lambda: plain_inputs(big_img), 3, sync)
        pv = plain_inputs(big_img)["pixel_values"].to(dev)
        t_vis = timed(lambda: model.image_features(pv), args.repeats, sync)
        rows.append((f"mask tiling + encoding, {big_w}x{big_h} -> {len(tiles)} tiles",
                     f"{(t_tile + t_enc) * 1e3:.1f} ms (tile {t_tile * 1e3:.1f} + encode {t_enc * 1e3:.1f})",
                     f"image preprocess + vision {(t_imgproc + t_vis) * 1e3:.0f} ms",
                     f"{(t_tile + t_enc) / (t_imgproc + t_vis) * 100:.2f}% of it"))
        log("mask tiling/encoding done")

        # 2. whole forward (prefill) with vs without mask tokens
        for n_tiles, (w, h) in ((1, (tile, tile)), (7, (3 * tile, 2 * tile))):
            img = image(w, h)
            mask = ellipse(w, h, 0.5, 0.5, 0.25, 0.25)
            plain = {k: v.to(dev) for k, v in plain_inputs(img).items()}
            ureca = {k: v.to(dev) for k, v in proc(img, mask).items()}
            assert ureca["pixel_values"].shape[0] == n_tiles == ureca["mask_tiles"].shape[0]
            t_plain, t_ureca = [], []
            for _ in range(args.repeats):  # interleaved, so drifting machine load hits both alike
                t_plain.append(timed(lambda plain=plain: base(**plain, logits_to_keep=1), 1, sync))
                t_ureca.append(timed(lambda ureca=ureca: model(**ureca, logits_to_keep=1), 1, sync))
            tp, tu = statistics.median(t_plain), statistics.median(t_ureca)
            extra = int(ureca["input_ids"].shape[1] - plain["input_ids"].shape[1])
            rows.append((f"forward, {n_tiles} tile(s): plain InternVL vs URECA",
                         f"{tp:.2f} s ({plain['input_ids'].shape[1]} tokens)",
                         f"{tu:.2f} s (+{extra} tokens)",
                         f"overhead {(tu / tp - 1) * 100:+.1f}%"))
            log(f"forward {n_tiles} tiles done")

        # 3. prefill of N regions of one image: shared encoding vs one at a time
        w, h = tile, tile
        img = image(w, h)
        masks = [ellipse(w, h, rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.3),
                         rng.uniform(0.05, 0.3)) for _ in range(args.regions)]
        exs = [{k: v.to(dev) for k, v in proc(img, m).items()} for m in masks]
        first = exs[0]
        all_tiles = [e["mask_tiles"] for e in exs]
        t_shared = timed(lambda: model.prefill_shared(first["input_ids"], first["pixel_values"], all_tiles,
                                                      batch_size=args.batch_size), args.repeats, sync)
        n_single = min(args.single, args.regions)
        t_single = timed(lambda: [model(**e, logits_to_keep=1) for e in exs[:n_single]], 1, sync)
        t_single_all = t_single / n_single * args.regions
        rows.append((f"prefill {args.regions} regions of one {w}x{h} image",
                     f"one at a time {t_single_all:.2f} s ({n_single} timed, x{args.regions / n_single:.1f})",
                     f"shared encoding {t_shared:.2f} s",
                     f"{t_single_all / t_shared:.1f}x faster"))
        log("prefill done")

    print(f"\nURECA model benchmark: {args.config}, {n_params:.0f}M parameters, K={args.mask_tokens}, "
          f"{args.device} {args.dtype}, torch threads {torch.get_num_threads()}")
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  " + "  |  ".join(c.ljust(widths[i]) for i, c in enumerate(r)))
    print("  (plain and URECA forwards run interleaved and the medians are compared; on a busy shared CPU their "
          "times drift by a few % between runs, which bounds what the overhead figure can resolve)")


if __name__ == "__main__":
    main()
