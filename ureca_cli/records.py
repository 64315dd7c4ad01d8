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
captioning ``image`` and ``rle``, scoring the captions (``need=``). The optional fields a node or a region
record may carry have one type rule too (``check_fields``): ``parent`` a node id or null, ``children`` a list
of node ids, ``depth`` an integer, ``area`` a number, ``bbox`` four numbers, ``role`` a string.

Image ids, one rule for every stage (``image_id_for``): the ``image_id`` the mask file gives (SA-1B's
``image.image_id``), else the image's file stem with SA-1B's ``sa_`` prefix dropped when the rest is a whole
number (``sa_900003.jpg`` -> ``"900003"``, which is what SA-1B's JSON says for that photo), else the stem. So
``ureca tree sa_900003.json``, ``ureca caption sa_900003.jpg --mask m.png`` and the released dataset's lines
for ``sa_900003`` all name the image ``900003``, and their region ids (``"900003/<node>"``) meet in ``score``.
File and folder names made from ids (``--render``, ``--save-prompts``) all come from ``file_name``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
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


# ------------------------------------------------------------------------------------------------ image ids
def image_id_from_stem(stem: str) -> str:
    """The image id of an image known only by its file name: the stem, with SA-1B's ``sa_`` prefix dropped when
    the rest is a whole number (``sa_900003.jpg`` -> ``"900003"``, the ``image_id`` SA-1B's own JSON gives that
    photo); any other stem as it is (``photo.jpg`` -> ``"photo"``, ``sa_x1.jpg`` -> ``"sa_x1"``)."""
    rest = stem[3:] if stem.startswith("sa_") else ""
    return rest if rest.isascii() and rest.isdigit() else stem


def image_id_for(given: Any, path: str | Path, where: str = "", field: str = IMAGE_ID) -> str:
    """The one rule for an image's id, used by every stage that names an image: ``given`` (the id a mask file
    holds, such as SA-1B's ``image.image_id``: a non-empty string or an integer, read as a string) where there is
    one, else ``image_id_from_stem`` of ``path``'s stem (the image file, or the mask file named after it; for a
    reference into a tar shard, its member's stem: ``images.image_stem``). A ``given`` of another type is an
    ``InputError`` naming ``field`` (and ``where``)."""
    if given is None:
        from .images import image_stem

        return image_id_from_stem(image_stem(path))
    return id_text(given, field, where)


# ------------------------------------------------------------------------------------------ names of files
_NAME_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
_NAME_MAX = 200  # bytes; file systems allow 255, and callers add suffixes such as "_verify_crop.png"


def file_name(value: Any) -> str:
    """A file or folder name made from an id (an image id, a node id): the one helper for every name the stages
    write from an id (``tree --render``, ``--save-prompts``).

    ASCII letters, digits, ``-`` and ``_`` are kept, and ``.`` where it is not the first character; every other
    byte of the id's UTF-8 text is written ``%XX`` (``a/b`` -> ``a%2Fb``, ``../x`` -> ``%2E.%2Fx``). So a name
    never holds a path separator, is never ``.``, ``..`` or hidden, and distinct ids give distinct names; the
    empty id is ``%`` (which no other id gives). An id whose name would pass 200 bytes is cut and ends in ``~``
    and 16 hex digits of its SHA-256."""
    text = str(value)
    out = []
    for i, byte in enumerate(text.encode("utf-8", "surrogatepass")):
        ch = chr(byte)
        out.append(ch if ch in _NAME_SAFE or (ch == "." and i > 0) else f"%{byte:02X}")
    name = "".join(out) or "%"
    if len(name) > _NAME_MAX:
        import hashlib

        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        cut = name[: _NAME_MAX - 17]
        pct = cut.find("%", len(cut) - 2)  # never cut a %XX in two
        name = (cut if pct < 0 else cut[:pct]) + "~" + digest
    return name


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
        check_fields(node, where, f"nodes[{i}].")
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


def check_captions(obj: dict, where: str) -> list[str] | None:
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


def id_text(value: Any, field: str, where: str) -> str:
    """An id field's value as a string: a non-empty string or an integer, else an ``InputError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InputError(f"field '{field}' should be a string or an integer, got {type_name(value)}", source=where)
    if value == "":
        raise InputError(f"field '{field}' should be a non-empty string or an integer, got an empty string",
                         source=where)
    return str(value)


def type_name(value: Any) -> str:
    """How a message names a JSON value's type: ``list``, ``object``, ``string``, ``number``, ``boolean``."""
    if value is None:
        return "null"
    if isinstance(value, str) and not value:
        return "an empty string"
    names = {bool: "boolean", dict: "object", list: "list", str: "string", int: "number", float: "number"}
    return names.get(type(value), type(value).__name__)


def _is_id(value: Any) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool) and value != ""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


#: the optional fields of a node (and of a region record) and the type each must have where it is there
_FIELD_TYPES: dict[str, tuple[str, Any]] = {
    PARENT: ("a string or an integer (a node id; null for a child of the root)", _is_id),
    CHILDREN: ("a list of node ids (strings or integers)", lambda v: isinstance(v, list) and all(map(_is_id, v))),
    DEPTH: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    AREA: ("a number", _is_number),
    BBOX: ("a list of 4 numbers (x, y, w, h)", lambda v: isinstance(v, list) and len(v) == 4 and all(map(_is_number, v))),
    ROLE: ("a string", lambda v: isinstance(v, str)),
}


def check_fields(obj: dict, where: str, prefix: str = "") -> None:
    """The one type rule for the fields of a node or region record: ``id`` a non-empty string or an integer,
    and where they are there and not null ``parent``, ``children``, ``depth``, ``area``, ``bbox``, ``role`` of
    their types (``_FIELD_TYPES``); an ``InputError`` names the field (``prefix`` + name) and the type expected."""
    if ID in obj and not _is_id(obj[ID]):
        raise InputError(f"field '{prefix}{ID}' should be a non-empty string or an integer, got "
                         f"{type_name(obj[ID])}", source=where)
    for name, (expected, ok) in _FIELD_TYPES.items():
        if obj.get(name) is not None and not ok(obj[name]):  # null: not there
            raise InputError(f"field '{prefix}{name}' should be {expected}, got {type_name(obj[name])}",
                             source=where)


def check_region_record(rec: Any, where: str, need: tuple[str, ...] = ()) -> dict:
    """Check a region record under the module's rules; ``need`` names the fields this reader cannot do without
    (``IMAGE``, ``RLE``, ``CAPTION`` for a caption or captions). Returns the record with ``id`` (and
    ``image_id``) as strings; ``InputError`` naming ``where`` and the field otherwise."""
    if not isinstance(rec, dict):
        raise InputError(f"expected a JSON object (a region record), got {type(rec).__name__}", source=where)
    check_schema(rec, where)
    if rec.get(ID) is None:
        raise InputError(f"region record without an id (field '{ID}')", source=where)
    rec[ID] = id_text(rec[ID], ID, where)
    if rec.get(IMAGE_ID) is not None:
        rec[IMAGE_ID] = id_text(rec[IMAGE_ID], IMAGE_ID, where)
    check_fields(rec, where)
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
