"""RefCOCOg region captions in the two COCO-style JSON forms region captioners evaluate on.

- Osprey's ``finetune_refcocog_val_with_mask.json``: ``{"images": [{"id", "file_name":
  "COCO_train2014_<12 digits>.jpg", "height", "width", "caption", ...}], "annotations": [{"id", "image_id",
  "segmentation" (polygons or RLE), "bbox", ...}]}``; an image entry is one referring expression, its
  ``caption`` the reference of each of its annotations (Osprey's ``refcocog_eval.py`` names a region by its
  annotation id);
- MDETR/GLaMM's ``finetune_refcocog_val_captions.json``: the same entries with the ``caption`` on the annotation
  and a ``bbox`` (XYWH pixels) for the region (GLaMM's ``eval/region_captioning`` and ``COCOEvalCap`` name a
  region by its entry's id): a box region (``region_from: "box"``; its mask is made by ``datasets.box_mask``).

Region ids are ``"<file stem>/<id>"`` (``image_id`` = the file's stem, so the regions of one COCO image group
together), with the benchmark's own id in ``benchmark_id``. Images are looked for by their ``file_name`` and,
as Osprey's folder of COCO images names them, by the part after its last ``_`` (``000000380440.jpg``).
The original ``refs(umd).p`` is a pickle and is refused (``datasets.refuse_pickle``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..stream import Item
from . import Reader, ReadOptions
from .coco_regions import caption_regions, first_annotation, is_coco


def detect(doc: Any) -> bool:
    if not is_coco(doc):
        return False
    img, ann = doc["images"][0], first_annotation(doc)
    refcoco = str(img.get("file_name", "")).startswith("COCO_") or "refcoco" in str(img.get("dataset_name", ""))
    has_region = any(k in ann for k in ("bbox", "segmentation"))
    has_caption = "caption" in img or "caption" in ann
    return refcoco and has_region and has_caption


def image_path(file_name: str, opts: ReadOptions) -> str:
    """``file_name``, or Osprey's name for it (the part after the last ``_``) where only that is in --images."""
    short = file_name.rsplit("_", 1)[-1]
    if opts.images is not None and short != file_name and not (opts.images / file_name).is_file() \
            and (opts.images / short).is_file():
        return short
    return file_name


def read(doc: Any, name: str, opts: ReadOptions) -> Iterator[Item]:
    return caption_regions(doc, name, opts, image_path)


READER = Reader("refcocog", "RefCOCOg region captions: Osprey's finetune_refcocog_val_with_mask.json or "
                "MDETR/GLaMM's finetune_refcocog_val_captions.json (COCO images in --images)", detect, read,
                "document")
