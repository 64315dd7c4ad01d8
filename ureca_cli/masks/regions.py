"""The forms a region can be given in, each made into an ``HxW uint8`` 0/1 mask of its image.

- a mask PNG: the alpha channel where there is one (RGBA, LA, palette transparency), else any non-zero pixel;
- a COCO RLE: JSON text, or the path of a JSON file (an RLE, or an object with a ``segmentation``);
- a box ``"x,y,w,h"`` (XYWH pixels): the pixels it covers.

``region_masks`` gathers the regions ``ureca caption IMAGE`` is given, in the order of ``FORMS``; ``fit_mask``
checks a mask against its image (and with ``resize``, resizes it). To add a form: a function ``text -> mask``
here, its line in ``FORMS``, and the option in ``commands/caption.py``. Forms a model makes into masks (SAM's
``--point`` and ``--box-to-mask sam``) are parsed in ``sam/prompts.py`` and segmented together, one image
encoding for all, in ``caption/sam_regions.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from .rle import decode, resize_nearest


def mask_from_png(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """HxW uint8 0/1 from a PNG: the alpha channel where there is one (RGBA, LA, palette transparency),
    else any non-zero pixel in any channel."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            arr = np.asarray(im)
            mode = im.mode
    except FileNotFoundError:
        raise InputError("no such file", source=str(path)) from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise InputError(f"not an image file ({type(e).__name__})", source=str(path)) from None
    if mode in ("RGBA", "LA", "PA"):
        return (arr[..., -1] != 0).astype(np.uint8)
    if arr.ndim == 3:
        return arr.any(axis=-1).astype(np.uint8)
    return (arr != 0).astype(np.uint8)


def mask_from_rle(text: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """HxW uint8 0/1 from a COCO RLE given as JSON text or as the path of a JSON file."""
    import orjson

    from ..records import check_rle
    from ..stream import read_json_file

    where = "--rle"
    if text.lstrip().startswith("{"):
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as e:
            raise InputError(f"not valid JSON ({e})", source=where) from None
    else:
        value = read_json_file(text)
        where = text
    if isinstance(value, dict) and "segmentation" in value:
        value = value["segmentation"]
    check_rle(value, where, field="rle")
    return decode(value, where)


def mask_from_box(text: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """HxW uint8 0/1 filled inside an XYWH pixel box "x,y,w,h" of an image of ``size`` (W, H); a box not inside
    the image is an InputError."""
    assert size is not None, "a box needs the image's size"
    w_img, h_img = size
    try:
        x, y, w, h = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"expected x,y,w,h numbers, got {text!r}", source="--box") from None
    if w <= 0 or h <= 0:
        raise InputError(f"box {text} has no area (w and h must be > 0)", source="--box")
    if x < 0 or y < 0 or x + w > w_img or y + h > h_img:
        raise InputError(f"box {text} (x,y,w,h) is not inside the {w_img}x{h_img} image", source="--box")
    mask = np.zeros((h_img, w_img), np.uint8)
    mask[int(np.floor(y)):int(np.ceil(y + h)), int(np.floor(x)):int(np.ceil(x + w))] = 1
    return mask


#: form -> (the mask from one value, how a message names that value); ``region_masks`` keeps this order
FORMS: dict[str, tuple[Callable[..., np.ndarray], Callable[[str], str]]] = {
    "mask": (mask_from_png, str),
    "rle": (mask_from_rle, lambda text: "--rle"),
    "box": (mask_from_box, lambda text: f"--box {text}"),
}


def region_masks(size: tuple[int, int], **given: Sequence[str | Path]) -> list[tuple[str, np.ndarray]]:
    """``(what, HxW uint8 mask)`` for every region given, form by form in ``FORMS`` order
    (``region_masks((W, H), mask=[...], rle=[...], box=[...])``); ``size`` is the image's (W, H)."""
    unknown = sorted(set(given) - set(FORMS))
    if unknown:
        raise ValueError(f"unknown region forms {unknown}; known: {', '.join(FORMS)}")
    out = []
    for form, (read, name) in FORMS.items():
        for value in given.get(form) or ():
            out.append((name(str(value)), read(value, size)))
    return out


def fit_mask(mask: np.ndarray, image_size: tuple[int, int], what: str, resize: bool) -> np.ndarray:
    """Check an HxW 0/1 mask against the image's (W, H); with ``resize``, resize it (nearest) to fit.
    An empty mask or a size mismatch without ``resize`` is an InputError naming both sizes."""
    w, h = image_size
    if mask.shape != (h, w):
        if not resize:
            raise InputError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {w}x{h} (WxH); "
                             "pass --resize-mask to resize it (nearest neighbour)", source=what)
        mask = resize_nearest(mask, h, w)
    if not mask.any():
        raise InputError("mask is empty (no pixel of the region is set)", source=what)
    return mask
