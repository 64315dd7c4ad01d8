"""Hand-built SA-1B files for the tree tests: masks drawn as rectangles, written in the real format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson


def rect(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """``HxW uint8`` mask with rows ``y0:y1`` and columns ``x0:x1`` set."""
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def ann(mask: np.ndarray, ann_id: int | None) -> dict:
    """One SA-1B annotation for an ``HxW`` 0/1 mask: compressed RLE, the 1-px-short SA-1B box, area."""
    from pycocotools import mask as mu

    rle = mu.encode(np.asfortranarray(mask.astype(np.uint8)))
    x, y, w, h = (float(v) for v in mu.toBbox(rle))
    out = {
        "segmentation": {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": rle["counts"].decode()},
        "bbox": [x, y, max(w - 1, 0.0), max(h - 1, 0.0)],
        "area": int(mask.sum()),
        "predicted_iou": 0.9,
        "stability_score": 0.95,
        "crop_box": [0, 0, int(mask.shape[1]), int(mask.shape[0])],
        "point_coords": [[x, y]],
    }
    if ann_id is not None:
        out["id"] = ann_id
    return out


def write_image(path: Path, w: int, h: int, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def write_sa1b(folder: Path, name: str, masks: list[np.ndarray], *, ids: list | None = None,
               image: bool = True, image_id: int | str | None = None) -> Path:
    """Write ``folder/name.json`` (SA-1B per-image format) and ``folder/name.png``; return the JSON path."""
    folder.mkdir(parents=True, exist_ok=True)
    h, w = masks[0].shape
    ids = ids if ids is not None else list(range(1, len(masks) + 1))
    doc = {
        "image": {"image_id": image_id if image_id is not None else name, "width": w, "height": h,
                  "file_name": f"{name}.png"},
        "annotations": [ann(m, i) for m, i in zip(masks, ids, strict=True)],
    }
    if image:
        write_image(folder / f"{name}.png", w, h)
    path = folder / f"{name}.json"
    path.write_bytes(orjson.dumps(doc))
    return path


def blob_file(folder: Path, name: str, *, h: int = 240, w: int = 320, objects: int = 6, seed: int = 0,
              image_id: int | str | None = None) -> Path:
    """A file of nested ragged blobs: objects, parts, parts of parts (about 4 masks per object)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    masks = []
    for _ in range(objects):
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        r = rng.uniform(0.12, 0.2) * min(h, w)
        noise = rng.uniform(0.85, 1.0, (h, w))
        for level in range(4):
            rr = r * (0.75 ** level)
            oy, ox = rng.normal(0, rr * 0.1, 2)
            masks.append(((yy - cy - oy) ** 2 + (xx - cx - ox) ** 2 < (rr * noise) ** 2).astype(np.uint8))
    return write_sa1b(folder, name, masks, image_id=image_id)
