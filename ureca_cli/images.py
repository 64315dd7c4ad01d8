"""The one image loader: an image file -> an RGB ``PIL.Image`` (``W x H`` pixels), or just its size.

Every stage that reads a photo (annotate, refine, the tree picture, caption, training data) comes here, so a
missing file, a file that does not decode and a size that disagrees with its record read the same everywhere:
one ``InputError`` naming ``where`` (the record, such as ``"trees.jsonl:12"``) and the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _fail(message: str, where: str | None) -> Exception:
    from .errors import InputError

    return InputError(message, source=where or None)


def _open(path: str | Path, where: str | None) -> Any:
    from PIL import Image

    p = Path(path)
    if not p.is_file():
        raise _fail(f"image file {str(p)!r} not found", where)
    try:
        return Image.open(p)
    except Exception as e:  # noqa: BLE001 - Pillow raises many kinds for a bad file
        raise _fail(f"image file {str(p)!r} does not decode (not an image file? {type(e).__name__}: {e})",
                    where) from None


def image_size(path: str | Path, where: str | None = None) -> tuple[int, int]:
    """``(W, H)`` of an image file, from its header (the pixels are not decoded)."""
    with _open(path, where) as im:
        return im.size


def load_image(path: str | Path, *, width: int | None = None, height: int | None = None,
               where: str | None = None) -> Any:
    """The image at ``path`` as an RGB ``PIL.Image``. With ``width`` and ``height`` (the record's), a file of
    another size is an ``InputError`` too."""
    im = _open(path, where)
    try:
        with im:
            im.load()
            img = im.convert("RGB")
    except Exception as e:  # noqa: BLE001 - a truncated or corrupt file fails here, not at open
        raise _fail(f"image file {str(path)!r} does not decode (not an image file? {type(e).__name__}: {e})",
                    where) from None
    if width is not None and height is not None and img.size != (width, height):
        raise _fail(f"image file {str(path)!r} is {img.size[0]}x{img.size[1]} but the record says "
                    f"{width}x{height}", where)
    return img
