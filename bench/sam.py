"""Benchmark SAM through transformers: seconds per image for point prompts and for automatic mask generation,
batched against one prompt at a time, with peak memory, from one run.

Model: SAM ViT-B at real size with random weights (`ureca_cli/configs/sam-vit-base.json`, 93.7M parameters,
1024 x 1024 input), built without the hub. Image: `coffee.png` (600 x 400) from ../shared/data/images, or
scikit-image's copy of it. Contenders, each after the same warm-up, in one process; peak RSS is reset between
them (Linux `/proc/self/clear_refs`), and on a GPU its peak allocated memory is reset too:

- points, batched: the image encoded once, all regions' prompts in one decoder call (`segment_regions`);
- points, shared encoding: encoded once, one decoder call per region (`batched=False`);
- points, one at a time: each region on its own, encoded and decoded (SAM called once per prompt);
- AMG, batched: automatic mask generation, `points_per_batch` 64;
- AMG, one point at a time: the same with `points_per_batch` 1.

Random weights give meaningless masks and scores, so AMG runs with its filters off (predicted IoU and
stability thresholds 0): every mask goes through upscaling, stability, RLE encoding and NMS, the most work a
point can cost. The default run (4 regions, a 8 x 8 AMG grid) takes a few minutes on 2 CPU cores.

    PYTHONPATH=. .venv/bin/python bench/sam.py [--regions 4] [--points-per-side 8] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED_IMAGE = ROOT.parent / "shared" / "data" / "images" / "coffee.png"


def _rss_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: the process's peak


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def _image():
    import numpy as np
    from PIL import Image

    if SHARED_IMAGE.is_file():
        with Image.open(SHARED_IMAGE) as im:
            return SHARED_IMAGE.name, np.asarray(im.convert("RGB")).copy()
    from skimage import data

    return "skimage.data.coffee()", data.coffee()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--regions", type=int, default=4, help="point prompts per image (one positive point each)")
    ap.add_argument("--points-per-side", type=int, default=8, help="AMG grid (SAM's default is 32)")
    ap.add_argument("--device", default=None, help="cpu, cuda (default: cuda when present)")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16", "auto"))
    args = ap.parse_args()

    import torch

    from ureca_cli import sam

    t0 = time.perf_counter()
    seg = sam.random_sam("sam-vit-base", seed=0, device=args.device, dtype=args.dtype)
    build_s = time.perf_counter() - t0
    gpu = seg.device.startswith("cuda")
    name, image = _image()
    h, w = image.shape[:2]
    n = args.regions
    regions = [sam.Region((sam.Point(w * (0.5 + i % 4) / 4, h * (0.5 + (i // 4) % 4) / 4),)) for i in range(n)]
    pps = args.points_per_side
    amg = dict(points_per_side=pps, pred_iou_thresh=0.0, stability_score_thresh=0.0)

    calls = {"encoder": 0, "decoder": 0}
    seg.model.vision_encoder.register_forward_hook(lambda *a: calls.__setitem__("encoder", calls["encoder"] + 1))
    seg.model.mask_decoder.register_forward_hook(lambda *a: calls.__setitem__("decoder", calls["decoder"] + 1))

    contenders = {
        "points, batched (1 encoding, 1 decoder call)": lambda: sam.segment_regions(seg, image, regions),
        "points, shared encoding, 1 decoder call/region": lambda: sam.segment_regions(seg, image, regions,
                                                                                       batched=False),
        "points, one prompt at a time (encode+decode)": lambda: [sam.segment_regions(seg, image, [r])
                                                                 for r in regions],
        "AMG, points_per_batch 64": lambda: sam.generate_masks(seg, image, sam.AmgConfig(**amg, points_per_batch=64)),
        "AMG, one point at a time": lambda: sam.generate_masks(seg, image, sam.AmgConfig(**amg, points_per_batch=1)),
    }
    sam.segment_regions(seg, image, regions[:1])  # warm-up: first-call allocations outside every timing
    rows = []
    for label, fn in contenders.items():
        calls.update(encoder=0, decoder=0)
        resettable = _reset_peak()
        start_rss = _rss_mb("VmRSS")
        if gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        result = fn()
        if gpu:
            torch.cuda.synchronize()
        secs = time.perf_counter() - start
        gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if gpu else float("nan")
        masks = len(result) if label.startswith("AMG") else n
        rows.append((label, secs, _rss_mb("VmHWM"), start_rss, gpu_peak, dict(calls), masks, resettable))

    params = sum(p.numel() for p in seg.model.parameters()) / 1e6
    threads = torch.get_num_threads()
    print(f"SAM ViT-B, random weights ({params:.1f}M parameters, built in {build_s:.1f} s), {seg.device} "
          f"{str(seg.dtype).replace('torch.', '')}, {threads} CPU threads; image {name} {w}x{h}")
    print(f"point prompts: {n} regions of one positive point each; AMG: points_per_side {pps} "
          f"({pps * pps} points, {3 * pps * pps} masks decoded), filters off (random weights); one warm-up call first")
    head = f"{'':48} {'s/image':>8} {'x batched':>10} {'peak RSS MB':>12} {'+MB':>6} {'GPU peak MB':>12} " \
           f"{'encoder':>8} {'decoder':>8} {'masks':>6}"
    print("\n" + head)
    base = {"points": rows[0][1], "AMG": rows[3][1]}
    for label, secs, peak, start_rss, gpu_peak, c, masks, _ in rows:
        ratio = secs / base[label.split(",")[0]]
        print(f"{label:48} {secs:8.2f} {ratio:9.1f}x {peak:12.0f} {peak - start_rss:6.0f} {gpu_peak:12.0f} "
              f"{c['encoder']:8d} {c['decoder']:8d} {masks:6d}")
    if not all(r[-1] for r in rows):
        print("(peak RSS could not be reset between contenders here: each figure is the process's peak so far)")
    p_b, p_s, p_1 = (rows[i][1] for i in range(3))
    a_b, a_1 = rows[3][1], rows[4][1]
    print(f"\npoint prompts: one prompt at a time takes {p_1 / p_b:.1f}x the batched time "
          f"(shared encoding alone: {p_s / p_b:.2f}x); AMG one point at a time takes {a_1 / a_b:.1f}x the batched time")


if __name__ == "__main__":
    main()
