"""COCO RLE in and out (the checked codec every stage uses), bitmaps and boxes.

Conventions used across the package:
- bitmap: ``HxW uint8`` array of 0/1, row-major, image frame;
- RLE: COCO compressed RLE ``{"size": [H, W], "counts": str}`` (pycocotools, column-major runs);
- box: XYWH in pixels. SA-1B files carry their own boxes, one pixel narrower and shorter than
  ``pycocotools.mask.toBbox``; trees keep the file's box, and ``pixel_box`` gives the box of the pixels.

The mask rule, one for every stage (tree, annotate, refine, train, caption all read masks through here):
- a mask is well formed (``checked_counts``, which ``decode`` and ``region_area`` apply) when its ``size`` is
  ``[H, W]`` positive integers and its counts, compressed (a string) or uncompressed (a list of non-negative
  integers), are runs that cover exactly ``H * W`` pixels: no fewer (pycocotools would fill the rest with
  garbage) and no more;
- a region, a mask that a stage shows a model or trains on (``node_mask``, ``region_area``, and
  ``regions.fit_mask`` for masks given on the command line), is moreover of its image's size and holds at least
  one pixel. A tree keeps every well-formed mask of its file, empty ones too (as dropped nodes, ``"empty"``).
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


def checked_counts(rle: Any, where: str = "rle") -> bytes:
    """The compressed counts of a well-formed COCO RLE (the module's mask rule: ``size`` ``[H, W]``, runs that
    cover exactly ``H * W`` pixels, compressed or uncompressed); anything else is an ``InputError`` naming
    ``where``."""
    from .runs import BadCounts, RunSet

    size = rle.get("size") if isinstance(rle, dict) else None
    if not (isinstance(size, list | tuple) and len(size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise InputError(f"RLE size should be [H, W] positive integers, got {size!r}", source=where)
    h, w = int(size[0]), int(size[1])
    counts = segmentation_counts({"size": [h, w], "counts": rle.get("counts")}, h, w, where)
    if not isinstance(rle.get("counts"), list):  # an uncompressed list was checked above; read these runs
        try:
            RunSet.from_counts([counts], h, w)
        except BadCounts as e:
            raise InputError(f"corrupt RLE counts ({e.reason})", source=where) from None
    return counts


def decode(rle: dict, where: str = "rle") -> np.ndarray:
    """COCO RLE -> ``HxW uint8`` 0/1 bitmap, after ``checked_counts`` (the mask rule); an ``InputError`` naming
    ``where`` otherwise."""
    counts = checked_counts(rle, where)
    h, w = (int(v) for v in rle["size"])
    try:
        m = _mask_utils().decode({"size": [h, w], "counts": counts})
    except Exception as e:  # noqa: BLE001 - pycocotools raises plain errors for corrupt counts
        raise InputError(f"cannot decode RLE ({e})", source=where) from None
    if m.shape != (h, w):
        raise InputError(f"RLE decodes to {m.shape[1]}x{m.shape[0]}, its size says {w}x{h}", source=where)
    return np.ascontiguousarray(m, dtype=np.uint8)


def check_node_size(node: dict, height: int, width: int, where: str) -> object:
    """A node's id, once its mask's ``size`` is checked to be the record's ``height x width``."""
    nid = node[R.ID]
    size = list(node[R.RLE]["size"])
    if size != [height, width]:
        raise InputError(f"node {nid!r}: mask size {size[1]}x{size[0]} differs from the record's {width}x{height}",
                         source=where)
    return nid


def node_mask(node: dict, height: int, width: int, where: str) -> np.ndarray:
    """The ``HxW uint8`` 0/1 mask of an image record's node (its ``rle``), checked: its size must be the
    record's ``height x width`` and it must hold a pixel. Errors are ``InputError``s naming ``where``."""
    nid = check_node_size(node, height, width, where)
    m = decode(node[R.RLE], f"{where} node {nid!r}")
    if not m.any():
        raise InputError(f"node {nid!r}: its mask is empty", source=where)
    return m


def region_area(rle: Any, size: tuple[int, int] | None = None, where: str = "rle") -> int:
    """The pixel count of a region's mask, checked by the module's mask rule without decoding a bitmap: well
    formed (``checked_counts``), of the image's ``size`` (W, H) when given, holding at least one pixel. What
    ``ureca train`` checks of every sample before training starts."""
    from .runs import RunSet

    counts = checked_counts(rle, where)
    h, w = (int(v) for v in rle["size"])
    if size is not None and (w, h) != tuple(size):
        raise InputError(f"mask is {w}x{h} but the image is {size[0]}x{size[1]} (WxH)", source=where)
    n = int(RunSet.from_counts([counts], h, w).areas[0])
    if n == 0:
        raise InputError("mask is empty (no pixel of the region is set)", source=where)
    return n


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


def resize_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of an HxW array to ``height`` x ``width``, sampling at pixel centres
    (the same rule as PIL's NEAREST and torch's ``nearest-exact``)."""
    h, w = mask.shape[:2]
    if (h, w) == (height, width):
        return mask
    rows = np.minimum(((np.arange(height) + 0.5) * h / height).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * w / width).astype(np.int64), w - 1)
    return mask[rows[:, None], cols[None, :]]


def segmentation_counts(seg: Any, height: int, width: int, where: str) -> bytes:
    """Compressed RLE counts (bytes) of one COCO ``segmentation`` (a compressed or uncompressed RLE, or a list of
    polygons ``[[x1, y1, x2, y2, ...], ...]``) of an ``height x width`` image; an RLE's size must be that.

    The counts of a compressed RLE are passed on unread (``runs.RunSet.from_counts`` checks many at once, and
    ``decode`` one); everything else wrong is an ``InputError`` naming ``where``.
    """
    if isinstance(seg, dict):
        size = seg.get("size")
        counts = seg.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
            raise InputError(f"segmentation.size should be [H, W], got {size!r}", source=where)
        if list(size) != [height, width]:
            raise InputError(
                f"RLE size {size[1]}x{size[0]} (WxH) disagrees with the image size {width}x{height}", source=where
            )
        if isinstance(counts, list):  # uncompressed RLE
            if not all(isinstance(v, int) and v >= 0 for v in counts) or sum(counts) != height * width:
                raise InputError(f"uncompressed RLE counts do not cover the {width}x{height} image", source=where)
            return _mask_utils().frPyObjects({"size": [height, width], "counts": counts}, height, width)["counts"]
        if isinstance(counts, str):
            try:
                return counts.encode("ascii")
            except UnicodeEncodeError:
                raise InputError("corrupt RLE counts (not ASCII)", source=where) from None
        if isinstance(counts, bytes):
            return counts
        raise InputError("segmentation.counts should be a string", source=where)
    if isinstance(seg, list) and seg:  # polygons
        mu = _mask_utils()
        try:
            return mu.merge(mu.frPyObjects(seg, height, width))["counts"]
        except Exception as e:  # noqa: BLE001 - pycocotools raises plain errors
            raise InputError(f"cannot read the polygon segmentation ({e})", source=where) from None
    raise InputError("segmentation is neither a COCO RLE nor a list of polygons", source=where)


def rle_from_any(seg: Any, height: int | None, width: int | None, where: str) -> dict:
    """A COCO RLE (``str`` counts) from a ``segmentation`` (``segmentation_counts``). ``height``/``width``:
    the image's size; ``None`` where unknown, when an RLE's own size is taken (a polygon then cannot be read)."""
    if isinstance(seg, dict) and not (height and width) and isinstance(seg.get("size"), list) and len(seg["size"]) == 2:
        height, width = seg["size"]
    if not (height and width):
        raise InputError("a polygon segmentation needs the image's size", source=where)
    counts = segmentation_counts(seg, int(height), int(width), where)
    return {"size": [int(height), int(width)], "counts": counts.decode("ascii")}
