"""Readers that turn files into region records, behind one registry: ``train``, ``caption --input`` and
``score`` read through it.

A reader is a module here with a ``READER = Reader(name, help, detect, read, kind)``, of one of three kinds:

- ``"lines"`` (JSONL: our records, the released URECA data): ``detect(first)`` says whether a file whose first
  record (parsed JSON) is ``first`` is in the format; ``read(items, opts)`` takes the file's records
  (``stream.Item``: the parsed value, ``where`` = ``"file:line"``, the raw line);
- ``"document"`` (one JSON document: RefCOCOg's and Visual Genome's files): ``detect(doc)`` on the parsed
  document, ``read(doc, name, opts)``;
- ``"folder"`` (a benchmark's folder: DLC-Bench): ``detect(path)`` and ``read(path, opts)``.

Every ``read`` yields one ``Item`` per unit of work (an input record, an image, a region) whose value is the
list of region records it holds (``records.check_region_record``'s rules) or whose ``error`` says why not.

``read(path, fmt, opts)`` picks the reader (``fmt``, or ``"auto"``: a folder goes to the folder readers, a file
that is one JSON document to the document readers, else the first record decides, and ``records`` reads what
no reader recognises), runs it, resolves every region's ``image`` to a file when ``opts.need`` holds ``image``
(a reference into an SA-1B tar shard, ``TAR#MEMBER@OFFSET:SIZE``, is kept as it is, once its tar is checked to
hold that member), and makes the mask of every region given by a box when ``opts.need`` holds ``rle``
(``box_masks``: the one place where a box becomes a mask: its rectangle, or ``opts.box_to_mask``'s mask, such
as SAM's). Python pickles (RefCOCO's ``refs(umd).p``) are refused, never unpickled. To add a reader:
``datasets/<name>.py`` with its ``READER``, and its line in ``READERS``.

Two region-record fields belong to the benchmark readers: ``region_from`` (``"box"``: the region is its
``bbox``, XYWH pixels; its ``rle``, when asked for, is made by ``box_masks``) and ``benchmark_id`` (the id the
benchmark's own tools name the region by: the COCO ``image_id`` of a results file, DLC-Bench's annotation id),
which ``score`` accepts for predictions in the benchmark's own result formats.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from itertools import chain
from pathlib import Path
from typing import Any

import orjson

from .. import records as R
from ..errors import InputError, UrecaError
from ..images import tar_ref
from ..stream import Item

#: --format name -> the module (in this package) that defines its READER; the first that detects a file wins
READERS: dict[str, str] = {
    "records": ".ours",
    "internvl": ".internvl",
    "refcocog": ".refcocog",
    "vg": ".vg",
    "dlc": ".dlc",
}

REGION_FROM = "region_from"  # "box": the region is its bbox; box_masks makes its mask
BENCHMARK_ID = "benchmark_id"  # the id the benchmark's own result files name the region by
KINDS = ("lines", "document", "folder")

#: The ``--format`` choice of the commands that read region records: ``auto`` and the registry's names.
FormatName = StrEnum("FormatName", {"auto": "auto", **{name: name for name in READERS}})

IMAGE_SUFFIXES = ("", ".jpg", ".jpeg", ".png", ".JPG", ".webp")  # tried in turn on an image name

#: ``(image file, boxes XYWH pixels inside the image, (W, H), where) -> one dict of fields per box``, holding at
#: least ``rle`` (a COCO RLE of the image's size); the other fields (such as SAM's ``sam`` block) join the region
BoxToMask = Callable[[str, list[tuple[float, float, float, float]], tuple[int, int], str], list[dict]]


@dataclass(frozen=True)
class ReadOptions:
    """What a reader is asked for.

    ``need``: the region-record fields the caller cannot do without (``records.IMAGE``, ``RLE``, ``CAPTION``);
    ``captioned_only``: an image record gives its captioned nodes (train, score), or every node whose mask
    holds a pixel (caption); ``images``: a folder where image files are looked for (``--images``); ``masks``:
    a folder of SA-1B per-image JSON files (``--masks``, the released format's masks).

    ``box_to_mask``: makes the masks of box regions instead of their rectangles (``BoxToMask``; ``caption
    --box-to-mask sam`` passes ``sam.BoxMasker``). A model is costly, so with it ``finish`` leaves box regions
    without ``rle``, and the caller calls ``box_masks(regions, where, opts.box_to_mask)`` on the units it
    actually runs: after ``--shard`` and ``--resume`` have set the others aside, one image's regions at a time.
    """

    need: tuple[str, ...] = (R.CAPTION,)
    captioned_only: bool = True
    images: Path | None = None
    masks: Path | None = None
    base: Path | None = None  # the input file's folder: relative image paths are also looked for there
    box_to_mask: BoxToMask | None = None

    def __post_init__(self):
        for flag, folder in (("--images", self.images), ("--masks", self.masks)):
            if folder is not None and not Path(folder).is_dir():
                raise UrecaError(f"{flag} {folder}: no such folder")


@dataclass(frozen=True)
class Reader:
    """One format: its ``--format`` name, a line of help, ``detect`` and ``read``, and its ``kind`` (``lines``,
    ``document`` or ``folder``: what ``detect`` and ``read`` are given; see the module docstring)."""

    name: str
    help: str
    detect: Callable[[Any], bool]
    read: Callable[..., Iterator[Item]]
    kind: str = "lines"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"reader {self.name}: kind {self.kind!r} is not one of {KINDS}")


def reader(name: str) -> Reader:
    module = READERS.get(str(name))
    if module is None:
        raise UrecaError(f"--format {name!r}: choose one of {', '.join(['auto', *READERS])}")
    return importlib.import_module(module, __name__).READER


def detect(first: Any, kind: str = "lines") -> str | None:
    """The name of the first reader of ``kind`` that recognises ``first`` (a file's first record, a parsed
    document or a folder's path), or ``None``."""
    for name in READERS:
        r = reader(name)
        if r.kind == kind and r.detect(first):
            return name
    return None


PICKLE_HINT = ("ureca never unpickles files (a pickle can run code); RefCOCOg's region captions come as JSON: "
               "Osprey's finetune_refcocog_val_with_mask.json or MDETR/GLaMM's finetune_refcocog_val_captions.json")


def refuse_pickle(head: bytes, name: str) -> None:
    """Refuse a Python pickle (such as RefCOCO's ``refs(umd).p``) by its first bytes or its suffix, before
    anything else reads it: one ``InputError`` naming the file and the JSON forms to use instead."""
    suffix = Path(name).suffix.lower()
    if head[:1] == b"\x80" or head[:3] in (b"(lp", b"(dp") or suffix in (".p", ".pkl", ".pickle"):
        raise InputError(f"a Python pickle; {PICKLE_HINT}", source=name)


def read_items(items: Iterable[Item], fmt: str = "auto", opts: ReadOptions = ReadOptions()) -> Iterator[Item]:
    """Region records of parsed JSONL ``items``, one ``Item`` per input record (see the module docstring)."""
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
    r = reader(fmt)
    if r.kind != "lines":
        raise UrecaError(f"--format {fmt} reads {'a folder' if r.kind == 'folder' else 'one JSON document'}, "
                         "not JSONL lines")
    return finish(r.read(items, opts), opts)


def read_document(doc: Any, name: str, fmt: str = "auto", opts: ReadOptions = ReadOptions()) -> Iterator[Item]:
    """Region records of one parsed JSON document ``doc`` (from the file ``name``) in a ``document`` format."""
    if fmt == "auto":
        found = detect(doc, "document")
        if found is None:
            raise InputError("not a benchmark file this version knows (RefCOCOg: Osprey's or MDETR/GLaMM's COCO-"
                             "style JSON; Visual Genome: region_descriptions.json or test_caption.json); name its "
                             "format with --format", source=name)
        fmt = found
    r = reader(fmt)
    if r.kind != "document":
        raise UrecaError(f"--format {fmt} does not read one JSON document ({name})")
    return finish(r.read(doc, name, opts), opts)


def finish(units: Iterable[Item], opts: ReadOptions) -> Iterator[Item]:
    """A reader's units with every region's ``image`` resolved to a file (when ``opts.need`` holds ``image``)
    and the mask of every box region made (``box_masks``, when ``opts.need`` holds ``rle`` and no
    ``opts.box_to_mask`` leaves that to the caller)."""
    resolved: dict[str, str | None] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for unit in units:
        if unit.error is None and (R.IMAGE in opts.need or R.RLE in opts.need):
            try:
                if R.IMAGE in opts.need:
                    for region in unit.value:
                        region[R.IMAGE] = _resolved(region[R.IMAGE], opts, resolved, unit.where)
                if R.RLE in opts.need and opts.box_to_mask is None:
                    box_masks(unit.value, unit.where, sizes=sizes)
            except InputError as e:
                unit = Item(None, unit.where, unit.raw, e)
        yield unit


def box_masks(regions: list[dict], where: str, to_mask: BoxToMask | None = None,
              sizes: dict[str, tuple[int, int]] | None = None) -> None:
    """Give every region of ``regions`` that is given by its box (``region_from: "box"``) and has no ``rle`` its
    mask, in place. This is the one place where a box becomes a mask (Visual Genome's regions, MDETR/GLaMM's
    RefCOCOg).

    The box ``bbox`` (XYWH pixels, floats allowed) is clipped to the image; a box with no pixel inside it is an
    ``InputError`` naming ``where`` and the region. Without ``to_mask`` the mask is the box's rectangle: every
    pixel the box touches (the image's size is the record's ``width``/``height`` where it gives them, else the
    image file's; ``sizes`` caches it per file). With ``to_mask`` (``BoxToMask``, such as ``sam.BoxMasker``) it
    is called once per image with the clipped boxes of that image's regions, and its fields join each region.
    """
    import numpy as np

    from .. import masks as M
    from ..images import image_size

    sizes = {} if sizes is None else sizes
    by_image: dict[str, list[tuple[dict, tuple[float, float, float, float]]]] = {}
    for region in regions:
        if region.get(R.RLE) is not None or region.get(REGION_FROM) != "box":
            continue
        rid = region.get(R.ID)
        image = region.get(R.IMAGE)
        w, h = region.get(R.WIDTH), region.get(R.HEIGHT)
        if to_mask is not None and not image:
            raise InputError(f"region {rid}: a box region needs its image to be segmented", source=where)
        if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
            if not image:
                raise InputError(f"region {rid}: a box region needs its image (or its width and height)",
                                 source=where)
            if image not in sizes:
                sizes[image] = image_size(image, where)
            w, h = sizes[image]
        x, y, bw, bh = region[R.BBOX]
        x0, y0 = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
        x1, y1 = min(w, int(np.ceil(x + bw))), min(h, int(np.ceil(y + bh)))
        if x1 <= x0 or y1 <= y0:
            raise InputError(f"region {rid}: box {list(region[R.BBOX])} (XYWH) holds no pixel of the {w}x{h} "
                             "image", source=where)
        if to_mask is None:
            mask = np.zeros((h, w), np.uint8)
            mask[y0:y1, x0:x1] = 1
            region[R.RLE] = M.encode(mask)
            continue
        fx0, fy0 = max(0.0, float(x)), max(0.0, float(y))
        fx1, fy1 = min(float(w), float(x + bw)), min(float(h), float(y + bh))
        if fx1 <= fx0 or fy1 <= fy0:  # inside the pixels the box touches, but no area inside the image
            raise InputError(f"region {rid}: box {list(region[R.BBOX])} (XYWH) has no area inside the {w}x{h} "
                             "image", source=where)
        by_image.setdefault(image, []).append((region, (fx0, fy0, fx1 - fx0, fy1 - fy0)))
        sizes.setdefault(image, (w, h))
    for image, group in by_image.items():
        fields = to_mask(image, [box for _, box in group], sizes[image], where)
        for (region, _), got in zip(group, fields, strict=True):
            region.update(got)


def read(path: str | Path, fmt: str = "auto", opts: ReadOptions = ReadOptions()) -> Iterator[Item]:
    """Region records of a file (``-``: stdin, JSONL) or a benchmark folder, one ``Item`` per unit; relative
    image paths are looked for under ``opts.images``, the working directory and the file's own folder."""
    from dataclasses import replace

    from ..stream import iter_jsonl

    name = "<stdin>" if str(path) == "-" else str(path)
    given = reader(fmt) if fmt != "auto" else None
    if str(path) != "-" and Path(path).is_dir():
        folder = Path(path)
        if given is None:
            given = reader(benchmark_folder(folder))
        if given.kind != "folder":
            raise InputError(f"is a directory; --format {given.name} reads a file", source=name)
        return finish(given.read(folder, replace(opts, base=opts.base or folder.resolve())), opts)
    base = Path(path).resolve().parent if str(path) != "-" else Path.cwd()
    opts = replace(opts, base=opts.base or base)
    if given is not None and given.kind == "folder":
        raise InputError(f"--format {given.name} reads a folder (the benchmark's release), not a file", source=name)
    if str(path) == "-" or (Path(path).exists() and not Path(path).is_file()):  # stdin, a pipe: JSONL, read once
        if given is not None and given.kind == "document":
            raise UrecaError(f"--format {given.name} reads a file, not a stream ({name})")
        return read_items(iter_jsonl(path), fmt, opts)
    kind, doc = sniff(path) if given is None or given.kind == "document" else ("lines", None)
    if given is not None and given.kind == "document":
        if kind != "document":
            from ..stream import read_json_file

            doc = read_json_file(path)
        return read_document(doc, name, given.name, opts)
    if given is None and kind == "document":
        if detect(doc, "document") is not None:
            return read_document(doc, name, "auto", opts)
        if isinstance(doc, list):  # a JSON array of records
            return read_items([Item(o, f"{name}: [{i}]", b"") for i, o in enumerate(doc)], fmt, opts)
        raise InputError("one JSON document, but not a format this version knows (region or image records, the "
                         "released URECA data, RefCOCOg, Visual Genome, DLC-Bench); name one with --format",
                         source=name)
    if kind == "lines" and given is not None:  # a named JSONL format: still never a pickle
        check_not_pickle(path)
    return read_items(iter_jsonl(path), fmt, opts)


def benchmark_folder(folder: Path) -> str:
    """The name of the folder reader that reads ``folder`` (a benchmark's release), or an ``InputError``."""
    found = detect(folder, "folder")
    if found is None:
        raise InputError("is a directory, and not a benchmark folder this version knows (DLC-Bench: "
                         "annotations.json, class_names.json, qa.json and images/)", source=str(folder))
    return found


def format_of(path: str | Path) -> str:
    """The format ``read(path, "auto", ...)`` reads ``path`` in: a folder reader's name, a document reader's, or
    the lines reader its first record picks (``records`` when none does). Pickles are refused."""
    if Path(path).is_dir():
        return benchmark_folder(Path(path))
    kind, doc = sniff(path)
    if kind == "document":
        return detect(doc, "document") or "records"
    from ..stream import iter_jsonl

    first = next((it.value for it in iter_jsonl(path) if it.error is None), None)
    return detect(first) or "records"


def check_not_pickle(path: str | Path) -> None:
    """Refuse a pickle by its first bytes (a regular file only: a stream is read once, by the JSONL reader)."""
    if not Path(path).is_file():
        return  # a stream is read once, by the JSONL reader
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return  # the JSONL reader names what is wrong with the file
    refuse_pickle(head, str(path))


def sniff(path: str | Path) -> tuple[str, Any]:
    """``("document", parsed)`` when the file is one JSON document that is not a JSONL file of records (its
    first line alone does not parse, or it parses and a document reader recognises it), else ``("lines",
    None)``. A pickle is refused first (``refuse_pickle``); a JSONL file is never read whole here."""
    from ..stream import open_binary

    name = str(path)
    fh = open_binary(path, "a JSON or JSONL file")
    try:
        head = fh.read(4)
        refuse_pickle(head, name)
        fh.seek(0)
        first = b""
        for line in fh:
            if line.strip():
                first = line
                break
        if not first:
            return "lines", None
        try:
            value = orjson.loads(first)
        except orjson.JSONDecodeError:
            value = _NOT_JSON
        if value is not _NOT_JSON:
            if isinstance(value, dict | list) and detect(value, "document") is not None:
                return "document", value
            return "lines", None
        fh.seek(0)
        data = fh.read()
    except OSError as e:
        raise InputError(f"cannot read ({e.strerror})", source=name) from None
    finally:
        fh.close()
    try:
        return "document", orjson.loads(data)
    except orjson.JSONDecodeError:
        return "lines", None  # JSONL whose first line is bad: the line reader names it


_NOT_JSON = object()


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
    """A region's ``image`` as a file (checked to exist), or a tar reference kept as it is, once checked cheaply
    (the tar is there and holds that member at that byte: one read of its header, ``tars.read_member``)."""
    ref = tar_ref(image)
    if ref is not None:
        if image not in cache:
            from ..tars import read_member

            read_member(ref, where, length=0)  # an InputError naming the tar, the member and the record
            cache[image] = image
        return image
    if image not in cache:
        found = resolve_image(image, opts)
        cache[image] = str(found.resolve()) if found is not None else None
    if cache[image] is None:
        looked = f" (looked in {opts.images})" if opts.images else ""
        raise InputError(f"image '{image}' does not exist{looked}", source=where)
    return cache[image]
