"""Shared inputs of the refine and export tests: a real photo with the same pixels pasted twice, and
annotated image records over it (the shape ``ureca annotate`` writes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ureca_cli import masks

PATCH = 120  # side of the pasted squares, pixels
# where each pasted square's top-left corner goes (y, x): A and B get the same pixels, C different ones
SPOTS = {"A": (30, 40), "B": (240, 420), "C": (250, 60)}


def _ellipse_in_square() -> np.ndarray:
    yy, xx = np.mgrid[:PATCH, :PATCH]
    c = (PATCH - 1) / 2
    return ((((xx - c) / (PATCH / 2 - 2)) ** 2 + ((yy - c) / (PATCH / 2 - 10)) ** 2) <= 1).astype(np.uint8)


def pasted_photo(shared: Path, out: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """coffee.png with an astronaut's face pasted at A and B and a cat's face at C; saved to ``out``.

    Returns the image path and each spot's ``HxW uint8`` mask (an ellipse inside its square).
    """
    images = shared / "images"
    photo = np.array(Image.open(images / "coffee.png").convert("RGB"))
    face = np.array(Image.open(images / "astronaut.png").convert("RGB"))[60:60 + PATCH, 160:160 + PATCH]
    cat = np.array(Image.open(images / "chelsea.png").convert("RGB"))[80:80 + PATCH, 150:150 + PATCH]
    h, w = photo.shape[:2]
    ell = _ellipse_in_square()
    spot_masks = {}
    for name, (y, x) in SPOTS.items():
        photo[y:y + PATCH, x:x + PATCH] = cat if name == "C" else face
        m = np.zeros((h, w), np.uint8)
        m[y:y + PATCH, x:x + PATCH] = ell
        spot_masks[name] = m
    Image.fromarray(photo).save(out)
    return out, spot_masks


def _node(nid, mask, parent, depth, role, caption: str | None) -> dict:
    x, y, w, h = masks.pixel_box(mask)
    node = {"id": nid, "parent": parent, "children": [], "depth": depth, "area": int(mask.sum()),
            "bbox": [x, y, w - 1, h - 1], "rle": masks.encode(mask), "role": role}
    if caption is not None:
        node.update(short_caption=f"short {caption}", long_caption=f"long {caption}", caption=f"long {caption}")
    return node


def annotated_record(image: Path, spot_masks: dict[str, np.ndarray], image_id: str = "photo1") -> dict:
    """An annotated image record: A, B, C as main objects (ids 1-3); a main object (4, the cup) with a part
    (5) that has a part (6); and a dropped node (7) with no caption."""
    h, w = next(iter(spot_masks.values())).shape
    yy, xx = np.mgrid[:h, :w]

    def ell(cx, cy, rx, ry):
        return ((((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2) <= 1).astype(np.uint8)

    nodes = [
        _node(1, spot_masks["A"], None, 1, "main", "face at the top left"),
        _node(2, spot_masks["B"], None, 1, "main", "face at the bottom right"),
        _node(3, spot_masks["C"], None, 1, "main", "cat face at the bottom left"),
        _node(4, ell(300, 160, 110, 90), None, 1, "main", "cup of coffee"),
        _node(5, ell(300, 150, 70, 50), 4, 2, "part", "crema in the cup"),
        _node(6, ell(300, 150, 30, 20), 5, 3, "part", "bubble in the crema"),
        _node(7, ell(560, 20, 4, 4), 4, 2, "dropped", None),
    ]
    nodes[6]["drop_reason"] = "small"
    by_id = {n["id"]: n for n in nodes}
    for n in nodes:
        if n["parent"] is not None:
            by_id[n["parent"]]["children"].append(n["id"])
    return {"image_id": image_id, "image": str(image), "width": w, "height": h, "nodes": nodes, "schema": 1,
            "annotate": {"backend": "scripted", "model": "m", "prompt_version": "p"}}
