"""Export refined image records as region records (``--flat``) or the released dataset's chat JSONL.

Both forms carry each node's ``caption`` as refine leaves it: the unique caption where refinement rewrote
it, else the annotate caption. (The released pipeline wrote its InternVL file from the captions before
uniqueness refinement, so its training data never saw the refined captions; here the export reads the
same field every later stage reads.)

- ``flat``: one region record per captioned node (``records.flatten``): ``id`` = ``"<image_id>/<node id>"``,
  ``image_id``, ``image``, ``width``, ``height``, ``rle`` (COCO compressed RLE), ``bbox`` (XYWH, SA-1B
  convention), ``caption``, ``role``, ``depth``, ``parent``, ``verified`` where verification ran, ``schema``,
  and the image record's provenance: its ``tree``, ``annotate`` and ``refine`` blocks (models, backend, prompt
  version, settings). ``train``, ``caption`` and ``score`` read this form.
- ``internvl``: ``{"id", "image": "<image file stem>", "mask_id": "<node id>", "conversations":
  [{"from": "human", "value": "<image>\\n<mask>\\n<question>"}, {"from": "gpt", "value": caption}]}``, the
  released URECA dataset's form (its masks are looked up in the image's SA-1B JSON by ``mask_id``). ``id`` is
  our region id rather than a running counter, so that shards and resumed runs never collide. For an image in
  a tar shard (``image`` a ``TAR#MEMBER@OFFSET:SIZE`` reference) the stem is the member's, SA-1B's ``sa_N``:
  the form stays the released one, which finds images and masks by that stem in folders (``--images``,
  ``--masks``), so it names no tar; ``flat`` keeps the reference.
"""

from __future__ import annotations

from typing import Any

from .. import records as R
from ..errors import UrecaError
from ..images import image_stem

FORMATS = ("records", "flat", "internvl")
DEFAULT_QUESTION = "Describe this region in the image."


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise UrecaError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    return fmt


def flat_records(rec: dict) -> list[dict]:
    """Region records of the captioned nodes of an image record, in node order, each carrying the record's
    provenance (its ``tree``, ``annotate`` and ``refine`` blocks)."""
    return list(R.flatten(rec, provenance=True))


def internvl_records(rec: dict, question: str = DEFAULT_QUESTION) -> list[dict]:
    """The released dataset's chat lines for the captioned nodes of an image record, in node order."""
    if not question.strip():
        raise UrecaError("--question: needs some text")
    stem = image_stem(rec[R.IMAGE])  # a tar reference: its member's stem
    prompt = f"<image>\n<mask>\n{question.strip()}"
    return [
        {
            "id": R.region_id(rec[R.IMAGE_ID], node[R.ID]),
            "image": stem,
            "mask_id": str(node[R.ID]),
            "conversations": [
                {"from": "human", "value": prompt},
                {"from": "gpt", "value": node[R.CAPTION].strip()},
            ],
        }
        for node in R.captioned_nodes(rec)
    ]


def export(rec: dict, fmt: str, *, question: str = DEFAULT_QUESTION) -> dict | list[dict]:
    """One image record in the chosen form: itself (``records``) or its region lines (``flat``, ``internvl``)."""
    if fmt == "records":
        return rec
    if fmt == "flat":
        return flat_records(rec)
    if fmt == "internvl":
        return internvl_records(rec, question)
    raise UrecaError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")


def output_image_key(line: dict) -> Any:
    """The image a written line belongs to, for ``--resume``: an image record's or a region record's
    ``image_id``, or for an ``internvl`` line its id ``"<image_id>/<node id>"`` less ``"/<mask_id>"`` (node ids,
    like image ids, may hold a '/', so the id alone cannot be split)."""
    if line.get(R.IMAGE_ID) is not None:
        return str(line[R.IMAGE_ID])
    rid, mask_id = line.get(R.ID), line.get("mask_id")
    if isinstance(rid, str) and isinstance(mask_id, str) and rid.endswith("/" + mask_id):
        return rid[: -len(mask_id) - 1]
    return None
