"""Record types every stage reads and writes: image records, their nodes, and region records.

Records travel as plain dicts (one JSON object per line), so that every field a stage wrote is kept by
the stages after it. This module names the fields once, checks records at the boundary, and converts
between the image form (``tree -> annotate -> refine``) and the region form (``train``, ``caption``,
``score``); ``ureca_cli.datasets`` reads files of either form (and other datasets) into region records.

Frames and formats:
- ``bbox``: XYWH in pixels, SA-1B convention (the file's own box, one pixel narrower and shorter than
  ``pycocotools.mask.toBbox``).
- ``rle``: COCO compressed RLE, ``{"size": [H, W], "counts": str}``, column-major as pycocotools writes it.

The region record, one set of rules for every stage (``check_region_record``; a field a stage does not need
is still checked when it is there):
- ``id``: a string or an integer (read as a string), not empty; ``"<image_id>/<node id>"`` for our regions;
- ``image``: the image file's path (a non-empty string);
- ``rle``: the region's mask, a COCO RLE of the image's size;
- ``caption``: a non-empty string; or ``captions``: a non-empty list of non-empty strings (several references;
  training uses the first);
- ``image_id``: a string or an integer (read as a string). Where it is missing, a region belongs to its image
  file (``image``, as the reader resolved it), and with no image either to the part of its id before the last
  "/" (the id itself when it has none): ``image_key``;
- ``schema``: the version of this contract the writer followed (``SCHEMA_VERSION``); a record from a newer
  major version is refused (``check_schema``), one written without one is read as this version.
Which of ``image``, ``rle`` and the captions must be there depends on the reader: training needs all three,
captioning ``image`` and ``rle``, scoring the captions (``need=``).
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
# how a record was made: a block per stage (settings, model, backend, prompt version), carried into regions
TREE = "tree"
ANNOTATE = "annotate"
REFINE = "refine"
PROVENANCE = (TREE, ANNOTATE, REFINE)
QUESTION = "question"  # a region's question to the model, where a dataset gives one

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


def check_schema(rec: dict, where: str) -> None:
    """Refuse a record written under a newer major version of the record contract than ``SCHEMA_VERSION``
    (``schema``: a number such as ``1``, or a string such as ``"1.2"``); no ``schema`` reads as this version."""
    value = rec.get(SCHEMA)
    if value is None:
        return
    try:
        major = int(str(value).split(".")[0]) if not isinstance(value, bool) else None
    except ValueError:
        major = None
    if major is None:
        raise InputError(f"field '{SCHEMA}' should be a version number, got {value!r}", source=where)
    if major > SCHEMA_VERSION:
        raise InputError(f"schema {value}: written by a newer ureca (this one reads schema {SCHEMA_VERSION} and "
                         f"older); upgrade ureca to read it", source=where)


def check_image_record(rec: Any, where: str, *, need_nodes: bool = True) -> dict:
    """Check the fields every stage relies on in an image record; return the record unchanged.

    ``where`` names the record in messages, such as ``"trees.jsonl:12"``.
    """
    if not isinstance(rec, dict):
        raise InputError(f"expected a JSON object (an image record), got {type(rec).__name__}", source=where)
    check_schema(rec, where)
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
    check_node_ids(rec, where)
    return rec


def check_node_ids(rec: dict, where: str) -> None:
    """Refuse two nodes of an image record whose ids give one region id (``1`` and ``"1"``, or an id twice):
    their region records could not be told apart, nor matched with references, nor resumed."""
    seen: dict[str, int] = {}
    nodes = rec[NODES]
    for i, node in enumerate(nodes):
        first = seen.setdefault(str(node[ID]), i)
        if first != i:
            raise InputError(f"nodes[{i}]: id {node[ID]!r} gives the region id "
                             f"{region_id(rec[IMAGE_ID], node[ID])!r} of nodes[{first}] (id {nodes[first][ID]!r})",
                             source=where)


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


def check_captions(obj: dict, where: str, what: str = "region record") -> list[str] | None:
    """The captions of a record or node: ``caption`` (a non-empty string) or ``captions`` (a non-empty list of
    non-empty strings); ``None`` when it has neither. Anything else is an ``InputError`` naming the field."""
    if obj.get(CAPTION) is not None:
        caps, name = [obj[CAPTION]], CAPTION
    elif obj.get(CAPTIONS) is not None:
        caps, name = obj[CAPTIONS], CAPTIONS
        if not isinstance(caps, list) or not caps:
            raise InputError(f"field '{CAPTIONS}' should be a non-empty list of strings", source=where)
    else:
        return None
    for i, c in enumerate(caps):
        field = name if name == CAPTION else f"{name}[{i}]"
        if not isinstance(c, str):
            raise InputError(f"field '{field}' should be a string, got {type(c).__name__}", source=where)
        if not c.strip():
            raise InputError(f"field '{field}' is empty", source=where)
    return list(caps)


def _id_text(value: Any, field: str, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise InputError(f"field '{field}' should be a non-empty string or an integer, got {value!r}", source=where)
    return str(value)


def check_region_record(rec: Any, where: str, need: tuple[str, ...] = ()) -> dict:
    """Check a region record under the module's rules; ``need`` names the fields this reader cannot do without
    (``IMAGE``, ``RLE``, ``CAPTION`` for a caption or captions). Returns the record with ``id`` (and
    ``image_id``) as strings; ``InputError`` naming ``where`` and the field otherwise."""
    if not isinstance(rec, dict):
        raise InputError(f"expected a JSON object (a region record), got {type(rec).__name__}", source=where)
    check_schema(rec, where)
    if rec.get(ID) is None:
        raise InputError(f"region record without an id (field '{ID}')", source=where)
    rec[ID] = _id_text(rec[ID], ID, where)
    if rec.get(IMAGE_ID) is not None:
        rec[IMAGE_ID] = _id_text(rec[IMAGE_ID], IMAGE_ID, where)
    if rec.get(IMAGE) is not None:
        if not isinstance(rec[IMAGE], str) or not rec[IMAGE]:
            raise InputError(f"field '{IMAGE}' should be the image file's path, got {rec[IMAGE]!r}", source=where)
    elif IMAGE in need:
        raise InputError(f"region record without an image (field '{IMAGE}')", source=where)
    if rec.get(RLE) is not None:
        check_rle(rec[RLE], where)
    elif RLE in need:
        raise InputError(f"region record without a mask (field '{RLE}')", source=where)
    if check_captions(rec, where) is None and CAPTION in need:
        raise InputError(f"region record without a caption: no '{CAPTION}' (or '{CAPTIONS}') field", source=where)
    return rec


def captions_of(rec: dict) -> list[str]:
    """A checked region record's captions (``caption``, or the list ``captions``); empty when it has none."""
    if rec.get(CAPTION) is not None:
        return [rec[CAPTION]]
    return list(rec.get(CAPTIONS) or [])


def image_key(rec: dict, image: str | None = None) -> str:
    """The image a region record belongs to (the validation split, uniqueness per image and caption's grouping
    all key on it): its ``image_id``; else its image file (``image``: the file as the reader resolved it, else
    the record's ``image``); else the part of its ``id`` before the last "/" (the id itself when it has none)."""
    if rec.get(IMAGE_ID) not in (None, ""):
        return str(rec[IMAGE_ID])
    if image or rec.get(IMAGE):
        return str(image or rec[IMAGE])
    rid = str(rec.get(ID, ""))
    return rid.rsplit("/", 1)[0] if "/" in rid else rid


def to_region_record(rec: dict, node: dict, *, provenance: bool = False, **extra: Any) -> dict:
    """The region record of one node of an image record: ``id``, ``image_id``, ``image``, ``width``,
    ``height``, ``rle``, ``bbox``, the node's ``caption`` or ``captions``, ``role``, ``depth``, ``parent`` and
    ``verified`` where it has them, ``schema``; with ``provenance``, the record's ``tree``/``annotate``/``refine``
    blocks (how the captions were made). ``extra`` fields are added last."""
    out = {
        SCHEMA: SCHEMA_VERSION,
        ID: region_id(rec[IMAGE_ID], node[ID]),
        IMAGE_ID: rec[IMAGE_ID],
        IMAGE: rec[IMAGE],
        WIDTH: rec.get(WIDTH),
        HEIGHT: rec.get(HEIGHT),
        RLE: node[RLE],
        BBOX: node.get(BBOX),
    }
    for key in (CAPTION, CAPTIONS, ROLE, DEPTH, PARENT, VERIFIED):
        if key in node:
            out[key] = node[key]
    if provenance:
        out.update({key: rec[key] for key in PROVENANCE if key in rec})
    out.update(extra)
    return out


def flatten(rec: dict, *, captioned_only: bool = True, provenance: bool = False) -> Iterator[dict]:
    """Region records for the nodes of an image record (only captioned ones by default: ``captioned_nodes``)."""
    nodes = captioned_nodes(rec) if captioned_only else iter(rec[NODES])
    for node in nodes:
        yield to_region_record(rec, node, provenance=provenance)


def region_records(rec: Any, where: str, *, captioned_only: bool = True) -> list[dict]:
    """The region records of a checked image record's nodes, in node order: those with captions (a node's
    ``caption`` or ``captions`` follow the region rule; a malformed one is an error, not a skip), or all."""
    check_image_record(rec, where)
    out = []
    for node in rec[NODES]:
        rid = region_id(rec[IMAGE_ID], node[ID])
        if check_captions(node, f"{where} region {rid}") is not None or not captioned_only:
            out.append(to_region_record(rec, node))
    return out
