"""Readers for `ureca score`: captions by id from the formats region-captioning work already uses.

Every reader returns ``{id: Entry}``, in file order, where an ``Entry`` holds the captions of one region (one
for a prediction, one or more for references), the image it belongs to when the file says so, and where it
was read (for messages). Formats, detected from the content or named with ``--format``:

- ``regions``: region records, JSONL (or a JSON array), ``{"id", "caption"}`` or ``{"id", "captions": [...]}``,
  usually with ``image_id`` (``ureca caption`` writes these);
- ``images``: image records from ``ureca annotate`` / ``ureca refine`` (JSONL), flattened to one region per
  captioned node with ``records.flatten``; ids are ``"<image_id>/<node id>"``;
- ``coco``: COCO caption annotations (``{"annotations": [{"image_id", "caption"}, ...]}``) or COCO results
  (``[{"image_id", "caption"}, ...]``); the id is ``str(image_id)``. Osprey's RefCOCOg script writes the same
  list with one region per ``image_id`` (``osprey`` is an alias);
- ``dam``: Describe Anything's ``{id: caption}`` (or ``{id: [captions]}`` for references).

Grouping for the uniqueness figures: a region belongs to the ``image_id`` its record carries (region and
image records); where a format has none (COCO, Osprey, DAM), to the part of its id before the last ``/``,
or to itself when the id has no ``/`` (then no image has two regions and uniqueness is not measured).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .. import records as R
from ..errors import InputError, UrecaError

FORMATS = ("auto", "regions", "images", "coco", "osprey", "dam")


@dataclass
class Entry:
    """The captions of one region: ``captions`` (non-empty strings), ``image_id`` or None, ``where``."""

    captions: list[str]
    image_id: str | None
    where: str
    extra_where: list[str] = field(default_factory=list)


def group_of(region_id: str, image_id: str | None) -> str:
    """The image a region is grouped under for uniqueness: its ``image_id``, else the id before the last "/"."""
    if image_id is not None:
        return image_id
    return region_id.rsplit("/", 1)[0] if "/" in region_id else region_id


def _read_bytes(path: str | Path) -> tuple[bytes, str]:
    from ..stream import open_binary

    name = "<stdin>" if str(path) == "-" else str(Path(path))
    fh = open_binary(path, "a JSON or JSONL file of captions")
    try:
        return fh.read(), name
    except OSError as e:
        raise UrecaError(f"{name}: cannot read ({e.strerror})") from None
    finally:
        if str(path) != "-":
            fh.close()


def _id_text(value: Any, what: str, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InputError(f"field '{what}' should be a string or an integer, got {type(value).__name__}", source=where)
    return str(value)


def _caption_list(obj: dict, where: str) -> list[str]:
    """The captions of one record: ``caption`` (a string) or ``captions`` (a list of strings)."""
    if R.CAPTION in obj and obj[R.CAPTION] is not None:
        caps, field_name = [obj[R.CAPTION]], R.CAPTION
    elif R.CAPTIONS in obj:
        caps, field_name = obj[R.CAPTIONS], R.CAPTIONS
        if not isinstance(caps, list) or not caps:
            raise InputError(f"field '{R.CAPTIONS}' should be a non-empty list of strings", source=where)
    else:
        raise InputError(f"no '{R.CAPTION}' (or '{R.CAPTIONS}') field", source=where)
    for i, c in enumerate(caps):
        name = field_name if field_name == R.CAPTION else f"{field_name}[{i}]"
        if not isinstance(c, str):
            raise InputError(f"field '{name}' should be a string, got {type(c).__name__}", source=where)
        if not c.strip():
            raise InputError(f"field '{name}' is empty", source=where)
    return list(caps)


class _Collector:
    """Gathers entries by id; references may repeat an id (more references), predictions may not."""

    def __init__(self, role: str):
        self.role = role
        self.out: dict[str, Entry] = {}

    def add(self, rid: str, caps: list[str], image_id: str | None, where: str) -> None:
        old = self.out.get(rid)
        if old is None:
            self.out[rid] = Entry(caps, image_id, where)
            return
        if self.role == "predictions":
            raise InputError(f"id {rid!r} appears twice (first at {old.where}); a prediction needs one caption",
                             source=where)
        old.captions.extend(caps)
        old.extra_where.append(where)


def _jsonl(data: bytes, name: str) -> list[tuple[Any, str]]:
    out = []
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((orjson.loads(line), f"{name}:{lineno}"))
        except orjson.JSONDecodeError as e:
            raise InputError(f"not valid JSON ({e})", source=name, line=lineno) from None
    return out


def _region_items(items: list[tuple[Any, str]], col: _Collector) -> None:
    for obj, where in items:
        if not isinstance(obj, dict):
            raise InputError(f"expected a JSON object (a region record), got {type(obj).__name__}", source=where)
        if R.ID in obj:
            rid = _id_text(obj[R.ID], R.ID, where)
        elif R.IMAGE_ID in obj:  # a results line: the image id is the region id
            rid = _id_text(obj[R.IMAGE_ID], R.IMAGE_ID, where)
        else:
            raise InputError(f"missing field '{R.ID}'", source=where)
        image_id = _id_text(obj[R.IMAGE_ID], R.IMAGE_ID, where) if obj.get(R.IMAGE_ID) is not None else None
        col.add(rid, _caption_list(obj, where), image_id, where)


def _image_items(items: list[tuple[Any, str]], col: _Collector) -> None:
    for obj, where in items:
        rec = R.check_image_record(obj, where)
        for region in R.flatten(rec):
            rid = region[R.ID]
            col.add(rid, _caption_list(region, f"{where} region {rid}"), rec[R.IMAGE_ID], where)
        for node in rec[R.NODES]:
            rid = R.region_id(rec[R.IMAGE_ID], node[R.ID])
            if node.get(R.CAPTION) is not None:  # flatten skips empty or non-string captions: say so instead
                _caption_list({R.CAPTION: node[R.CAPTION]}, f"{where} region {rid}")
            elif node.get(R.CAPTIONS) is not None:  # references may give several captions per node
                col.add(rid, _caption_list(node, f"{where} region {rid}"), rec[R.IMAGE_ID], where)


def _coco_items(doc: Any, name: str, col: _Collector) -> None:
    if isinstance(doc, dict):
        anns = doc.get("annotations")
        if not isinstance(anns, list):
            raise InputError("a COCO caption file needs an 'annotations' list", source=name)
    elif isinstance(doc, list):
        anns = doc
    else:
        raise InputError(f"expected COCO annotations or results, got {type(doc).__name__}", source=name)
    for i, ann in enumerate(anns):
        where = f"{name}: [{i}]" if isinstance(doc, list) else f"{name}: annotations[{i}]"
        if not isinstance(ann, dict):
            raise InputError(f"expected an object with 'image_id' and 'caption', got {type(ann).__name__}",
                             source=where)
        if R.IMAGE_ID not in ann:
            raise InputError(f"missing field '{R.IMAGE_ID}'", source=where)
        rid = _id_text(ann[R.IMAGE_ID], R.IMAGE_ID, where)
        col.add(rid, _caption_list(ann, where), None, where)


def _dam_items(doc: dict, name: str, col: _Collector) -> None:
    for key, value in doc.items():
        where = f"{name}: key {key!r}"
        caps = value if isinstance(value, list) else [value]
        col.add(str(key), _caption_list({R.CAPTIONS: caps}, where), None, where)


def _looks_dam(doc: dict) -> bool:
    return bool(doc) and all(
        isinstance(v, str) or (isinstance(v, list) and all(isinstance(c, str) for c in v)) for v in doc.values()
    )


def _detect(data: bytes, name: str) -> tuple[str, Any]:
    """(format, parsed document or JSONL items) for ``data``; raises InputError for an unknown format."""
    head = data.lstrip()[:1]
    unknown = ("not a caption file in a known format (region or image records as JSONL, COCO annotations or "
               "results, Osprey's list, Describe Anything's {id: caption}); name one with --format")
    if head not in (b"[", b"{"):
        raise InputError(unknown if data.strip() else "is empty", source=name)
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        doc = None
    if doc is None:  # JSONL: the first record decides
        items = _jsonl(data, name)
        first = items[0][0] if items else None
        if R.is_image_record(first):
            return "images", items
        if isinstance(first, dict) and (R.ID in first or R.IMAGE_ID in first):
            return "regions", items
        raise InputError(unknown, source=name)
    if isinstance(doc, list):
        first = doc[0] if doc else None
        if isinstance(first, dict) and R.ID in first:
            return "regions", [(o, f"{name}: [{i}]") for i, o in enumerate(doc)]
        if isinstance(first, dict) and R.IMAGE_ID in first:
            return "coco", doc
        raise InputError(unknown if doc else "holds an empty list", source=name)
    if isinstance(doc, dict):
        if "annotations" in doc:
            return "coco", doc
        if R.is_image_record(doc):
            return "images", [(doc, f"{name}:1")]
        if R.ID in doc or R.IMAGE_ID in doc:  # one region record (a one-line JSONL file)
            return "regions", [(doc, f"{name}:1")]
        if _looks_dam(doc):
            return "dam", doc
    raise InputError(unknown, source=name)


def read_captions(path: str | Path, role: str = "references", fmt: str = "auto") -> dict[str, Entry]:
    """Captions by id from one file (``-`` for stdin); ``role`` is ``"predictions"`` or ``"references"``.

    Predictions need exactly one caption per id; references may have several (repeated ids add captions).
    Raises ``InputError`` naming the file, line or key for anything malformed.
    """
    if fmt not in FORMATS:
        raise UrecaError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    data, name = _read_bytes(path)
    col = _Collector(role)
    if fmt == "auto":
        fmt, parsed = _detect(data, name)
    elif fmt in ("regions", "images"):
        stripped = data.lstrip()
        if stripped[:1] == b"[":
            try:
                doc = orjson.loads(data)
            except orjson.JSONDecodeError as e:
                raise InputError(f"not valid JSON ({e})", source=name) from None
            parsed = [(o, f"{name}: [{i}]") for i, o in enumerate(doc)]
        else:
            parsed = _jsonl(data, name)
    else:
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise InputError(f"not valid JSON ({e}); --format {fmt} reads one JSON document", source=name) from None
    if fmt == "regions":
        _region_items(parsed, col)
    elif fmt == "images":
        _image_items(parsed, col)
    elif fmt in ("coco", "osprey"):
        _coco_items(parsed, name, col)
    else:
        if not isinstance(parsed, dict):
            raise InputError(f"--format dam expects a JSON object {{id: caption}}, got {type(parsed).__name__}",
                             source=name)
        _dam_items(parsed, name, col)
    if not col.out:
        hint = ""
        if fmt == "images":
            hint = (": its image records have no captioned node (tree records? caption them first with ureca "
                    "annotate, or ureca caption --input)")
        raise InputError(f"holds no {role}{hint}", source=name)
    if role == "predictions":
        for rid, e in col.out.items():
            if len(e.captions) != 1:
                raise InputError(f"id {rid!r} has {len(e.captions)} captions; a prediction needs one",
                                 source=e.where)
    return col.out


@dataclass
class Matched:
    """Predictions and references aligned by id, in the predictions' order."""

    ids: list[str]
    predictions: list[str]
    references: list[list[str]]
    groups: list[str]  # the image each region is grouped under for uniqueness
    left_out_predictions: int = 0
    left_out_references: int = 0


def _examples(ids: list[str], k: int = 3) -> str:
    shown = ", ".join(repr(i) for i in ids[:k])
    return shown + (", ..." if len(ids) > k else "")


def match(preds: dict[str, Entry], refs: dict[str, Entry], *, allow_missing: bool = False) -> Matched:
    """Align predictions with references by id; ids on one side only are an error unless ``allow_missing``."""
    only_p = [i for i in preds if i not in refs]
    only_r = [i for i in refs if i not in preds]
    both = [i for i in preds if i in refs]
    if (only_p or only_r) and not allow_missing:
        parts = []
        if only_p:
            parts.append(f"{len(only_p)} prediction id(s) have no reference (e.g. {_examples(only_p)})")
        if only_r:
            parts.append(f"{len(only_r)} reference id(s) have no prediction (e.g. {_examples(only_r)})")
        raise UrecaError("; ".join(parts) + f"; pass --allow-missing to score the {len(both)} ids on both sides")
    if not both:
        raise UrecaError("predictions and references share no id: nothing to score "
                         f"(predictions e.g. {_examples(list(preds))}; references e.g. {_examples(list(refs))})")
    groups = []
    for i in both:
        image_id = refs[i].image_id if refs[i].image_id is not None else preds[i].image_id
        groups.append(group_of(i, image_id))
    return Matched(
        ids=both,
        predictions=[preds[i].captions[0] for i in both],
        references=[list(refs[i].captions) for i in both],
        groups=groups,
        left_out_predictions=len(only_p),
        left_out_references=len(only_r),
    )
