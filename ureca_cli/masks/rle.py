"""Masks: COCO RLE in and out, bitmaps, boxes, and containment computed on RLEs.

Conventions used across the package:
- bitmap: ``HxW uint8`` array of 0/1, row-major, image frame;
- RLE: COCO compressed RLE ``{"size": [H, W], "counts": str}`` (pycocotools, column-major runs);
- box: XYWH in pixels. SA-1B files carry their own boxes, one pixel narrower and shorter than
  ``pycocotools.mask.toBbox``; trees keep the file's box, and ``pixel_box`` gives the box of the pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import records as R
from ..errors import InputError


def _mask_utils():
    from pycocotools import mask as mask_utils

    return mask_utils


def as_coco_rle(rle: dict) -> dict:
    """The RLE with ``counts`` as bytes, as pycocotools' C functions want it (uncompressed lists encoded)."""
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed RLE
        h, w = rle["size"]
        return _mask_utils().frPyObjects({"size": [h, w], "counts": counts}, h, w)
    if isinstance(counts, str):
        return {"size": list(rle["size"]), "counts": counts.encode("ascii")}
    return rle


def to_json_rle(rle: dict) -> dict:
    """The RLE with ``counts`` as str, ready for JSON."""
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts}


def decode(rle: dict, where: str = "rle") -> np.ndarray:
    """COCO RLE -> ``HxW uint8`` 0/1 bitmap. Corrupt counts raise ``InputError`` naming ``where``."""
    try:
        coco = as_coco_rle(rle)
        m = _mask_utils().decode(coco)
    except Exception as e:  # noqa: BLE001 - pycocotools raises plain errors for corrupt counts
        raise InputError(f"cannot decode RLE ({e})", source=where) from None
    h, w = rle["size"]
    if m.shape != (h, w):
        raise InputError(f"RLE decodes to {m.shape[1]}x{m.shape[0]}, its size says {w}x{h}", source=where)
    return np.ascontiguousarray(m, dtype=np.uint8)


def node_mask(node: dict, height: int, width: int, where: str) -> np.ndarray:
    """The ``HxW uint8`` 0/1 mask of an image record's node (its ``rle``), checked: its size must be the
    record's ``height x width`` and it must hold a pixel. Errors are ``InputError``s naming ``where``."""
    nid = node[R.ID]
    size = list(node[R.RLE]["size"])
    if size != [height, width]:
        raise InputError(f"node {nid!r}: mask size {size[1]}x{size[0]} differs from the record's {width}x{height}",
                         source=where)
    m = decode(node[R.RLE], f"{where} node {nid!r}")
    if not m.any():
        raise InputError(f"node {nid!r}: its mask is empty", source=where)
    return m


def encode(bitmap: np.ndarray) -> dict:
    """``HxW`` bool/0-1 bitmap -> COCO RLE with str counts."""
    arr = np.asfortranarray(np.asarray(bitmap, dtype=np.uint8) > 0).astype(np.uint8)
    return to_json_rle(_mask_utils().encode(arr))


def area(rle: dict) -> int:
    """Number of pixels in the mask."""
    return int(_mask_utils().area(as_coco_rle(rle)))


def pixel_box(bitmap: np.ndarray) -> tuple[int, int, int, int] | None:
    """XYWH box that holds every non-zero pixel of an ``HxW`` bitmap (w, h >= 1); ``None`` when empty."""
    ys = np.flatnonzero(bitmap.any(axis=1))
    if ys.size == 0:
        return None
    xs = np.flatnonzero(bitmap.any(axis=0))
    return int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)


def rle_pixel_box(rle: dict) -> tuple[int, int, int, int] | None:
    """XYWH box of the mask's own pixels, from the RLE (pycocotools' toBbox, which covers every pixel)."""
    if area(rle) == 0:
        return None
    x, y, w, h = (float(v) for v in _mask_utils().toBbox(as_coco_rle(rle)))
    return int(round(x)), int(round(y)), int(round(w)), int(round(h))


def containment(a: list[dict], b: list[dict]) -> np.ndarray:
    """``len(a) x len(b)`` float array of ``|a_i ∩ b_j| / |a_i|`` (0 where ``a_i`` is empty), on RLEs.

    Uses pycocotools' ``iou`` with every ``b`` marked as a crowd region, which divides the intersection by
    the area of ``a`` alone; no bitmap is decoded.
    """
    if not a or not b:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    mu = _mask_utils()
    out = mu.iou([as_coco_rle(r) for r in a], [as_coco_rle(r) for r in b], [1] * len(b))
    return np.asarray(out, dtype=np.float64).reshape(len(a), len(b))


def rle_from_any(value: Any, height: int, width: int, where: str) -> dict:
    """A COCO RLE (str counts) from a compressed or uncompressed RLE or a list of polygons."""
    mu = _mask_utils()
    try:
        if isinstance(value, dict):
            return to_json_rle(as_coco_rle(value))
        if isinstance(value, list):  # polygons [[x1, y1, x2, y2, ...], ...]
            return to_json_rle(mu.merge(mu.frPyObjects(value, height, width)))
    except Exception as e:  # noqa: BLE001
        raise InputError(f"cannot read the segmentation ({e})", source=where) from None
    raise InputError("segmentation is neither an RLE nor a list of polygons", source=where)
