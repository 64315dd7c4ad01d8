"""SAM masks for regions that files give as boxes (Visual Genome's regions, MDETR/GLaMM's RefCOCOg): the hook
``datasets.box_masks`` calls instead of drawing the box's rectangle (``caption --input FILE --box-to-mask sam``).

``BoxMasker(seg)`` is called once per image with all the boxes a caller has of it; the image is encoded once
for them, and the last image's encoding is kept, so regions of one image that reach it in several calls (a
reader's consecutive records) still cost one encoding. Boxes are XYWH pixels inside the image (the caller clips
them to it); every box goes to SAM's decoder in one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import InputError
from .prompts import Box, Region


class BoxMasker:
    """``(image path, boxes, (W, H), where) -> one dict of fields per box`` (``rle`` and ``sam``, as
    ``predict.mask_fields`` makes them). ``seg``: a ``Segmenter`` (or anything with its three methods)."""

    def __init__(self, seg: Any):
        self.seg = seg
        self.encodings = 0  # images encoded so far
        self._last: tuple[str, Any, Any] | None = None  # (image path, HxWx3 uint8, Encoding)

    def _encoded(self, image: str, where: str) -> tuple[Any, Any]:
        from .model import load_rgb

        if self._last is None or self._last[0] != image:
            self._last = None  # the old image's memory goes before the new one is read
            arr = load_rgb(image, where)
            self._last = (image, arr, self.seg.encode([arr])[0])
            self.encodings += 1
        return self._last[1], self._last[2]

    def __call__(self, image: str, boxes: Sequence[Box], size: tuple[int, int], where: str) -> list[dict]:
        from .predict import mask_fields, segment_regions

        arr, enc = self._encoded(image, where)
        height, width = arr.shape[:2]
        if (width, height) != tuple(size):
            raise InputError(f"image {image} is {width}x{height} but the record says {size[0]}x{size[1]}",
                             source=where)
        regions = [Region(box=tuple(float(v) for v in b)) for b in boxes]  # type: ignore[arg-type]
        masks = segment_regions(self.seg, arr, regions, encoding=enc, where=image)
        name = getattr(self.seg, "name", "")
        return [mask_fields(r, m, name, where, what=f"box {[round(v, 2) for v in r.box]} (XYWH)")  # type: ignore[union-attr]
                for r, m in zip(regions, masks, strict=True)]
