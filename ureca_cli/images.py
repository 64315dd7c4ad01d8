"""The one image loader: an image -> an RGB ``PIL.Image`` (``W x H`` pixels), or just its size.

Every stage that reads a photo (annotate, refine, the tree picture, caption, training data) comes here, so a
missing file, a file that does not decode and a size that disagrees with its record read the same everywhere:
one ``InputError`` naming ``where`` (the record, such as ``"trees.jsonl:12"``) and the file.

A record's ``image`` is a file path or a reference to a member of an SA-1B tar shard
(``/abs/sa_000000.tar#sa_1.jpg@OFFSET:SIZE``, written by ``ureca tree`` for a tar; see ``ureca_cli.tars``). A
reference is read in place (one read of the member's header, checked, and one of its data): a tar that moved,
was cut short or changed since the record was written is one ``InputError`` naming the tar and the record.
``image_stem`` is the one way to get an image's name without its suffix (the released format's ``image``).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any


def _fail(message: str, where: str | None) -> Exception:
    from .errors import InputError

    return InputError(message, source=where or None)


def tar_ref(image: Any) -> Any:
    """The ``tars.MemberRef`` an image string holds, or ``None`` for a file path (no import of ``tars`` unless
    the string could be one: it holds a ``#``)."""
    text = str(image) if isinstance(image, Path) else image
    if not isinstance(text, str) or "#" not in text:
        return None
    from .tars import parse_ref

    return parse_ref(text)


def image_stem(image: str | Path) -> str:
    """The image's name less its suffix: ``/data/sa_1.jpg`` -> ``sa_1``, and for a tar reference its member's
    (``/data/sa_000000.tar#sa_000000/sa_1.jpg@1024:5678`` -> ``sa_1``)."""
    ref = tar_ref(image)
    return PurePosixPath(ref.member).stem if ref is not None else Path(image).stem


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
    """``(W, H)`` of an image file or tar member, from its header (the pixels are not decoded)."""
    ref = tar_ref(path)
    if ref is not None:
        from .tars import image_size as member_size

        return member_size(ref, where)
    with _open(path, where) as im:
        return im.size


def load_image(path: str | Path, *, width: int | None = None, height: int | None = None,
               where: str | None = None) -> Any:
    """The image at ``path`` (a file or a tar reference) as an RGB ``PIL.Image``. With ``width`` and ``height``
    (the record's), an image of another size is an ``InputError`` too."""
    ref = tar_ref(path)
    if ref is not None:
        from .tars import load_image as load_member

        img = load_member(ref, where)
        what = f"image {ref}"
    else:
        im = _open(path, where)
        try:
            with im:
                im.load()
                img = im.convert("RGB")
        except Exception as e:  # noqa: BLE001 - a truncated or corrupt file fails here, not at open
            raise _fail(f"image file {str(path)!r} does not decode (not an image file? {type(e).__name__}: {e})",
                        where) from None
        what = f"image file {str(path)!r}"
    if width is not None and height is not None and img.size != (width, height):
        raise _fail(f"{what} is {img.size[0]}x{img.size[1]} but the record says {width}x{height}", where)
    return img
