"""What the COCO-style benchmark readers share (RefCOCOg, Visual Genome's test_caption.json, DLC-Bench): checking
a COCO document (``images``, ``annotations``), and making one region record of an annotation or an image entry.

Not a reader itself (no ``READER``): ``refcocog.py``, ``vg.py`` and ``dlc.py`` build on it. Frames: ``bbox`` is
XYWH in pixels (floats allowed), ``segmentation`` COCO polygons or RLE of the image's ``height x width``. Every
error is an ``InputError`` naming the file and the entry (``"f.json: annotations[3]: missing field 'bbox'"``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .. import records as R
from ..errors import InputError
from ..stream import Item
from . import BENCHMARK_ID, REGION_FROM, ReadOptions


def is_coco(doc: Any) -> bool:
    """A COCO document: ``images`` and ``annotations`` lists, the first image naming its ``file_name``."""
    return (isinstance(doc, dict) and isinstance(doc.get("images"), list) and bool(doc["images"])
            and isinstance(doc.get("annotations"), list) and isinstance(doc["images"][0], dict)
            and "file_name" in doc["images"][0])


def first_annotation(doc: dict) -> dict:
    anns = doc.get("annotations") or [{}]
    return anns[0] if isinstance(anns[0], dict) else {}


def _id(obj: dict, field: str, where: str) -> str:
    value = obj.get(field)
    if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
        raise InputError(f"field '{field}' should be an integer or a string, got {value!r}"
                         if field in obj else f"missing field '{field}'", source=where)
    return str(value)


def caption_text(obj: dict, field: str, where: str) -> str:
    """The non-empty string ``obj[field]``."""
    if field not in obj:
        raise InputError(f"missing field '{field}'", source=where)
    value = obj[field]
    if not isinstance(value, str):
        raise InputError(f"field '{field}' should be a string, got {type(value).__name__}", source=where)
    if not value.strip():
        raise InputError(f"field '{field}' is empty", source=where)
    return value.strip()


def bbox_of(obj: dict, where: str, field: str = R.BBOX) -> list[float]:
    """``obj[field]`` checked as an XYWH box in pixels with w, h > 0."""
    if field not in obj:
        raise InputError(f"missing field '{field}'", source=where)
    box = obj[field]
    if (not isinstance(box, list) or len(box) != 4
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in box)):
        raise InputError(f"field '{field}' should be [x, y, w, h] numbers, got {box!r}", source=where)
    if box[2] <= 0 or box[3] <= 0:
        raise InputError(f"field '{field}' {box} has no area (w and h must be > 0)", source=where)
    return [float(v) if isinstance(v, float) else v for v in box]


class Coco:
    """A checked COCO document: ``images`` by id (each with ``file_name``, and ``height``/``width`` when the file
    gives them), their order, and the annotations of each image in file order."""

    def __init__(self, doc: Any, name: str):
        self.name = name
        if not isinstance(doc, dict):
            raise InputError(f"expected a COCO JSON object with 'images' and 'annotations', got "
                             f"{type(doc).__name__}", source=name)
        for field in ("images", "annotations"):
            if not isinstance(doc.get(field), list):
                raise InputError(f"missing field '{field}' (a list)" if field not in doc
                                 else f"field '{field}' should be a list", source=name)
        self.images: dict[str, dict] = {}
        self.image_where: dict[str, str] = {}
        for i, img in enumerate(doc["images"]):
            where = f"{name}: images[{i}]"
            if not isinstance(img, dict):
                raise InputError(f"expected an object, got {type(img).__name__}", source=where)
            key = _id(img, "id", where)
            if not isinstance(img.get("file_name"), str) or not img["file_name"]:
                raise InputError("missing field 'file_name'" if "file_name" not in img
                                 else "field 'file_name' should be the image's file name", source=where)
            for field in (R.HEIGHT, R.WIDTH):
                v = img.get(field)
                if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                    raise InputError(f"field '{field}' should be a positive integer, got {v!r}", source=where)
            if key in self.images:
                raise InputError(f"image id {key} appears twice (first at {self.image_where[key]})", source=where)
            self.images[key] = img
            self.image_where[key] = where
        self.anns: dict[str, list[tuple[dict, str]]] = defaultdict(list)
        seen: dict[str, str] = {}
        for j, ann in enumerate(doc["annotations"]):
            where = f"{name}: annotations[{j}]"
            if not isinstance(ann, dict):
                raise InputError(f"expected an object, got {type(ann).__name__}", source=where)
            aid = _id(ann, "id", where)
            if aid in seen:
                raise InputError(f"annotation id {aid} appears twice (first at {seen[aid]})", source=where)
            seen[aid] = where
            image = _id(ann, R.IMAGE_ID, where)
            if image not in self.images:
                raise InputError(f"image_id {image} is not in 'images'", source=where)
            self.anns[image].append((ann, where))

    def size(self, image_key: str) -> tuple[int | None, int | None]:
        img = self.images[image_key]
        return img.get(R.HEIGHT), img.get(R.WIDTH)


def region(coco: Coco, image_key: str, key: str, captions: list[str] | None, *, ann: dict | None, where: str,
           image: str | None = None) -> dict:
    """One region record of image entry ``image_key``: id ``"<file stem>/<key>"``, ``image_id`` the file's stem,
    ``image`` (``image``, else the entry's ``file_name``), ``width``/``height`` where the file gives them, the
    references (``caption`` or ``captions``), ``benchmark_id`` ``key``; its region is ``ann``'s
    ``segmentation`` (a mask) when it has one, else its ``bbox`` (``region_from: "box"``)."""
    from .. import masks as M

    img = coco.images[image_key]
    stem = Path(img["file_name"]).stem
    h, w = coco.size(image_key)
    rec: dict[str, Any] = {R.ID: R.region_id(stem, key), R.IMAGE_ID: stem, R.IMAGE: image or img["file_name"]}
    if h is not None and w is not None:
        rec[R.WIDTH], rec[R.HEIGHT] = w, h
    if ann is not None:
        seg = ann.get("segmentation")
        if seg not in (None, [], {}):
            rec[R.RLE] = M.rle_from_any(seg, h, w, f"{where}: field 'segmentation'")
            if R.BBOX in ann:
                rec[R.BBOX] = bbox_of(ann, where)
        else:
            rec[R.BBOX] = bbox_of(ann, where)
            rec[REGION_FROM] = "box"
    if captions:
        if len(captions) == 1:
            rec[R.CAPTION] = captions[0]
        else:
            rec[R.CAPTIONS] = captions
    rec[BENCHMARK_ID] = key
    return rec


def caption_regions(doc: Any, name: str, opts: ReadOptions,
                    image_path: Callable[[str, ReadOptions], str] | None = None) -> Iterator[Item]:
    """The regions of a COCO-style region-caption file, one ``Item`` each, in image order.

    Where the annotations carry the ``caption`` (MDETR/GLaMM's ``finetune_refcocog_val_captions.json``,
    GRiT/GLaMM's ``test_caption.json``), an image entry is one region whose references are its annotations'
    captions (what ``COCOEvalCap`` pools for the entry), and ``benchmark_id`` is the entry's id (what their
    result files name); an entry whose annotations have different boxes holds one region per annotation
    instead. Where the image entry carries the ``caption`` (Osprey's ``finetune_refcocog_val_with_mask.json``),
    each annotation is a region with the entry's caption, and ``benchmark_id`` is the annotation's id (what
    Osprey's script writes). ``image_path(file_name, opts)`` may pick the image file's name.
    """
    coco = Coco(doc, name)
    on_anns = any("caption" in ann for anns in coco.anns.values() for ann, _ in anns)
    for key, img in coco.images.items():
        anns = coco.anns.get(key, [])
        image = image_path(img["file_name"], opts) if image_path else None
        try:
            if on_anns:
                if not anns:
                    continue  # an image entry without a region
                shapes = {repr((a.get(R.BBOX), a.get("segmentation"))) for a, _ in anns}
                if len(shapes) == 1:
                    caps = [caption_text(a, "caption", w) for a, w in anns]
                    yield Item([region(coco, key, key, caps, ann=anns[0][0], where=anns[0][1], image=image)],
                               anns[0][1], b"")
                    continue
                for ann, where in anns:
                    yield Item([region(coco, key, _id(ann, "id", where), [caption_text(ann, "caption", where)],
                                       ann=ann, where=where, image=image)], where, b"")
            else:
                caption = caption_text(img, "caption", coco.image_where[key])
                for ann, where in anns:
                    yield Item([region(coco, key, _id(ann, "id", where), [caption], ann=ann, where=where,
                                       image=image)], where, b"")
        except InputError as e:
            yield Item(None, coco.image_where[key], b"", e)
