"""Our own records, as ``ureca`` writes them: region records (``refine --flat``, ``caption``, the synthetic
task), one region a line, and image records (``tree``, ``annotate``, ``refine``), whose nodes are regions. The
two may mix in one file; each line is told apart by its ``nodes``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .. import records as R
from ..errors import InputError
from ..stream import Item
from . import Reader, ReadOptions


def detect(first: Any) -> bool:
    return R.is_image_record(first) or R.is_region_record(first)


def _has_pixels(region: dict, where: str) -> bool:
    from .. import masks as M

    try:
        return M.area(region[R.RLE]) > 0
    except Exception as e:  # noqa: BLE001 - pycocotools raises plain errors for corrupt counts
        raise InputError(f"region {region[R.ID]}: cannot read its RLE ({e})", source=where) from None


def regions_of(value: Any, where: str, opts: ReadOptions) -> list[dict]:
    """The checked region records of one line: itself, or an image record's nodes (captioned ones, or every
    node whose mask holds a pixel: one without has nothing to caption, and SA-1B files hold some)."""
    if isinstance(value, dict) and R.NODES in value:
        regions = R.region_records(value, where, captioned_only=opts.captioned_only)
        return regions if opts.captioned_only else [r for r in regions if _has_pixels(r, where)]
    return [R.check_region_record(value, where, opts.need)]


def read(items: Iterable[Item], opts: ReadOptions) -> Iterator[Item]:
    for item in items:
        if item.error is not None:
            yield item
            continue
        try:
            yield Item(regions_of(item.value, item.where, opts), item.where, item.raw)
        except InputError as e:
            yield Item(None, item.where, item.raw, e)


READER = Reader("records", "region records or image records (ureca tree, annotate, refine, caption), JSONL", detect,
                read)
