"""Visual Genome region descriptions, in the official form and in the COCO-style form region captioners
evaluate on.

- the official ``region_descriptions.json``: ``[{"id": <image id>, "regions": [{"region_id", "image_id",
  "phrase", "x", "y", "width", "height"}, ...]}, ...]``; a region is its box (XYWH pixels), its phrase the
  reference; ids ``"<image id>/<region_id>"``, the image ``<image id>.jpg`` (looked for in --images and its
  ``VG_100K`` and ``VG_100K_2`` folders, as the release unpacks);
- GRiT/GLaMM's ``test_caption.json`` (COCO: ``images`` with ``id``, ``file_name``, ``height``, ``width``;
  ``annotations`` with ``id``, ``image_id``, ``bbox``, ``caption``): read as ``coco_regions.caption_regions``
  does (an image entry is a region, ``COCOEvalCap``'s unit), ids ``"<file stem>/<entry id>"``.

Every region here is a box (``region_from: "box"``); ``datasets.box_mask`` makes its mask when one is needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .. import records as R
from ..errors import InputError
from ..stream import Item
from . import BENCHMARK_ID, REGION_FROM, Reader, ReadOptions
from .coco_regions import bbox_of, caption_regions, caption_text, first_annotation, is_coco

SUBFOLDERS = ("VG_100K", "VG_100K_2")  # where the release's two image archives unpack


def _official(doc: Any) -> bool:
    return isinstance(doc, list) and bool(doc) and isinstance(doc[0], dict) and "regions" in doc[0]


def detect(doc: Any) -> bool:
    if _official(doc):
        return True
    if not is_coco(doc):
        return False
    ann = first_annotation(doc)
    return "caption" in ann and "bbox" in ann


def image_path(file_name: str, opts: ReadOptions) -> str:
    """``file_name``, or its place in one of the release's image folders under --images."""
    if opts.images is not None and not (opts.images / file_name).is_file():
        for sub in SUBFOLDERS:
            if (opts.images / sub / file_name).is_file():
                return f"{sub}/{file_name}"
    return file_name


def _image_regions(entry: Any, name: str, i: int, opts: ReadOptions) -> Iterator[Item]:
    where = f"{name}: [{i}]"
    if not isinstance(entry, dict):
        yield Item(None, where, b"", InputError(f"expected an object with 'id' and 'regions', got "
                                                f"{type(entry).__name__}", source=where))
        return
    image_id = entry.get("id", entry.get(R.IMAGE_ID))
    regions = entry.get("regions")
    if isinstance(image_id, bool) or not isinstance(image_id, int | str) or not isinstance(regions, list):
        field = "regions" if isinstance(image_id, int | str) and not isinstance(image_id, bool) else "id"
        yield Item(None, where, b"", InputError(f"missing or malformed field '{field}'", source=where))
        return
    image = image_path(f"{image_id}.jpg", opts)
    for j, reg in enumerate(regions):
        rwhere = f"{where}.regions[{j}]"
        try:
            if not isinstance(reg, dict):
                raise InputError(f"expected an object, got {type(reg).__name__}", source=rwhere)
            if "region_id" not in reg:
                raise InputError("missing field 'region_id'", source=rwhere)
            box = bbox_of({R.BBOX: [reg.get(k) for k in ("x", "y", "width", "height")]}, rwhere)
            rec = {R.ID: R.region_id(image_id, reg["region_id"]), R.IMAGE_ID: str(image_id), R.IMAGE: image,
                   R.BBOX: box, REGION_FROM: "box", R.CAPTION: caption_text(reg, "phrase", rwhere),
                   BENCHMARK_ID: str(reg["region_id"])}
        except InputError as e:
            if "'bbox'" in str(e):  # name the file's own fields, not ours
                e = InputError(f"fields 'x', 'y', 'width', 'height' should be numbers with width and height "
                               f"> 0, got {[reg.get(k) for k in ('x', 'y', 'width', 'height')]}", source=rwhere)
            yield Item(None, rwhere, b"", e)
            continue
        yield Item([rec], rwhere, b"")


def read(doc: Any, name: str, opts: ReadOptions) -> Iterator[Item]:
    if isinstance(doc, list):
        for i, entry in enumerate(doc):
            yield from _image_regions(entry, name, i, opts)
        return
    yield from caption_regions(doc, name, opts, image_path)


READER = Reader("vg", "Visual Genome region descriptions: the official region_descriptions.json, or GRiT/GLaMM's "
                "COCO-style test_caption.json (images in --images)", detect, read, "document")
