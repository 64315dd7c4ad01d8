"""Benchmark reading SA-1B from a tar shard in place against the same files extracted into a folder.

Input: a plain tar of ``--images`` SA-1B-sized images (2250x1500 JPEGs, each different) with their SA-1B JSON
files (about 100 masks each, from bench/tree.py's generator; ``--mask-sets`` distinct sets are made and reused,
because each takes seconds), members in SA-1B's layout (``sa_N.jpg``, ``sa_N.json``), and the same tar
extracted into a folder. Both are read from the page cache (just written); a cold disk is not measured.

Figures, from one run, folder and tar side by side (taking turns at going first, so load from other processes
falls on both alike), all through the stage's own code:

- tree records per second, the unit of work: ``curate.tree.build_tree`` on a JSON file / on a tar's JSON member
  (read the JSON, check the image's size from its header, build the record); the tar's time includes
  indexing it (headers only), which ``ureca tree`` does before its first member;
- tree records per second, the whole run: ``ureca tree``'s ``run`` on the folder / on the tar (inputs, index,
  records, the output file; one process), the fastest of ``--rounds`` runs each (whole runs cannot take turns
  record by record, so the fastest is the one least disturbed by other processes on a shared machine);
- image-open latency: open and decode one JPEG through the one image loader (``images.load_image`` of a path /
  of a tar reference), and reading its bytes alone.

Target: the tar's record throughput at least 0.9x the folder's, with no extraction.

    .venv/bin/python bench/tar.py [--images 200] [--mask-sets 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _bench_tree():
    """bench/tree.py as a module (its SA-1B-sized mask generator)."""
    spec = importlib.util.spec_from_file_location("bench_tree", Path(__file__).with_name("tree.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------------------------------------- the input
def jpeg_bytes(base: np.ndarray, k: int) -> bytes:
    """Image ``k``: the textured base shifted by a different amount each time, as JPEG (quality 85)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.roll(base, (37 * k, 53 * k), axis=(0, 1))).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def make_inputs(folder: Path, images: int, mask_sets: int) -> tuple[Path, Path, dict]:
    """``folder/sa_000000.tar`` and its extraction ``folder/extracted``; returns them and facts to print."""
    from PIL import Image

    bt = _bench_tree()
    h, w = bt.H, bt.W
    masks_dir = folder / "masks"
    masks_dir.mkdir()
    paths, mean_runs, count = bt.write_dataset(masks_dir, mask_sets)
    annotations = [orjson.loads(p.read_bytes())["annotations"] for p in paths]
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR), dtype=np.int16)
    base = np.clip(smooth + rng.integers(-10, 11, (h, w, 3), dtype=np.int16), 0, 255).astype(np.uint8)
    tar = folder / "sa_000000.tar"
    jpeg_total = 0
    with tarfile.open(tar, "w", format=tarfile.GNU_FORMAT) as tf:
        for k in range(1, images + 1):
            jpg = jpeg_bytes(base, k)
            jpeg_total += len(jpg)
            doc = {"image": {"image_id": k, "width": w, "height": h, "file_name": f"sa_{k}.jpg"},
                   "annotations": annotations[k % mask_sets]}
            for name, data in ((f"sa_{k}.jpg", jpg), (f"sa_{k}.json", orjson.dumps(doc))):
                info = tarfile.TarInfo(name)
                info.size, info.mtime = len(data), 1_700_000_000
                tf.addfile(info, io.BytesIO(data))
    extracted = folder / "extracted"
    with tarfile.open(tar) as tf:
        tf.extractall(extracted, filter="data")
    facts = {"masks": count / mask_sets, "runs": mean_runs, "jpeg_kb": jpeg_total / images / 1024,
             "tar_mb": tar.stat().st_size / 2**20, "w": w, "h": h}
    return tar, extracted, facts


# ------------------------------------------------------------------------------------------ the contenders
def run(tar: Path, extracted: Path) -> dict:
    """Every record built both ways by the stage's own unit of work, in turn (one first, then the other), then
    every image opened both ways through the one image loader; then ``ureca tree``'s whole run on each."""
    from ureca_cli import tars
    from ureca_cli.curate import tree
    from ureca_cli.images import load_image

    cfg = tree.TreeConfig()
    t0 = time.perf_counter()
    items = tars.index_tar(tar).json_members()  # what `ureca tree x.tar` reads before its first member
    index_s = time.perf_counter() - t0
    files = [(extracted / it.json.member, extracted / it.image.member) for it in items]
    tree.build_tree(files[0][0], cfg)  # warm imports (pycocotools, PIL)

    t: dict[str, list[float]] = {k: [] for k in ("folder_rec", "tar_rec", "folder_open", "tar_open",
                                                 "folder_bytes", "tar_bytes")}
    same = 0
    for i, (item, (js, _jpg)) in enumerate(zip(items, files, strict=True)):
        recs = {}
        for who in (("folder", "tar") if i % 2 == 0 else ("tar", "folder")):
            a = time.perf_counter()
            rec = tree.build_tree(js if who == "folder" else item, cfg)  # read JSON, image size, tree
            t[f"{who}_rec"].append(time.perf_counter() - a)
            recs[who] = {k: v for k, v in rec.items() if k not in ("image", "source")}
        same += recs["folder"] == recs["tar"]
    for i, (item, (_js, jpg)) in enumerate(zip(items, files, strict=True)):
        for who in (("folder", "tar") if i % 2 == 0 else ("tar", "folder")):
            a = time.perf_counter()
            load_image(jpg if who == "folder" else str(item.image))
            b = time.perf_counter()
            _ = jpg.read_bytes() if who == "folder" else tars.read_member(item.image)
            c = time.perf_counter()
            t[f"{who}_open"].append(b - a)
            t[f"{who}_bytes"].append(c - b)
    return {"t": t, "index_s": index_s, "n": len(items), "same": same}


def whole_runs(tar: Path, extracted: Path, folder: Path, rounds: int) -> dict[str, list[float]]:
    """Seconds of ``ureca tree``'s whole run (``curate.tree.run``: inputs, tar index, records, output file, one
    process) on the folder and on the tar, taking turns."""
    from ureca_cli.curate import tree
    from ureca_cli.stream import StreamConfig

    out: dict[str, list[float]] = {"folder": [], "tar": []}
    for r in range(rounds):
        for who in (("folder", "tar") if r % 2 == 0 else ("tar", "folder")):
            target = folder / f"whole-{who}.jsonl"
            a = time.perf_counter()
            tree.run([str(extracted if who == "folder" else tar)], tree.TreeConfig(),
                     StreamConfig(output=target, progress=False))
            out[who].append(time.perf_counter() - a)
            target.unlink()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--mask-sets", type=int, default=4, help="distinct mask sets generated (each takes seconds)")
    ap.add_argument("--rounds", type=int, default=3, help="whole `ureca tree` runs on each input (the fastest "
                    "counts: the one least disturbed by other processes)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        tar, extracted, f = make_inputs(Path(tmp), args.images, max(1, min(args.mask_sets, args.images)))
        print(f"input: {args.images} images {f['w']}x{f['h']} (JPEG {f['jpeg_kb']:.0f} KB each), {f['masks']:.0f} "
              f"masks each ({args.mask_sets} distinct sets, mean {f['runs']:,.0f} RLE runs per mask); tar "
              f"{f['tar_mb']:.0f} MB and its extraction (made in "
              f"{time.perf_counter() - t0:.0f} s)")
        r = run(tar, extracted)
        whole = whole_runs(tar, extracted, Path(tmp), args.rounds)
    t, n = r["t"], r["n"]
    med = {k: 1000 * statistics.median(v) for k, v in t.items()}
    folder_rate = n / sum(t["folder_rec"])
    tar_rate = n / (sum(t["tar_rec"]) + r["index_s"])
    whole_folder = n / min(whole["folder"])
    whole_tar = n / min(whole["tar"])
    print(f"\n{'':58} {'folder':>9} {'tar':>9} {'tar vs folder':>14}")
    print(f"{'tree records/s, the unit of work (curate.tree.build_tree)':58} {folder_rate:9.2f} {tar_rate:9.2f} "
          f"{tar_rate / folder_rate:13.2f}x")
    print(f"{'  ms/record (median)':58} {med['folder_rec']:9.2f} {med['tar_rec']:9.2f}")
    print(f"{'  indexing the tar (headers only; counted above), ms':58} {'-':>9} {1000 * r['index_s']:9.1f}")
    print(f"{f'tree records/s, whole ureca tree run (fastest of {args.rounds})':58} {whole_folder:9.2f} "
          f"{whole_tar:9.2f} {whole_tar / whole_folder:13.2f}x")
    print(f"{'image open + decode, images.load_image, ms (median)':58} {med['folder_open']:9.2f} "
          f"{med['tar_open']:9.2f} {med['folder_open'] / med['tar_open']:13.2f}x")
    print(f"{'image bytes read alone, ms (median)':58} {med['folder_bytes']:9.3f} {med['tar_bytes']:9.3f} "
          f"{med['folder_bytes'] / med['tar_bytes']:13.2f}x")
    print(f"\ntree records from the tar equal the folder's (apart from image and source): {r['same']}/{n}")
    print("ratios: throughput tar/folder; latency folder/tar (above 1: the tar is faster)")
    met = min(tar_rate / folder_rate, whole_tar / whole_folder) >= 0.9 and r["same"] == n
    print(f"target (tar record throughput >= 0.9x the folder's, no extraction): {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
