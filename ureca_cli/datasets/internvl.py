"""The released URECA dataset (HF ``SammyLim/URECA``): InternVL chat JSONL whose masks are SA-1B's.

A line is ``{"id", "image": "sa_XXXX", "mask_id", "conversations": [{"from": "human", "value":
"<image>\\n<mask>\\n..."}, {"from": "gpt", "value": caption}, ...]}``; each ``gpt`` turn is a region record
``{"id": "<image_id>/<mask_id>" (with "#k" for the k-th of several turns), "image_id", "image": stem, "rle",
"caption", "question"}`` (the line's own ``id`` is a running counter; ours keeps regions apart across files).
``image_id`` follows the package's one rule (``records.image_id_for``): the SA-1B file's ``image_id`` (with
``--masks``), else the stem without SA-1B's ``sa_`` prefix: ``sa_9100001`` -> ``9100001``, as ``ureca tree``
names that image, so these regions meet ours in ``score``. The mask is annotation ``mask_id`` of ``--masks
DIR/<image stem>.json`` (SA-1B's per-image JSON); the image is found by its stem (``--images DIR``; a line whose
``image`` is a tar reference, ``TAR#MEMBER@OFFSET:SIZE``, keeps it, and its stem is the member's). Every SA-1B
file is read once for all its lines, keeping only the masks the lines name, so the reader reads all lines
first. Without ``--masks`` the regions have no ``rle``, which is enough for ``score``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .. import records as R
from ..errors import InputError
from ..images import image_stem
from ..stream import Item
from . import Reader, ReadOptions

_PLACEHOLDER = re.compile(r"<image>|<mask>|</mask>")


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def detect(first: Any) -> bool:
    return isinstance(first, dict) and ("conversations" in first or "mask_id" in first)


def parse_line(rec: Any, where: str) -> tuple[list[tuple[str | None, str]], Any]:
    """(question, caption) pairs and the mask id of a released-format line."""
    if not isinstance(rec, dict):
        raise InputError(f"expected a JSON object, got {type(rec).__name__}", source=where)
    if "mask_id" not in rec or rec["mask_id"] in (None, ""):
        raise InputError("line without a mask ('mask_id')", source=where)
    if not isinstance(rec.get(R.IMAGE), str) or not rec[R.IMAGE]:
        raise InputError("line without an image ('image')", source=where)
    conv = rec.get("conversations")
    if not isinstance(conv, list):
        raise InputError("'conversations' should be a list of turns", source=where)
    pairs, question = [], None
    for i, turn in enumerate(conv):
        if not isinstance(turn, dict) or turn.get("from") not in ("human", "gpt"):
            raise InputError(f"conversations[{i}] should be {{'from': 'human'|'gpt', 'value': ...}}", source=where)
        if turn["from"] == "human":
            question = _text(_PLACEHOLDER.sub("", str(turn.get("value") or "")))
        else:
            caption = _text(turn.get("value"))
            if caption is None:
                raise InputError(f"conversations[{i}] has an empty caption", source=where)
            pairs.append((question, caption))
    if not pairs:
        raise InputError("line without a caption (no 'gpt' turn in 'conversations')", source=where)
    return pairs, rec["mask_id"]


class SA1BMasks:
    """Masks of SA-1B per-image JSON files, by (file, annotation id); each file is parsed once.

    ``want(stem, ids)`` registers the ids a dataset needs; ``load()`` then reads every file once and keeps
    only those masks (an SA-1B file holds ~100 masks; a dataset uses a few), so memory stays small. A file that
    cannot be read is remembered (``error(stem)``): the lines that need it fail, the others do not.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._wanted: dict[str, set[str]] = defaultdict(set)
        self._masks: dict[tuple[str, str], dict] = {}
        self._image_ids: dict[str, str] = {}  # stem -> the file's image.image_id (records.image_id_for)
        self._errors: dict[str, InputError] = {}
        self.files_read = 0

    def want(self, stem: str, mask_id: Any) -> None:
        self._wanted[stem].add(str(mask_id))

    def load(self) -> None:
        for stem, ids in self._wanted.items():
            try:
                self._load_file(stem, ids)
            except InputError as e:
                self._errors[stem] = e

    def _load_file(self, stem: str, ids: set[str]) -> None:
        from .. import masks as M
        from ..stream import read_json_file

        path = self.folder / f"{stem}.json"
        if not path.is_file():
            raise InputError(f"no SA-1B file for image '{stem}' in --masks {self.folder}", source=str(path))
        data = read_json_file(path)
        self.files_read += 1
        anns = data.get("annotations") if isinstance(data, dict) else data
        if not isinstance(anns, list):
            raise InputError("not an SA-1B file (no 'annotations' list)", source=str(path))
        info = data.get("image", {}) if isinstance(data, dict) else {}  # a list (SAM's generator): none
        if not isinstance(info, dict):
            raise InputError(f"'image' should be an object with 'height' and 'width', not "
                             f"{type(info).__name__}", source=str(path))
        self._image_ids[stem] = R.image_id_for(info.get("image_id"), path, str(path), "image.image_id")
        h, w = info.get("height"), info.get("width")
        sized = all(isinstance(v, int) and v > 0 for v in (h, w))
        for idx, ann in enumerate(anns):
            key = str(ann.get("id", idx)) if isinstance(ann, dict) else str(idx)
            if key in ids and isinstance(ann, dict):
                seg = ann.get("segmentation")
                if isinstance(seg, list) and not sized:  # an RLE carries its size, a polygon does not
                    raise InputError(f"annotation {key} is a polygon and the file gives no image size "
                                     f"('image': {{'height', 'width'}}); use RLE segmentations", source=str(path))
                self._masks[(stem, key)] = M.rle_from_any(seg, h if sized else None, w if sized else None,
                                                          f"{path} annotation {key}")

    def error(self, stem: str) -> InputError | None:
        return self._errors.get(stem)

    def get(self, stem: str, mask_id: Any) -> dict | None:
        return self._masks.get((stem, str(mask_id)))

    def image_id(self, stem: str) -> str:
        """The image id of the photo ``stem``: its SA-1B file's ``image_id`` (``records.image_id_for``)."""
        return self._image_ids.get(stem) or R.image_id_from_stem(stem)


def read(items: Iterable[Item], opts: ReadOptions) -> Iterator[Item]:
    lines: list[tuple[Item, Any]] = []  # (item, (pairs, mask_id) or None when the item failed)
    masks = SA1BMasks(opts.masks) if opts.masks is not None else None
    for item in items:
        if item.error is not None:
            lines.append((item, None))
            continue
        try:
            parsed = parse_line(item.value, item.where)
            if masks is None and R.RLE in opts.need:
                raise InputError("released-format line (has 'conversations'): pass --masks DIR with the SA-1B JSON "
                                 "files", source=item.where)
        except InputError as e:
            lines.append((Item(None, item.where, item.raw, e), None))
            continue
        if masks is not None:
            masks.want(image_stem(item.value[R.IMAGE]), parsed[1])
        lines.append((item, parsed))
    if masks is not None:
        masks.load()
    for item, parsed in lines:
        if parsed is None:
            yield item
            continue
        try:
            yield Item(_regions(item, *parsed, masks), item.where, item.raw)
        except InputError as e:
            yield Item(None, item.where, item.raw, e)


def _regions(item: Item, pairs: list[tuple[str | None, str]], mask_id: Any, masks: SA1BMasks | None) -> list[dict]:
    rec, where = item.value, item.where
    stem = image_stem(rec[R.IMAGE])  # a tar reference: its member's stem
    image_id = R.image_id_from_stem(stem)
    rle = None
    if masks is not None:
        if masks.error(stem) is not None:
            raise masks.error(stem)
        rle = masks.get(stem, mask_id)
        if rle is None:
            raise InputError(f"mask id {mask_id!r} is not in {masks.folder / (stem + '.json')}", source=where)
        image_id = masks.image_id(stem)
    base_id = R.region_id(image_id, mask_id)
    out = []
    for k, (question, caption) in enumerate(pairs):
        region = {R.ID: base_id if len(pairs) == 1 else f"{base_id}#{k}", R.IMAGE_ID: image_id, R.IMAGE: rec[R.IMAGE],
                  R.CAPTION: caption, R.QUESTION: question}
        if rle is not None:
            region[R.RLE] = rle
        out.append(region)
    return out


READER = Reader("internvl", "the released URECA dataset's InternVL chat JSONL (masks from --masks, SA-1B JSON)",
                detect, read)
