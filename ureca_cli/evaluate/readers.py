"""Readers for `ureca score`: captions by id from the formats region-captioning work already uses.

Every reader returns ``{id: Entry}``, in file order, where an ``Entry`` holds the captions of one region (one
for a prediction, one or more for references), the image it belongs to when the file says so, and where it
was read (for messages). Formats, detected from the content or named with ``--format``:

- the region-record formats of ``ureca_cli.datasets`` (``records``: our region records, JSONL or a JSON array,
  ``{"id", "caption"}`` or ``{"id", "captions": [...]}``, and image records from ``ureca annotate`` / ``ureca
  refine``, one region per captioned node, ids ``"<image_id>/<node id>"``; ``internvl``: the released dataset's
  chat JSONL; ``refcocog`` and ``vg``: the benchmarks' JSON files); ``regions`` and ``images`` name ``records``.
  A benchmark's region also answers to the id its own result files use (``benchmark_id``: the COCO
  ``image_id`` of a results file, Osprey's annotation id), so COCO results written by other tools match it;
- ``coco``: COCO caption annotations (``{"annotations": [{"image_id", "caption"}, ...]}``) or COCO results
  (``[{"image_id", "caption"}, ...]``, also as JSONL); the id is ``str(image_id)``. Osprey's RefCOCOg script
  writes the same list with one region per ``image_id`` (``osprey`` is an alias);
- ``dam``: Describe Anything's ``{id: caption}`` (or ``{id: [captions]}`` for references).

Grouping for the uniqueness figures: a region belongs to its image (``records.image_key``: the ``image_id``
its record carries, else its image file); where a format has neither (COCO, Osprey, DAM), to the part of its
id before the last ``/``, or to itself when the id has no ``/`` (then no image has two regions and uniqueness
is not measured).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson

from .. import records as R
from ..datasets import (
    BENCHMARK_ID,
    READERS,
    ReadOptions,
    detect,
    read_document,
    read_items,
    reader,
    refuse_pickle,
)
from ..errors import InputError, UrecaError
from ..stream import Item, jsonl_items

ALIASES = {"regions": "records", "images": "records"}  # score's names for our record formats
CAPTION_FORMATS = ("coco", "osprey", "dam")  # caption-only formats of whole JSON documents, read here
FORMATS = ("auto", *READERS, *ALIASES, *CAPTION_FORMATS)

#: The ``--format`` choice of ``ureca score``.
ScoreFormat = StrEnum("ScoreFormat", {name: name for name in FORMATS})


@dataclass
class Entry:
    """The captions of one region: ``captions`` (non-empty strings), ``image_id`` or None, ``where``."""

    captions: list[str]
    image_id: str | None
    where: str
    extra_where: list[str] = field(default_factory=list)
    alias: str | None = None  # the id the benchmark's own result files name this region by (references)


def group_of(region_id: str, image_id: str | None) -> str:
    """The image a region is grouped under for uniqueness: its image (``image_id``), else the id before the last
    "/" (``records.image_key``)."""
    return R.image_key({R.ID: region_id, R.IMAGE_ID: image_id})


def _caption_list(obj: dict, where: str) -> list[str]:
    """The captions of one caption-format entry, under the region record's caption rules."""
    caps = R.check_captions(obj, where)
    if caps is None:
        raise InputError(f"no '{R.CAPTION}' (or '{R.CAPTIONS}') field", source=where)
    return caps


def _read_bytes(path: str | Path) -> tuple[bytes, str]:
    from ..stream import open_binary

    name = "<stdin>" if str(path) == "-" else str(Path(path))
    fh = open_binary(path, "a JSON or JSONL file of captions")
    try:
        data = fh.read()
        refuse_pickle(data[:4], name)
        return data, name
    except OSError as e:
        raise UrecaError(f"{name}: cannot read ({e.strerror})") from None
    finally:
        if str(path) != "-":
            fh.close()


class _Collector:
    """Gathers entries by id; references may repeat an id (more references), predictions may not."""

    def __init__(self, role: str):
        self.role = role
        self.out: dict[str, Entry] = {}

    def add(self, rid: str, caps: list[str], image_id: str | None, where: str, alias: str | None = None) -> None:
        old = self.out.get(rid)
        if old is None:
            self.out[rid] = Entry(caps, image_id, where, alias=alias)
            return
        if self.role == "predictions":
            raise InputError(f"id {rid!r} appears twice (first at {old.where}); a prediction needs one caption",
                             source=where)
        old.captions.extend(caps)
        old.extra_where.append(where)


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
        rid = R.id_text(ann[R.IMAGE_ID], R.IMAGE_ID, where)
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


def _array_items(doc: list, name: str) -> list[Item]:
    return [Item(o, f"{name}: [{i}]", b"") for i, o in enumerate(doc)]


def _record_items(data: bytes, name: str) -> list[Item]:
    """The records of a file in a region-record format: a JSON array of them, or JSONL."""
    if data.lstrip()[:1] == b"[":
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise InputError(f"not valid JSON ({e})", source=name) from None
        return _array_items(doc, name)
    return list(jsonl_items(data.splitlines(), name))


def _detect(data: bytes, name: str) -> tuple[str, Any]:
    """(format, parsed document or record items) for ``data``; raises InputError for an unknown format."""
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
        items = list(jsonl_items(data.splitlines(), name))
        if items and items[0].error is not None:
            raise items[0].error
        first = items[0].value if items else None
        fmt = detect(first)
        if fmt is not None and fmt != "records":  # the released URECA JSONL has an "id" too
            return fmt, items
        if isinstance(first, dict) and (R.is_image_record(first) or R.ID in first or R.IMAGE_ID in first):
            return "records", items  # region or image records, or COCO results one a line
        if fmt is None:
            raise InputError(unknown, source=name)
        return fmt, items
    bench = detect(doc, "document") if isinstance(doc, dict | list) else None
    if bench is not None:
        return bench, doc
    if isinstance(doc, list):
        first = doc[0] if doc else None
        if isinstance(first, dict) and R.ID in first:
            return "records", _array_items(doc, name)
        if isinstance(first, dict) and R.IMAGE_ID in first:
            return "coco", doc
        raise InputError(unknown if doc else "holds an empty list", source=name)
    if isinstance(doc, dict):
        if "annotations" in doc:
            return "coco", doc
        if R.is_image_record(doc) or R.ID in doc:  # one record (a one-line JSONL file)
            return "records", [Item(doc, f"{name}:1", b"")]
        if R.IMAGE_ID in doc:  # one COCO result
            return "coco", [doc]
        if _looks_dam(doc):
            return "dam", doc
    raise InputError(unknown, source=name)


CAPTIONS_ONLY = ReadOptions(need=(R.CAPTION,), captioned_only=True)  # what score asks the datasets readers for


def _region_items(units: Any, col: _Collector) -> None:
    """Entries of the region records a ``datasets`` reader yields (``units``): captions needed, nothing else."""
    for unit in units:
        if unit.error is not None:
            raise unit.error
        for region in unit.value:
            caps = R.captions_of(region)
            if not caps:
                raise InputError(f"region {region[R.ID]} has no caption to score against", source=unit.where)
            has_image = region.get(R.IMAGE_ID) is not None or bool(region.get(R.IMAGE))
            alias = region.get(BENCHMARK_ID)
            col.add(region[R.ID], caps, R.image_key(region) if has_image else None, unit.where,
                    None if alias is None else str(alias))


def read_captions(path: str | Path, role: str = "references", fmt: str = "auto") -> dict[str, Entry]:
    """Captions by id from one file (``-`` for stdin); ``role`` is ``"predictions"`` or ``"references"``.

    Predictions need exactly one caption per id; references may have several (repeated ids add captions).
    Raises ``InputError`` naming the file, line or key for anything malformed.
    """
    if fmt not in FORMATS:
        raise UrecaError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    col = _Collector(role)
    if str(path) != "-" and Path(path).is_dir():  # a benchmark's folder
        from ..datasets import read

        _region_items(read(path, fmt if fmt in READERS else "auto", CAPTIONS_ONLY), col)
        if not col.out:
            raise InputError(f"holds no {role}", source=str(path))
        return col.out
    data, name = _read_bytes(path)
    named = fmt
    if fmt == "auto":
        fmt, parsed = _detect(data, name)
    elif fmt in CAPTION_FORMATS or reader(ALIASES.get(fmt, fmt)).kind == "document":
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise InputError(f"not valid JSON ({e}); --format {fmt} reads one JSON document", source=name) from None
    elif reader(ALIASES.get(fmt, fmt)).kind == "folder":
        raise InputError(f"--format {fmt} reads a benchmark folder, not a file", source=name)
    else:
        fmt = ALIASES.get(fmt, fmt)
        parsed = _record_items(data, name)
    records_in: list[Any] = []
    if fmt in READERS and reader(fmt).kind == "document":
        _region_items(read_document(parsed, name, fmt, CAPTIONS_ONLY), col)
    elif fmt in READERS:
        records_in = [it.value if it.error is None else None for it in parsed]
        if fmt == "records":  # a COCO results line among region records: the image id is the region id
            for it in parsed:
                if isinstance(it.value, dict) and R.ID not in it.value and R.NODES not in it.value \
                        and R.IMAGE_ID in it.value:
                    it.value = {**it.value, R.ID: it.value[R.IMAGE_ID]}
        _region_items(read_items(parsed, fmt, CAPTIONS_ONLY), col)
    elif fmt in ("coco", "osprey"):
        _coco_items(parsed, name, col)
    else:
        if not isinstance(parsed, dict):
            raise InputError(f"--format dam expects a JSON object {{id: caption}}, got {type(parsed).__name__}",
                             source=name)
        _dam_items(parsed, name, col)
    if not col.out:
        hint = ""
        if fmt == "records" and (named == "images" or any(R.is_image_record(v) for v in records_in)):
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
    reference_where: list[str] = field(default_factory=list)  # where each id's references were first read


def _examples(ids: list[str], k: int = 3) -> str:
    shown = ", ".join(repr(i) for i in ids[:k])
    return shown + (", ..." if len(ids) > k else "")


def by_alias(preds: dict[str, Entry], refs: dict[str, Entry]) -> dict[str, Entry]:
    """``preds`` with ids renamed to the references' own where a prediction names a benchmark region by the id
    the benchmark's result files use (its ``alias``: a COCO results file's ``image_id``, DAM's annotation key)
    and no reference has that id itself. Two predictions for one region are an error."""
    aliases = {e.alias: rid for rid, e in refs.items() if e.alias is not None and e.alias != rid}
    if not aliases:
        return preds
    out: dict[str, Entry] = {}
    for pid, entry in preds.items():
        rid = pid if pid in refs else aliases.get(pid, pid)
        if rid in out:
            raise InputError(f"predictions {pid!r} and {rid!r} name the same region (benchmark id "
                             f"{refs[rid].alias!r}); keep one", source=entry.where)
        out[rid] = entry
    return out


def one_sided(preds: dict[str, Any], refs: dict[str, Any], allow_missing: bool, pred_only: str, ref_only: str,
              then: str) -> tuple[list[str], list[str]]:
    """The ids of predictions without a reference and of references without a prediction. Either is an error
    naming how many and which (``pred_only``/``ref_only`` say what they are), unless ``allow_missing``; ``then``
    says what ``--allow-missing`` would do."""
    only_p = [i for i in preds if i not in refs]
    only_r = [i for i in refs if i not in preds]
    if (only_p or only_r) and not allow_missing:
        parts = []
        if only_p:
            parts.append(f"{len(only_p)} {pred_only} (e.g. {_examples(only_p)})")
        if only_r:
            parts.append(f"{len(only_r)} {ref_only} (e.g. {_examples(only_r)})")
        raise UrecaError("; ".join(parts) + f"; pass --allow-missing to {then}")
    return only_p, only_r


def match(preds: dict[str, Entry], refs: dict[str, Entry], *, allow_missing: bool = False) -> Matched:
    """Align predictions with references by id (or by the benchmark's own id: ``by_alias``); ids on one side only
    are an error unless ``allow_missing``."""
    preds = by_alias(preds, refs)
    both = [i for i in preds if i in refs]
    only_p, only_r = one_sided(preds, refs, allow_missing, "prediction id(s) have no reference",
                               "reference id(s) have no prediction", f"score the {len(both)} ids on both sides")
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
        reference_where=[refs[i].where for i in both],
    )


def read_pair(predictions: str | Path, references: str | Path, fmt: str = "auto", ref_format: str | None = None,
              *, allow_missing: bool = False) -> Matched:
    """Predictions and references read (``read_captions``; ``ref_format`` defaults to ``fmt``) and matched by
    id (``match``): what ``score.score`` scores."""
    preds = read_captions(predictions, "predictions", fmt)
    refs = read_captions(references, "references", ref_format or fmt)
    return match(preds, refs, allow_missing=allow_missing)
