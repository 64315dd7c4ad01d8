"""Benchmark `ureca tree` against a plain implementation of the released algorithm, on SA-1B-sized input.

Input: synthetic SA-1B per-image files, 2250x1500 like SA-1B's released images, about 100 masks each nested
like SAM's output (objects, their parts, parts of parts, a few large "stuff" masks, some parts spilling out
of their object), with ragged edges; the mean number of RLE runs per mask is printed so the input can be
compared with real SA-1B files.

Each contender runs in a fresh process (so its peak RSS is its own): time per image (JSON in, tree out) and
peak RSS. The baseline is the released code's algorithm written plainly: decode every mask to a bitmap, sort
by area, greedy descent from the root with containment computed on bitmaps. Ours works on RLEs with a box
pre-filter. The figures compared are the ratios; absolute ms are printed beside them.

    .venv/bin/python bench/tree.py [--images 3] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

H, W = 1500, 2250


# ------------------------------------------------------------------------------------------- the input
def _blob(rng: np.random.Generator, cy: float, cx: float, r: float) -> tuple[slice, slice, np.ndarray]:
    """A ragged blob: a wobbly polar outline, roughened at the pixel scale. Returns its box and local mask."""
    pad = int(r * 1.6) + 2
    y0, y1 = max(0, int(cy) - pad), min(H, int(cy) + pad)
    x0, x1 = max(0, int(cx) - pad), min(W, int(cx) + pad)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    theta = np.arctan2(yy - cy, xx - cx)
    radius = np.full_like(theta, r)
    for k in range(2, 9):  # a wobbly outline
        radius += r * rng.uniform(0, 0.12 / k * 2) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    ragged = rng.normal(0, 0.04 * r, yy.shape).astype(np.float32)  # ragged edge at the pixel scale
    inside = np.hypot(yy - cy, xx - cx) < radius + ragged
    return slice(y0, y1), slice(x0, x1), inside


def _full(box: tuple[slice, slice, np.ndarray]) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[box[0], box[1]] = box[2]
    return m


def make_image_masks(seed: int, objects: int = 10, parts: int = 3, subparts: int = 2) -> list[np.ndarray]:
    """About ``objects * (1 + parts * (1 + subparts)) + 4`` masks (104 by default), ``HxW`` bool each."""
    rng = np.random.default_rng(seed)
    masks = []
    yy = np.arange(H)[:, None]
    masks.append(np.broadcast_to(yy > H * 0.7, (H, W)).copy())  # floor
    masks.append(np.broadcast_to(yy < H * 0.25, (H, W)).copy())  # sky
    masks.append(np.broadcast_to(yy > H * 0.85, (H, W)).copy())  # a strip of the floor
    masks.append(np.ones((H, W), dtype=bool))  # the whole image, as SAM sometimes proposes
    for _ in range(objects):
        r = rng.uniform(0.07, 0.14) * H
        cy, cx = rng.uniform(r, H - r), rng.uniform(r, W - r)
        obj = _full(_blob(rng, cy, cx, r))
        masks.append(obj)
        for _ in range(parts):
            pr = r * rng.uniform(0.3, 0.5)
            py, px = cy + rng.uniform(-0.5, 0.5) * r, cx + rng.uniform(-0.5, 0.5) * r
            part = _full(_blob(rng, py, px, pr))
            if rng.random() < 0.8:  # most parts lie inside their object, some spill out
                part &= obj
            masks.append(part)
            for _ in range(subparts):
                sr = pr * rng.uniform(0.3, 0.5)
                sy, sx = py + rng.uniform(-0.4, 0.4) * pr, px + rng.uniform(-0.4, 0.4) * pr
                masks.append(_full(_blob(rng, sy, sx, sr)) & part)
    order = rng.permutation(len(masks))  # SAM's output is not sorted by area
    return [masks[i] for i in order]


def write_dataset(folder: Path, images: int) -> tuple[list[Path], float, int]:
    """SA-1B JSON files (and one shared JPEG) in ``folder``; returns (paths, mean runs per mask, masks)."""
    from PIL import Image
    from pycocotools import mask as mu

    from ureca_cli.masks.runs import RunSet

    gradient = np.linspace(0, 255, W, dtype=np.uint8)[None, :, None].repeat(H, 0).repeat(3, 2)
    Image.fromarray(gradient).save(folder / "sa_bench.jpg", quality=80)
    paths, runs, count = [], [], 0
    for k in range(images):
        anns = []
        for i, m in enumerate(make_image_masks(seed=k)):
            rle = mu.encode(np.asfortranarray(m.astype(np.uint8)))
            x, y, w, h = (float(v) for v in mu.toBbox(rle))
            counts = rle["counts"].decode()
            runs.append(int(RunSet.from_counts([rle["counts"]], H, W).n_runs[0]))
            anns.append({"id": i, "segmentation": {"size": [H, W], "counts": counts},
                         "bbox": [x, y, max(w - 1, 0), max(h - 1, 0)], "area": int(m.sum()),
                         "predicted_iou": 0.9, "stability_score": 0.95, "crop_box": [0, 0, W, H],
                         "point_coords": [[x, y]]})
        count += len(anns)
        doc = {"image": {"image_id": k, "width": W, "height": H, "file_name": "sa_bench.jpg"}, "annotations": anns}
        path = folder / f"sa_{k}.json"
        path.write_text(json.dumps(doc))
        paths.append(path)
    return paths, float(np.mean(runs)), count


# ------------------------------------------------------------------------------------------ contenders
def baseline_parents(path: Path, threshold: float = 0.8) -> list:
    """The released algorithm, plainly: decode every mask, sort by area, greedy descent on bitmaps."""
    from pycocotools import mask as mu

    doc = json.loads(path.read_text())
    anns = doc["annotations"]
    bits = [mu.decode({"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()})
            .astype(bool) for a in anns]
    areas = [int(b.sum()) for b in bits]
    order = sorted(range(len(bits)), key=lambda i: (-areas[i], i))
    children: dict = {None: []}
    parents: list = [None] * len(bits)
    for i in order:
        node = None
        while True:
            nxt = None
            for c in children[node]:
                if areas[i] and np.logical_and(bits[i], bits[c]).sum() / areas[i] >= threshold:
                    nxt = c
                    break
            if nxt is None:
                break
            node = nxt
        children[node].append(i)
        children[i] = []
        parents[i] = anns[node]["id"] if node is not None else None
    return parents


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: per address space, so a fresh process starts its own count)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: includes the parent's


def worker(name: str, paths: list[Path], repeats: int) -> dict:
    """Run one contender over ``paths`` (``repeats`` passes) in this process; report ms/image and RSS."""
    from ureca_cli.curate.tree import TreeConfig, build_tree

    cfg = {"tightest": TreeConfig(), "first": TreeConfig(parent_rule="first")}.get(name)
    if cfg is not None:
        build_tree(paths[0], cfg)  # warm imports (pycocotools, PIL) outside the timing

        def run(p: Path) -> list:
            return [n["parent"] for n in build_tree(p, cfg)["nodes"]]
    else:
        from pycocotools import mask as _  # noqa: F401 - imported outside the timing

        def run(p: Path) -> list:
            return baseline_parents(p)
    rss_before = _peak_rss_mb()
    start = time.perf_counter()
    parents = []
    for _ in range(repeats):
        parents = [run(p) for p in paths]
    ms = (time.perf_counter() - start) * 1000 / (repeats * len(paths))
    peak = _peak_rss_mb()
    return {"ms": ms, "peak_mb": peak, "import_mb": rss_before, "parents": parents}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5, help="passes over the images for ours (baseline: 1)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, [Path(p) for p in args.paths], args.repeats)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        paths, mean_runs, count = write_dataset(Path(tmp), args.images)
        print(f"input: {args.images} images {W}x{H}, {count / args.images:.0f} masks each, "
              f"mean {mean_runs:,.0f} RLE runs per mask (made in {time.perf_counter() - t0:.1f} s)")
        results = {}
        for name, repeats in (("baseline", 1), ("first", args.repeats), ("tightest", args.repeats)):
            cmd = [sys.executable, __file__, "--worker", name, "--repeats", str(repeats), *map(str, paths)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])

    base = results["baseline"]
    labels = {"baseline": "released algorithm, plain (decode all, bitmaps)",
              "first": "ureca tree --parent-rule first (RLE)", "tightest": "ureca tree (tightest, RLE)"}
    print(f"\n{'':50} {'ms/image':>10} {'speed-up':>9} {'peak RSS MB':>12} {'RSS ratio':>10} {'after imports':>14}")
    for name, r in results.items():
        print(f"{labels[name]:50} {r['ms']:10.1f} {base['ms'] / r['ms']:8.0f}x {r['peak_mb']:12.0f} "
              f"{base['peak_mb'] / r['peak_mb']:9.1f}x {r['import_mb']:13.0f}")
    same = sum(a == b for pa, pb in zip(results["first"]["parents"], base["parents"], strict=True)
               for a, b in zip(pa, pb, strict=True))
    print(f"\nparents of --parent-rule first equal the baseline's for {same}/{count} masks")
    target = base["ms"] / results["tightest"]["ms"] >= 100 and base["ms"] / results["first"]["ms"] >= 100
    print(f"target (>= 100x faster than the baseline): {'met' if target else 'NOT met'}")


if __name__ == "__main__":
    main()
