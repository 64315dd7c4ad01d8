"""Readers that turn files into region records, behind one registry: ``train``, ``caption --input`` and
``score`` read through it.

A reader is a module here with a ``READER = Reader(name, help, detect, read)``:

- ``detect(first)``: whether a file whose first record (parsed JSON) is ``first`` is in the reader's format;
- ``read(items, opts)``: the file's records (``stream.Item``: the parsed value, ``where`` = ``"file:line"``, the
  raw line) in, one ``Item`` per input record out, whose value is the list of region records it holds
  (``records.check_region_record``'s rules; an image record holds many) or whose ``error`` says why not.

``read(path, fmt, opts)`` picks the reader (``fmt``, or ``"auto"``: the first reader that recognises the first
record, else ``records``), runs it, and resolves every region's ``image`` to a file when ``opts.need`` holds
``image``. To add a reader: ``datasets/<name>.py`` with its ``READER``, and its line in ``READERS``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from itertools import chain
from pathlib import Path
from typing import Any

from .. import records as R
from ..errors import InputError, UrecaError
from ..stream import Item

#: --format name -> the module (in this package) that defines its READER; the first that detects a file wins
READERS: dict[str, str] = {
    "records": ".ours",
    "internvl": ".internvl",
}

#: The ``--format`` choice of the commands that read region records: ``auto`` and the registry's names.
FormatName = StrEnum("FormatName", {"auto": "auto", **{name: name for name in READERS}})

IMAGE_SUFFIXES = ("", ".jpg", ".jpeg", ".png", ".JPG", ".webp")  # tried in turn on an image name


@dataclass(frozen=True)
class ReadOptions:
    """What a reader is asked for.

    ``need``: the region-record fields the caller cannot do without (``records.IMAGE``, ``RLE``, ``CAPTION``);
    ``captioned_only``: an image record gives its captioned nodes (train, score), or every node whose mask
    holds a pixel (caption); ``images``: a folder where image files are looked for (``--images``); ``masks``:
    a folder of SA-1B per-image JSON files (``--masks``, the released format's masks).
    """

    need: tuple[str, ...] = (R.CAPTION,)
    captioned_only: bool = True
    images: Path | None = None
    masks: Path | None = None
    base: Path | None = None  # the input file's folder: relative image paths are also looked for there

    def __post_init__(self):
        for flag, folder in (("--images", self.images), ("--masks", self.masks)):
            if folder is not None and not Path(folder).is_dir():
                raise UrecaError(f"{flag} {folder}: no such folder")


@dataclass(frozen=True)
class Reader:
    """One format: its ``--format`` name, a line of help, ``detect(first record) -> bool`` and
    ``read(items, opts)`` (see the module docstring)."""

    name: str
    help: str
    detect: Callable[[Any], bool]
    read: Callable[[Iterable[Item], ReadOptions], Iterator[Item]]


def reader(name: str) -> Reader:
    module = READERS.get(str(name))
    if module is None:
        raise UrecaError(f"--format {name!r}: choose one of {', '.join(['auto', *READERS])}")
    return importlib.import_module(module, __name__).READER


def detect(first: Any) -> str | None:
    """The name of the first reader that recognises ``first`` (a file's first record), or ``None``."""
    return next((name for name in READERS if reader(name).detect(first)), None)


def read_items(items: Iterable[Item], fmt: str = "auto", opts: ReadOptions = ReadOptions()) -> Iterator[Item]:
    """Region records of parsed input ``items``, one ``Item`` per input record (see the module docstring)."""
    items = iter(items)
    if fmt == "auto":
        head: list[Item] = []
        for item in items:
            head.append(item)
            if item.error is None:
                break
        first = head[-1].value if head and head[-1].error is None else None
        fmt = detect(first) or "records"
        items = chain(head, items)
    resolved: dict[str, str | None] = {}
    for unit in reader(fmt).read(items, opts):
        if unit.error is None and R.IMAGE in opts.need:
            try:
                for region in unit.value:
                    region[R.IMAGE] = _resolved(region[R.IMAGE], opts, resolved, unit.where)
            except InputError as e:
                unit = Item(None, unit.where, unit.raw, e)
        yield unit


def read(path: str | Path, fmt: str = "auto", opts: ReadOptions = ReadOptions()) -> Iterator[Item]:
    """Region records of a JSONL file (``-``: stdin), one ``Item`` per line; relative image paths are looked
    for under ``opts.images``, the working directory and the file's own folder."""
    from dataclasses import replace

    from ..stream import iter_jsonl

    base = Path(path).resolve().parent if str(path) != "-" else Path.cwd()
    return read_items(iter_jsonl(path), fmt, replace(opts, base=opts.base or base))


def resolve_image(image: str, opts: ReadOptions) -> Path | None:
    """The file a record's ``image`` names: the path itself when absolute, else under ``opts.images``, the
    working directory or the input file's folder, as it is or with an image suffix (released data names images
    by their stem); ``None`` when there is none."""
    p = Path(image)
    if p.is_absolute():
        return p if p.is_file() else None
    roots = [r for r in (opts.images, Path.cwd(), opts.base) if r is not None]
    for root in roots:
        for suffix in IMAGE_SUFFIXES:
            q = root / (image + suffix)
            if q.is_file():
                return q
    return None


def _resolved(image: str, opts: ReadOptions, cache: dict[str, str | None], where: str) -> str:
    if image not in cache:
        found = resolve_image(image, opts)
        cache[image] = str(found.resolve()) if found is not None else None
    if cache[image] is None:
        looked = f" (looked in {opts.images})" if opts.images else ""
        raise InputError(f"image '{image}' does not exist{looked}", source=where)
    return cache[image]
