"""Benchmark reading SA-1B from a tar shard in place against the same files extracted into a folder.

Input: a plain tar of ``--images`` SA-1B-sized images (2250x1500 JPEGs, each different) with their SA-1B JSON
files (about 100 masks each, from bench/tree.py's generator; ``--mask-sets`` distinct sets are made and reused,
because each takes seconds), members in SA-1B's layout (``sa_N.jpg``, ``sa_N.json``), and the same tar
extracted into a folder. Both are read from the page cache (just written); a cold disk is not measured.

Figures, from one run, folder and tar side by side (every record timed every way, taking turns at going
first, so load from other processes falls on all of them alike):

- tree records per second: read the JSON bytes (a file / a tar member through ``ureca_cli.tars``), check the
  image's size from its header (the file / the member), build the tree record. ``ureca_cli/tree.py`` takes
  paths only, so both contenders hand it the bytes they read through the same stand-in for its file reader
  (``tree_from_bytes``); a row with the unmodified ``build_tree`` on the folder's files shows the stand-in costs
  what the stage costs. The tar's time includes indexing it (headers only).
- image-open latency: open and decode one JPEG (``PIL.Image.open(path).load()`` / ``tars.open_image(ref)``),
  and reading its bytes alone.

Target: the tar's record throughput at least 0.9x the folder's, with no extraction.

    .venv/bin/python bench/tar.py [--images 200] [--mask-sets 4]
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
from collections.abc import Iterator
from contextlib import contextmanager
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
class _Fed:
    """What the stand-in reader hands ``ureca_cli.tree``: the JSON bytes and the image name of one record."""

    data = b""
    image = ""


@contextmanager
def tree_from_bytes() -> Iterator[_Fed]:
    """``ureca_cli.tree.load_mask_file`` reads a path; here it gets the bytes a contender already read, and
    the image reference and size check are the contender's own (timed outside, beside the read)."""
    from ureca_cli.curate import tree

    fed = _Fed()
    saved = tree.read_json_file, tree._find_image, tree._check_image_size
    tree.read_json_file = lambda path: orjson.loads(fed.data)
    tree._find_image = lambda src, where, info, images: fed.image
    tree._check_image_size = lambda image, width, height, where: None
    try:
        yield fed
    finally:
        tree.read_json_file, tree._find_image, tree._check_image_size = saved


def _image_size_file(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def run(tar: Path, extracted: Path) -> dict:
    from PIL import Image

    from ureca_cli import tars
    from ureca_cli.curate.tree import TreeConfig, build_tree, load_mask_file, tree_record

    cfg = TreeConfig()
    t0 = time.perf_counter()
    index = tars.index_tar(tar)
    index_s = time.perf_counter() - t0
    items = index.json_members()
    files = [(extracted / it.json.member, extracted / it.image.member) for it in items]
    tree_record(load_mask_file(files[0][0], cfg), cfg)  # warm imports (pycocotools, PIL)

    t: dict[str, list[float]] = {k: [] for k in ("folder_rec", "tar_rec", "folder_read", "tar_read",
                                                 "folder_size", "tar_size", "folder_open", "tar_open",
                                                 "folder_bytes", "tar_bytes", "stage")}
    same = 0
    rotations = (("folder", "tar", "stage"), ("tar", "stage", "folder"), ("stage", "folder", "tar"))
    for i, (item, (js, jpg)) in enumerate(zip(items, files, strict=True)):
        recs = {}
        for who in rotations[i % 3]:  # each record timed three ways, in turn first, second and last
            if who == "stage":  # the stage itself, unmodified, on the folder's files
                a = time.perf_counter()
                build_tree(js, cfg)
                t["stage"].append(time.perf_counter() - a)
                continue
            with tree_from_bytes() as fed:
                a = time.perf_counter()
                data = js.read_bytes() if who == "folder" else tars.read_member(item.json)
                b = time.perf_counter()
                size = _image_size_file(jpg) if who == "folder" else tars.image_size(item.image)
                c = time.perf_counter()
                fed.data, fed.image = data, str(jpg) if who == "folder" else str(item.image)
                rec = tree_record(load_mask_file(str(js) if who == "folder" else str(item.json), cfg), cfg)
                d = time.perf_counter()
            assert size == (rec["width"], rec["height"])
            t[f"{who}_rec"].append(d - a)
            t[f"{who}_read"].append(b - a)
            t[f"{who}_size"].append(c - b)
            recs[who] = {k: v for k, v in rec.items() if k not in ("image", "source")}
        same += recs["folder"] == recs["tar"]
    for i, (item, (_js, jpg)) in enumerate(zip(items, files, strict=True)):
        for who in (("folder", "tar") if i % 2 == 0 else ("tar", "folder")):
            a = time.perf_counter()
            if who == "folder":
                with Image.open(jpg) as im:
                    im.load()
            else:
                tars.open_image(item.image).load()
            b = time.perf_counter()
            _ = jpg.read_bytes() if who == "folder" else tars.read_member(item.image)
            c = time.perf_counter()
            t[f"{who}_open"].append(b - a)
            t[f"{who}_bytes"].append(c - b)
    return {"t": t, "index_s": index_s, "n": len(items), "same": same}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--mask-sets", type=int, default=4, help="distinct mask sets generated (each takes seconds)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        tar, extracted, f = make_inputs(Path(tmp), args.images, max(1, min(args.mask_sets, args.images)))
        print(f"input: {args.images} images {f['w']}x{f['h']} (JPEG {f['jpeg_kb']:.0f} KB each), {f['masks']:.0f} "
              f"masks each ({args.mask_sets} distinct sets, mean {f['runs']:,.0f} RLE runs per mask); tar "
              f"{f['tar_mb']:.0f} MB and its extraction (made in "
              f"{time.perf_counter() - t0:.0f} s)")
        r = run(tar, extracted)
    t, n = r["t"], r["n"]
    ms = {k: 1000 * sum(v) / len(v) for k, v in t.items()}
    med = {k: 1000 * statistics.median(v) for k, v in t.items()}
    folder_rate = n / sum(t["folder_rec"])
    tar_rate = n / (sum(t["tar_rec"]) + r["index_s"])
    stage_rate = n / sum(t["stage"])
    print(f"\n{'':56} {'folder':>9} {'tar':>9} {'tar vs folder':>14}")
    print(f"{'tree records/s (read JSON + image size + tree)':56} {folder_rate:9.2f} {tar_rate:9.2f} "
          f"{tar_rate / folder_rate:13.2f}x")
    print(f"{'  reading the JSON bytes, ms/record (mean)':56} {ms['folder_read']:9.3f} {ms['tar_read']:9.3f}")
    print(f"{'  image size from its header, ms/record (mean)':56} {ms['folder_size']:9.3f} {ms['tar_size']:9.3f}")
    print(f"{'  indexing the tar (headers only), ms in all':56} {'-':>9} {1000 * r['index_s']:9.1f}")
    print(f"{'image open + decode, ms (median)':56} {med['folder_open']:9.2f} {med['tar_open']:9.2f} "
          f"{med['folder_open'] / med['tar_open']:13.2f}x")
    print(f"{'image bytes read alone, ms (median)':56} {med['folder_bytes']:9.3f} {med['tar_bytes']:9.3f} "
          f"{med['folder_bytes'] / med['tar_bytes']:13.2f}x")
    print(f"{'ureca tree build_tree on the files (the stage as is)':56} {stage_rate:9.2f} {'':>9} "
          f"{'(records/s)':>14}")
    print(f"\ntree records from the tar equal the folder's (apart from image and source): {r['same']}/{n}")
    print("ratios: throughput tar/folder; latency folder/tar (above 1: the tar is faster)")
    met = tar_rate / folder_rate >= 0.9 and r["same"] == n
    print(f"target (tar record throughput >= 0.9x the folder's, no extraction): {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
