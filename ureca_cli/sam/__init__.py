"""SAM through transformers: prompts (points, boxes) to masks, and automatic mask generation to SA-1B files.

Public API (what ``caption --point/--box`` and ``tree --generate-masks`` call):

- ``load_sam(name=DEFAULT_SAM_MODEL, *, device=None, dtype="auto", option="--sam-model") -> Segmenter``
- prompts: ``Point(x, y, label=1)``, ``Region(points=(), box=None)`` (box XYWH pixels),
  ``parse_point("412,300:0")``, ``parse_box("x,y,w,h")``, ``check_regions(regions, width, height, where)``,
  ``regions_from_options(points, boxes)`` (the command line's grouping: each ``--box`` a region, all
  ``--point`` options one more)
- ``segment_regions(seg, image, regions, *, encoding=None, batched=True, multimask=None, where="")
  -> list[RegionMask]`` (``.mask`` HxW bool, ``.score``, ``.rle()``); ``seg.encode([images])`` encodes
  several images in one call when a caller wants to pass ``encoding=``; ``mask_fields(region, mask, model)``:
  the ``rle`` and ``sam`` fields of a region record (a SAM mask that holds no pixel is an ``InputError``)
- ``BoxMasker(seg)``: the hook ``datasets.box_masks`` calls for boxes read from files
  (``caption --input FILE --box-to-mask sam``), one image encoding per image
- ``AmgConfig(...)``, ``generate_masks(seg, image, cfg) -> list[annotation dict]``,
  ``generate_mask_file(seg, image_path, cfg) -> SA-1B dict``, ``write_mask_file(record, folder) -> Path``,
  ``sa1b_record(annotations, image_id=, width=, height=, file_name=)``
- random weights without the hub: ``tiny_sam``/``save_tiny_sam`` (tests), ``random_sam`` (benchmarks, real
  SAM ViT-B size from ``configs/sam-vit-base.json``)

Importing this package loads neither numpy nor torch: the prompt and settings names are light, the rest is
imported on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .config import DEFAULT_SAM_MODEL, AmgConfig
from .prompts import Box, Point, Region, box_spec, check_regions, parse_box, parse_point, regions_from_options

_LAZY = {
    "Encoding": "model",
    "Segmenter": "model",
    "load_sam": "model",
    "load_rgb": "model",
    "RegionMask": "predict",
    "segment_regions": "predict",
    "mask_fields": "predict",
    "BoxMasker": "boxes",
    "generate_masks": "amg",
    "sa1b_record": "sa1b",
    "generate_mask_file": "sa1b",
    "write_mask_file": "sa1b",
    "tiny_sam": "tiny",
    "save_tiny_sam": "tiny",
    "random_sam": "tiny",
    "packaged_sam_config": "tiny",
}

__all__ = ["DEFAULT_SAM_MODEL", "AmgConfig", "Box", "Point", "Region", "box_spec", "check_regions",
           "parse_box", "parse_point", "regions_from_options", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
