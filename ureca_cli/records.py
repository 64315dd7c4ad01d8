"""Record types every stage reads and writes: image records, their nodes, and region records.

Records travel as plain dicts (one JSON object per line), so that every field a stage wrote is kept by
the stages after it. This module names the fields once, checks records at the boundary, and converts
between the image form (``tree -> annotate -> refine``) and the region form (``train``, ``caption``,
``score``).

Frames and formats:
- ``bbox``: XYWH in pixels, SA-1B convention (the file's own box, one pixel narrower and shorter than
  ``pycocotools.mask.toBbox``).
- ``rle``: COCO compressed RLE, ``{"size": [H, W], "counts": str}``, column-major as pycocotools writes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .errors import InputError

SCHEMA_VERSION = 1

# image record
IMAGE_ID = "image_id"
IMAGE = "image"
WIDTH = "width"
HEIGHT = "height"
NODES = "nodes"
SCHEMA = "schema"
SOURCE = "source"  # the input file a record came from (tree), used by --resume

# node
ID = "id"
PARENT = "parent"
CHILDREN = "children"
DEPTH = "depth"
AREA = "area"
BBOX = "bbox"
RLE = "rle"
ROLE = "role"
DROP_REASON = "drop_reason"
SHORT_CAPTION = "short_caption"
LONG_CAPTION = "long_caption"
UNIQUE_CAPTION = "unique_caption"
SIMILAR = "similar"
VERIFIED = "verified"
CAPTION = "caption"
CAPTIONS = "captions"

# roles a node can take in a mask tree
ROLE_MAIN = "main"  # a main object: child of the root, deep enough, area within bounds
ROLE_PART = "part"  # a descendant of a main object, large enough
ROLE_DROPPED = "dropped"  # not captioned; ``drop_reason`` says why
ROLES = (ROLE_MAIN, ROLE_PART, ROLE_DROPPED)


def region_id(image_id: str, node_id: Any) -> str:
    """The id of one region across every stage: ``"<image_id>/<node id>"``."""
    return f"{image_id}/{node_id}"


def _need(obj: dict, field: str, types: type | tuple[type, ...], where: str) -> Any:
    if field not in obj:
        raise InputError(f"missing field '{field}'", source=where)
    value = obj[field]
    if not isinstance(value, types) or isinstance(value, bool) and bool not in _as_tuple(types):
        names = "/".join(t.__name__ for t in _as_tuple(types))
        raise InputError(f"field '{field}' should be {names}, got {type(value).__name__}", source=where)
    return value


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def check_rle(rle: Any, where: str, field: str = RLE) -> dict:
    """Check that ``rle`` looks like a COCO compressed RLE and return it."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise InputError(f"field '{field}' is not a COCO RLE (needs 'size' and 'counts')", source=where)
    size = rle["size"]
    if (
        not isinstance(size, list | tuple)
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise InputError(f"field '{field}.size' should be [H, W] positive integers, got {size!r}", source=where)
    if not isinstance(rle["counts"], str | bytes | list):
        raise InputError(f"field '{field}.counts' should be a string", source=where)
    return rle


def check_image_record(rec: Any, where: str, *, need_nodes: bool = True) -> dict:
    """Check the fields every stage relies on in an image record; return the record unchanged.

    ``where`` names the record in messages, such as ``"trees.jsonl:12"``.
    """
    if not isinstance(rec, dict):
        raise InputError(f"expected a JSON object (an image record), got {type(rec).__name__}", source=where)
    if need_nodes and NODES not in rec and ID in rec and (RLE in rec or CAPTION in rec):
        raise InputError(f"a region record (one region a line, id {rec[ID]!r}) where an image record with "
                         f"'{NODES}' is expected (the output of ureca tree, annotate or refine)", source=where)
    image_id = _need(rec, IMAGE_ID, (str, int), where)
    if isinstance(image_id, int):
        rec[IMAGE_ID] = str(image_id)
    _need(rec, IMAGE, str, where)
    _need(rec, WIDTH, int, where)
    _need(rec, HEIGHT, int, where)
    if not need_nodes:
        return rec
    nodes = _need(rec, NODES, list, where)
    for i, node in enumerate(nodes):
        if not isinstance(node, dict):
            raise InputError(f"nodes[{i}] is not an object", source=where)
        if ID not in node:
            raise InputError(f"nodes[{i}] has no '{ID}'", source=where)
        check_rle(node.get(RLE), f"{where} nodes[{i}]")
    return rec


def is_image_record(obj: Any) -> bool:
    return isinstance(obj, dict) and NODES in obj and IMAGE_ID in obj


def is_region_record(obj: Any) -> bool:
    return isinstance(obj, dict) and ID in obj and NODES not in obj and (CAPTION in obj or RLE in obj)


def node_index(rec: dict) -> dict[Any, dict]:
    """Nodes of an image record by id."""
    return {n[ID]: n for n in rec[NODES]}


def captioned_nodes(rec: dict) -> Iterator[dict]:
    """Nodes that hold a caption (those annotate or refine captioned), in record order."""
    for node in rec[NODES]:
        if isinstance(node.get(CAPTION), str) and node[CAPTION].strip():
            yield node


def to_region_record(rec: dict, node: dict, **extra: Any) -> dict:
    """The region record (``id``, ``image_id``, ``image``, ``rle``, ``caption``, ...) of one node."""
    out = {
        ID: region_id(rec[IMAGE_ID], node[ID]),
        IMAGE_ID: rec[IMAGE_ID],
        IMAGE: rec[IMAGE],
        WIDTH: rec.get(WIDTH),
        HEIGHT: rec.get(HEIGHT),
        RLE: node[RLE],
        BBOX: node.get(BBOX),
    }
    if CAPTION in node:
        out[CAPTION] = node[CAPTION]
    out.update(extra)
    return out


def flatten(rec: dict, *, captioned_only: bool = True) -> Iterator[dict]:
    """Region records for the nodes of an image record (only captioned ones by default)."""
    nodes = captioned_nodes(rec) if captioned_only else iter(rec[NODES])
    for node in nodes:
        yield to_region_record(rec, node)
