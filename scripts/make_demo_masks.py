"""SA-1B-format masks for a real CC0 photo (scikit-image's `coffee`), made by classical segmentation.

SAM is not needed for the demo: SLIC superpixels are merged by colour at several thresholds (a region
adjacency graph cut at each one). A cut at a higher threshold only merges the regions of a lower one, so the
masks nest the way SAM's whole/part/subpart masks do: a saucer, the cup on it, the coffee in the cup, the
crema on the coffee. The result is written as an SA-1B per-image JSON (COCO compressed RLE, SA-1B's
one-pixel-short boxes) beside the photo as a JPEG.

    .venv/bin/python scripts/make_demo_masks.py demo-out/sa     # -> demo-out/sa/coffee.json, coffee.jpg
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

THRESHOLDS = (36, 24, 16, 10)  # colour distance of the merges, coarse to fine
MIN_AREA = 0.004  # regions smaller than this share of the image are left out (SAM's min_mask_region_area)
MAX_AREA = 0.95  # and so is anything that is (almost) the whole image


def segment(image: np.ndarray, n_segments: int = 400) -> list[np.ndarray]:
    """``HxW`` bool masks of ``image`` (``HxWx3 uint8``) at several scales, coarse first, duplicates dropped."""
    from skimage import graph
    from skimage.segmentation import slic

    base = slic(image, n_segments=n_segments, compactness=12, start_label=0)
    rag = graph.rag_mean_color(image, base, mode="distance")
    levels = [graph.cut_threshold(base, rag, t, in_place=False) for t in THRESHOLDS] + [base]
    total = image.shape[0] * image.shape[1]
    seen: set[bytes] = set()
    masks = []
    for labels in levels:
        for value in np.unique(labels):
            m = labels == value
            share = m.sum() / total
            key = np.packbits(m).tobytes()
            if not MIN_AREA <= share <= MAX_AREA or key in seen:
                continue
            seen.add(key)
            masks.append(m)
    return masks


def sa1b_annotation(mask: np.ndarray, ann_id: int) -> dict:
    """One SA-1B annotation of an ``HxW`` bool mask: compressed RLE, box one pixel short, a point inside."""
    from pycocotools import mask as mu

    rle = mu.encode(np.asfortranarray(mask.astype(np.uint8)))
    x, y, w, h = (float(v) for v in mu.toBbox(rle))
    ys, xs = np.nonzero(mask)
    k = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
    height, width = mask.shape
    return {
        "id": ann_id,
        "segmentation": {"size": [height, width], "counts": rle["counts"].decode("ascii")},
        "bbox": [x, y, w - 1, h - 1],
        "area": int(mask.sum()),
        "predicted_iou": 1.0,
        "stability_score": 1.0,
        "crop_box": [0, 0, width, height],
        "point_coords": [[float(xs[k]), float(ys[k])]],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="folder to write coffee.json and coffee.jpg into")
    args = ap.parse_args()
    from PIL import Image
    from skimage import data

    image = data.coffee()  # CC0 (scikit-image's bundled photo), 600x400
    masks = segment(image)
    args.out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(args.out / "coffee.jpg", quality=95)
    height, width = image.shape[:2]
    doc = {
        "image": {"image_id": 1, "width": width, "height": height, "file_name": "coffee.jpg"},
        "annotations": [sa1b_annotation(m, i) for i, m in enumerate(masks)],
    }
    (args.out / "coffee.json").write_text(json.dumps(doc))
    print(f"{args.out / 'coffee.json'}: {len(masks)} masks on {width}x{height} "
          f"(SLIC superpixels merged at colour distances {', '.join(map(str, THRESHOLDS))})")


if __name__ == "__main__":
    main()
