"""A mask kept as the window of its pixel box (``BoxedMask``), decoded from COCO RLE without the full bitmap.

A visual prompt needs a region's pixels only inside its box, and its box; a 1500x2250 SA-1B mask is 3.4 MB as a
full bitmap, and decoding one (pycocotools, then a row-major copy) costs several milliseconds whatever the
region's size. ``decode_boxed`` reads the compressed counts once (``runs.RunSet``, which checks them as it goes)
and fills only the columns the box spans, so a small part costs little.

Frames: ``bits`` is ``h x w`` bool, row-major, the window ``box`` (XYWH, pixels of the image frame: the tight box of
the mask's pixels, as ``rle.pixel_box`` gives it) of an image of ``shape`` ``(H, W)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import records as R
from ..errors import InputError
from .rle import as_coco_rle, check_node_size, decode, pixel_box


@dataclass(frozen=True, eq=False)
class BoxedMask:
    """A non-empty mask as its box's window: ``bits`` ``h x w`` bool, ``box`` XYWH, ``shape`` ``(H, W)`` of the image."""

    bits: np.ndarray
    box: tuple[int, int, int, int]
    shape: tuple[int, int]

    @classmethod
    def from_bitmap(cls, bitmap: np.ndarray) -> BoxedMask | None:
        """From an ``HxW`` 0/1 (or bool) bitmap; ``None`` when it holds no pixel. ``bits`` is a view of it."""
        box = pixel_box(bitmap)
        if box is None:
            return None
        x, y, w, h = box
        return cls(np.asarray(bitmap[y : y + h, x : x + w], dtype=bool), box, (bitmap.shape[0], bitmap.shape[1]))

    def full(self) -> np.ndarray:
        """The ``HxW uint8`` 0/1 bitmap."""
        out = np.zeros(self.shape, dtype=np.uint8)
        x, y, w, h = self.box
        out[y : y + h, x : x + w] = self.bits
        return out


def decode_boxed(rle: dict, where: str = "rle") -> BoxedMask | None:
    """COCO RLE -> ``BoxedMask`` (``None`` when the mask is empty). Corrupt counts raise ``InputError`` naming
    ``where``. Compressed counts are read without a full bitmap; uncompressed ones go through ``rle.decode``."""
    from .runs import BadCounts, RunSet

    h_img, w_img = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if not isinstance(counts, str | bytes):
        return BoxedMask.from_bitmap(decode(rle, where))
    try:
        runs = RunSet.from_counts([as_coco_rle(rle)["counts"]], h_img, w_img)
    except BadCounts as e:
        raise InputError(f"cannot decode RLE ({e.reason})", source=where) from None
    if runs.areas[0] == 0:
        return None
    x, y, w, h = (int(v) for v in runs.boxes[0])
    # foreground intervals of the columns x .. x + w - 1, as offsets into those columns' pixels (column-major)
    lo = x * h_img
    starts, ends = runs.starts - lo, runs.ends - lo
    bounds = np.empty(2 * starts.size + 2, dtype=np.int64)
    bounds[0], bounds[-1] = 0, w * h_img
    bounds[1:-1:2], bounds[2:-1:2] = starts, ends
    values = np.zeros(bounds.size - 1, dtype=bool)
    values[1::2] = True
    cols = np.repeat(values, np.diff(bounds)).reshape(w, h_img)  # column by column
    return BoxedMask(np.ascontiguousarray(cols[:, y : y + h].T), (x, y, w, h), (h_img, w_img))


def boxed_node_mask(node: dict, height: int, width: int, where: str) -> BoxedMask:
    """The mask of an image record's node (its ``rle``) as a ``BoxedMask``, checked as ``rle.node_mask`` checks:
    its size must be the record's ``height x width`` and it must hold a pixel (``InputError``s naming ``where``)."""
    nid = check_node_size(node, height, width, where)
    m = decode_boxed(node[R.RLE], f"{where} node {nid!r}")
    if m is None:
        raise InputError(f"node {nid!r}: its mask is empty", source=where)
    return m
