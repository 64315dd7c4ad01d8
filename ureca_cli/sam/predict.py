"""Prompts to masks: for one image, several regions (points and/or a box each), one ``HxW`` bool mask per
region, with the image encoded once for all of them.

Regions of one kind (same number of points, a box or not) go through SAM's prompt encoder and mask decoder
in one call; kinds differ in how many prompt tokens the decoder sees, and mixing them would need padding
tokens, which change SAM's output. So a batch gives, mask for mask, what one region at a time gives.

Which mask: SAM returns three candidates for an ambiguous prompt and one for a clear one. By default
(``multimask=None``, SAM's own advice) a region made of one point alone gets three candidates and keeps the
one with the highest predicted IoU (SAM's own score of its mask; the first on a tie); any other region (two
or more points, or a box) gets SAM's single output. ``multimask=True``/``False`` forces either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .model import MASK_THRESHOLD, Encoding, rgb_array
from .prompts import Region, check_regions


@dataclass(frozen=True)
class RegionMask:
    """SAM's mask for one region: ``mask`` ``HxW`` bool (image frame), ``score`` its predicted IoU, and
    ``candidates``, the number of masks SAM returned for the region (3 or 1) that it was picked from."""

    mask: Any
    score: float
    candidates: int

    def rle(self) -> dict:
        """The mask as COCO compressed RLE ``{"size": [H, W], "counts": str}``."""
        from ..masks import encode

        return encode(self.mask)


def _groups(regions: Sequence[Region], batched: bool) -> list[list[int]]:
    if not batched:
        return [[i] for i in range(len(regions))]
    by_kind: dict[tuple[int, bool], list[int]] = {}
    for i, r in enumerate(regions):
        by_kind.setdefault(r.kind(), []).append(i)
    return list(by_kind.values())


def segment_regions(seg: Any, image: Any, regions: Sequence[Region], *, encoding: Encoding | None = None,
                    batched: bool = True, multimask: bool | None = None, where: str = "") -> list[RegionMask]:
    """One ``RegionMask`` per region, in order, for ``image`` (PIL or ``HxWx3 uint8``).

    ``seg``: a ``Segmenter`` (or anything with its ``encode``/``decode``/``upscale``). ``encoding``: the
    image's ``seg.encode([image])[0]`` when the caller already has it (several calls, or images encoded in a
    batch); otherwise the image is encoded here, once. ``batched=False`` runs the decoder once per region
    (same masks, for comparison). Bad prompts raise ``InputError`` naming the option, value and ``where``
    before anything runs.
    """
    import torch

    arr = rgb_array(image)
    height, width = arr.shape[:2]
    check_regions(regions, width, height, where)
    enc = encoding if encoding is not None else seg.encode([arr])[0]
    if tuple(enc.size) != (height, width):
        raise ValueError(f"the encoding is of a {enc.size[1]}x{enc.size[0]} image, this one is {width}x{height}")
    out: list[RegionMask | None] = [None] * len(regions)
    for idx in _groups(regions, batched):
        n_points, has_box = regions[idx[0]].kind()
        points = labels = boxes = None
        if n_points:
            points = [[(p.x, p.y) for p in regions[i].points] for i in idx]
            labels = [[p.label for p in regions[i].points] for i in idx]
        if has_box:
            boxes = [(x, y, x + w, y + h) for x, y, w, h in (regions[i].box for i in idx)]
        multi = (n_points == 1 and not has_box) if multimask is None else multimask
        logits, iou = seg.decode(enc, points, labels, boxes, multi)
        best = iou.argmax(dim=1)
        rows = torch.arange(len(idx), device=best.device)
        chosen = logits[rows, best][:, None]  # N x 1 x h x w: only the kept candidate is upscaled
        masks = (seg.upscale(enc, chosen)[:, 0] > MASK_THRESHOLD).cpu().numpy()
        scores = iou[rows, best].tolist()
        for j, i in enumerate(idx):
            out[i] = RegionMask(masks[j], float(scores[j]), int(iou.shape[1]))
    return out  # type: ignore[return-value]


SAM_FIELD = "sam"  # a region record's block that says how SAM made its mask: model, prompt, score


def mask_fields(region: Region, rm: RegionMask, model: str, where: str = "", what: str | None = None) -> dict:
    """The fields a region record takes from SAM's mask of ``region``: ``rle`` (COCO RLE of the mask) and
    ``sam``: ``{"model", "points"/"box" (the prompt, image pixels; box XYWH), "score" (SAM's predicted IoU)}``,
    enough to make the mask again. A mask that holds no pixel is an ``InputError`` naming the prompt (``what``,
    default its command-line options) and ``where``: there is nothing to caption, and a rectangle in its place would be a silent substitute."""
    from ..errors import InputError

    if not rm.mask.any():
        raise InputError(f"{what or region.spec()}: SAM's mask holds no pixel (predicted IoU {rm.score:.2f}); give "
                         "another prompt", source=where or None)
    return {"rle": rm.rle(), SAM_FIELD: {"model": model, **region.prompt(), "score": round(float(rm.score), 4)}}
