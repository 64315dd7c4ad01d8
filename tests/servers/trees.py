"""Synthetic tree records (the shape `ureca tree` writes) over a photo or a generated image, for tests and
bench: nested ellipses, main objects with parts and parts of parts, plus a dropped node."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ureca_cli import masks


def _ellipse(h: int, w: int, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    yy, xx = np.ogrid[:h, :w]
    return ((((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2) <= 1).astype(np.uint8)


def make_image(path: Path, width: int, height: int, seed: int = 0) -> Path:
    """A textured RGB image (so blur is visible), saved as JPEG or PNG by suffix."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    im = Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)
    arr = np.asarray(im).astype(np.int16) + rng.integers(-20, 21, (height, width, 3))
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path)
    return path


def make_tree_record(image: Path, width: int, height: int, *, image_id: str = "img", mains: int = 2,
                     fanout: tuple[int, ...] = (3, 2), seed: int = 0) -> dict:
    """A tree record with ``mains`` main objects, each with ``fanout[0]`` parts, each with ``fanout[1]``
    sub-parts, ...; ids are ints from 1; one extra dropped node per main object."""
    rng = np.random.default_rng(seed)
    nodes: list[dict] = []
    next_id = [1]

    def add(mask: np.ndarray, parent: int | None, depth: int, role: str) -> int:
        nid = next_id[0]
        next_id[0] += 1
        x, y, w, h = masks.pixel_box(mask)
        nodes.append({"id": nid, "parent": parent, "children": [], "depth": depth, "area": int(mask.sum()),
                      "bbox": [x, y, max(0, w - 1), max(0, h - 1)], "rle": masks.encode(mask), "role": role})
        if parent is not None:
            next(n for n in nodes if n["id"] == parent)["children"].append(nid)
        return nid

    def grow(cx: float, cy: float, rx: float, ry: float, parent: int, depth: int, level: int) -> None:
        if level >= len(fanout):
            return
        k = fanout[level]
        for i in range(k):
            ang = 2 * np.pi * i / k + rng.uniform(0, 0.3)
            ccx, ccy = cx + 0.45 * rx * np.cos(ang), cy + 0.45 * ry * np.sin(ang)
            crx, cry = rx * rng.uniform(0.28, 0.38), ry * rng.uniform(0.28, 0.38)
            m = _ellipse(height, width, ccx, ccy, crx, cry)
            nid = add(m, parent, depth, "part")
            grow(ccx, ccy, crx, cry, nid, depth + 1, level + 1)

    for j in range(mains):
        cx = width * (j + 0.5) / mains
        cy = height * rng.uniform(0.4, 0.6)
        rx, ry = width * 0.4 / mains, height * 0.3
        mid = add(_ellipse(height, width, cx, cy, rx, ry), None, 1, "main")
        grow(cx, cy, rx, ry, mid, 2, 0)
        tiny = _ellipse(height, width, cx, cy - 0.8 * ry, 3, 3)
        dropped = add(tiny, mid, 2, "dropped")
        next(n for n in nodes if n["id"] == dropped)["drop_reason"] = "small"
    return {"image_id": image_id, "image": str(image), "width": width, "height": height, "nodes": nodes,
            "schema": 1}
