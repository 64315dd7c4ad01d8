"""`ureca caption IMAGE --point X,Y[:0] ... --box X,Y,W,H --box-to-mask sam`: regions given as SAM prompts.

The prompts are grouped into regions by ``sam.regions_from_options`` (each ``--box`` a region of its own, all
``--point`` options one more) and checked against the image before any model loads (a point outside the image,
an empty box, negative points with no region to attach to: one ``InputError`` each). Then SAM (``--sam-model``)
turns them into one ``HxW uint8`` 0/1 mask each, all of them from one image encoding, and is let go before the
captioner loads. Each region's record keeps SAM's ``rle`` and a ``sam`` block (model, prompt, predicted IoU),
so the mask can be made again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

BOX_TO_MASK = ("rect", "sam")  # --box-to-mask: the box's rectangle (masks.regions), or SAM's mask of it


def prompt_regions(points: list[str], boxes: list[str], size: tuple[int, int], where: str) -> list:
    """The SAM regions of ``--point`` options and of the ``--box`` options SAM is to segment, parsed and checked
    against an image of ``size`` (W, H); ``[]`` when there are none."""
    from ..sam import check_regions, regions_from_options

    regions = regions_from_options(points, boxes)
    if regions:
        check_regions(regions, size[0], size[1], where)
    return regions


def sam_masks(regions: list, picture: Any, *, sam_model: str, device: str | None, dtype: str,
              where: str) -> tuple[list[np.ndarray], list[dict]]:
    """SAM's masks of ``regions`` on ``picture`` (an RGB PIL image), one image encoding for all: one ``HxW
    uint8`` 0/1 mask and one record block (``{"sam": {...}}``) per region. A mask that holds no pixel is an
    ``InputError`` naming its prompt. SAM's memory is given back before this returns."""
    import gc

    from ..sam import load_sam, mask_fields, segment_regions

    seg = load_sam(sam_model, device=device, dtype=dtype)
    try:
        masks = segment_regions(seg, picture, regions, where=where)
        fields = [mask_fields(r, m, seg.name, where) for r, m in zip(regions, masks, strict=True)]
    finally:
        gpu = str(seg.device).startswith("cuda")
        del seg
        gc.collect()
        if gpu:
            import torch

            torch.cuda.empty_cache()
    bitmaps = [m.mask.astype(np.uint8) for m in masks]
    return bitmaps, [{"sam": f["sam"]} for f in fields]


def box_masker(sam_model: str, device: str | None, dtype: str) -> Any:
    """The ``datasets.BoxToMask`` hook of ``caption --input FILE --box-to-mask sam``: SAM loaded once."""
    from ..sam import BoxMasker, load_sam

    return BoxMasker(load_sam(sam_model, device=device, dtype=dtype))


def mask_png_name(image_id: str, index: int) -> str:
    """The ``--save-masks`` file of region ``index`` of the image ``image_id``: ``<image_id>_<index>.png``, the
    id made safe by the package's one helper for names made from ids (``records.file_name``), so the name never
    leaves its folder; the last ``_`` separates the index, so names stay distinct."""
    from ..records import file_name

    return f"{file_name(image_id)}_{index}.png"


def save_mask_pngs(folder: Path, image_id: str, bitmaps: list[np.ndarray]) -> list[Path]:
    """Write each ``HxW`` 0/1 mask as an 8-bit PNG (0 and 255) to ``folder/<image_id>_<i>.png``; ``--mask PNG``
    reads them back as the same regions."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, bitmap in enumerate(bitmaps):
        path = folder / mask_png_name(image_id, i)
        Image.fromarray((np.asarray(bitmap) != 0).astype(np.uint8) * 255, mode="L").save(path)
        out.append(path)
    return out
