"""Benchmark the two ways `ureca refine` embeds regions: crop features vs masked pooling, on the CPU.

Model: the random-weight ViT-S/14 at real size (``random:dinov2-vits14``, its configuration ships in the
package); the weights do not change the cost. Input: a textured ``--width`` x ``--height`` photo (SA-1B's
typical 2250x1500 by default) with 10 and 100 elliptical regions of assorted sizes.

- crop: what the released pipeline does, one DINOv2 pass per region on its blurred-background crop (the
  blur of the photo computed once per image, then a crop per region, letterboxed to 224, batches of 32);
- masked-pool: one DINOv2 pass over the whole photo (long side 518), patch features pooled in each mask.

Both start from decoded masks and the loaded photo, and both end with the ``(N, D)`` embeddings the similar
sets are computed from. Prints regions per second for each and the ratio, from one run (each case timed
``--repeat`` times, best kept, since the machine may be shared).

    .venv/bin/python bench/refine.py
    .venv/bin/python bench/refine.py --regions 10,100,300 --threads 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def photo(width: int, height: int, seed: int = 0):
    """A textured RGB photo (PIL), so the blur and the crops do real work."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 24, width // 24, 3), dtype=np.uint8)
    im = Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)
    arr = np.asarray(im).astype(np.int16) + rng.integers(-25, 26, (height, width, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def regions(n: int, width: int, height: int, seed: int = 1) -> list[np.ndarray]:
    """``n`` elliptical ``HxW uint8`` masks, radii from 1% to 20% of the shorter side."""
    rng = np.random.default_rng(seed)
    yy, xx = np.ogrid[:height, :width]
    side = min(width, height)
    out = []
    for _ in range(n):
        rx, ry = rng.uniform(0.01, 0.2, 2) * side
        cx, cy = rng.uniform(rx, width - rx), rng.uniform(ry, height - ry)
        out.append(((((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2) <= 1).astype(np.uint8))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--regions", default="10,100", help="comma-separated region counts per image")
    ap.add_argument("--width", type=int, default=2250)
    ap.add_argument("--height", type=int, default=1500)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--model", default="random:dinov2-vits14")
    ap.add_argument("--repeat", type=int, default=2, help="time each case this many times and keep the best "
                    "(the machine may be shared)")
    args = ap.parse_args()

    import torch

    from ureca_cli.curate.features import FeatureConfig, RegionEmbedder, load_dinov2
    from ureca_cli.visual.prompter import VisualPrompter

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_dinov2(args.model)
    crop = RegionEmbedder(FeatureConfig(model=args.model, mode="crop"), model=model)
    pool = RegionEmbedder(FeatureConfig(model=args.model, mode="masked-pool"), model=model)
    image = photo(args.width, args.height)
    counts = [int(x) for x in args.regions.split(",")]
    # warm-up: the first pass of each shape pays for allocations
    small = regions(2, args.width, args.height)
    crop.embed_crops([VisualPrompter(image).blurred_crop(m) for m in small])
    pool.embed_masked(image, small)

    print(f"model {args.model} (random weights, {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M "
          f"parameters), CPU, {torch.get_num_threads()} threads, photo {args.width}x{args.height}")
    print(f"{'regions':>8} {'crop s':>9} {'crop reg/s':>11} {'pool s':>9} {'pool reg/s':>11} {'pool/crop':>10}")
    for n in counts:
        ms = regions(n, args.width, args.height)
        t_crop = t_pool = float("inf")
        for _ in range(max(1, args.repeat)):
            t0 = time.perf_counter()
            vp = VisualPrompter(image)  # the blur of the photo, once per image
            a = crop.embed_crops([vp.blurred_crop(m) for m in ms])
            t_crop = min(t_crop, time.perf_counter() - t0)
            t0 = time.perf_counter()
            b = pool.embed_masked(image, ms)
            t_pool = min(t_pool, time.perf_counter() - t0)
        assert a.shape == b.shape == (n, model.config.hidden_size)
        print(f"{n:>8} {t_crop:>9.2f} {n / t_crop:>11.1f} {t_pool:>9.2f} {n / t_pool:>11.1f} "
              f"{t_crop / t_pool:>9.1f}x")


if __name__ == "__main__":
    main()
