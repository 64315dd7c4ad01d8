"""Stage 1: mask trees. One SA-1B per-image JSON (or SAM automatic-mask-generator output) -> one image record.

Every mask becomes a node of a containment tree (DESIGN.md, "Stage 1"):

- ``contain(a, b) = |a ∩ b| / |a|`` (0 for an empty ``a``), computed on the masks' COCO RLE runs
  (``masks.runs.RunSet``: the same integers pycocotools' ``iou`` with ``iscrowd`` divides), never on full
  bitmaps; a box bound ``|a ∩ b| <= area(box(a) ∩ box(b))`` skips the pairs that cannot reach the
  threshold, and the few pairs left (about four per mask on SA-1B-like input) are computed in one pass.
- masks are ordered by area, largest first, ties in file order; ``a`` may hang under ``b`` only if ``b`` comes
  earlier and ``contain(a, b) >= threshold``. The root (the whole image) is virtual: its children have
  ``parent = None`` and ``depth = 1``.
- ``parent_rule="tightest"`` (default): the smallest earlier mask that contains ``a``; among equal areas the
  later one in the order, which is the deeper of the two. ``parent_rule="first"``: the released URECA code
  (``build_inclusion_tree``): descend from the root into the first child, in insertion order, that contains
  ``a``, and hang ``a`` under the node where the descent stops.

Roles (``role`` and, for dropped nodes, ``drop_reason``):

- ``main``: a child of the root whose subtree is at least ``main_min_depth`` levels deep (counting itself)
  and whose area is within ``[main_min_area, main_max_area]`` of the image;
- ``part``: a descendant of a main object whose area is at least ``part_min_area`` of the image;
- ``dropped`` with ``drop_reason``: ``"empty"`` (no pixels), ``"not-main: area"`` or ``"not-main: shallow"``
  (a child of the root that is not a main object), ``"small"`` (under a main object, below the part floor;
  its whole subtree is smaller still and is dropped with it), ``"inside-dropped"`` (a descendant of a child
  of the root that is not a main object).

A file's ``generator`` block (how its masks were made: ``tree --generate-masks``'s SAM model and settings,
``sam.sa1b``) is kept in the image record. ``tree_photos.py`` hands SAM's masks of a photo to ``build_tree`` as
the parsed dict, never through a file on disk.

Masks: ``rle`` is COCO compressed RLE ``{"size": [H, W], "counts": str}`` (column-major); ``bbox`` is the
file's own XYWH box (SA-1B convention, one pixel short of the pixels' box); boxes used for the pre-filter are
``pycocotools.mask.toBbox`` boxes, which cover every pixel.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import orjson

from .. import records as R
from ..errors import InputError, UrecaError
from ..images import image_size
from ..masks.rle import segmentation_counts
from ..masks.runs import BadCounts, RunSet
from ..stream import check_output_folder, read_json_file
from ..tars import IMAGE_SUFFIXES, MemberRef, TarJson, index_tar, read_member

PARENT_RULES = ("tightest", "first")
KEPT_ANNOTATION_FIELDS = ("predicted_iou", "stability_score")
GENERATOR = "generator"  # a mask file's note of how its masks were made (sam.sa1b), kept in the image record


@dataclass(frozen=True)
class TreeConfig:
    """Settings of the tree stage (paper defaults). Areas are fractions of the image's pixels."""

    threshold: float = 0.8
    parent_rule: str = "tightest"
    main_min_depth: int = 4
    main_min_area: float = 0.007
    main_max_area: float = 0.7
    part_min_area: float = 0.007
    images: Path | None = None  # look for images here instead of next to the JSON
    render: Path | None = None  # write a PNG of each tree here

    def __post_init__(self):
        if not 0.0 < self.threshold <= 1.0:
            raise UrecaError(f"--threshold {self.threshold}: needs 0 < threshold <= 1")
        if self.parent_rule not in PARENT_RULES:
            raise UrecaError(f"--parent-rule {self.parent_rule!r}: choose tightest or first")
        if self.main_min_depth < 1:
            raise UrecaError(f"--main-min-depth {self.main_min_depth}: needs at least 1")
        for name in ("main_min_area", "main_max_area", "part_min_area"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UrecaError(f"--{name.replace('_', '-')} {getattr(self, name)}: needs a fraction in [0, 1]")
        if self.main_min_area > self.main_max_area:
            raise UrecaError(f"--main-min-area {self.main_min_area} is above --main-max-area {self.main_max_area}")
        if self.images is not None and not Path(self.images).is_dir():
            raise UrecaError(f"--images {self.images}: not a folder")
        check_output_folder("--render", self.render)

    def settings(self) -> dict:
        """The settings that decide a tree, written into every record (how it was made)."""
        d = asdict(self)
        d.pop("images")
        d.pop("render")
        return d


# ---------------------------------------------------------------------------------------------- loading
@dataclass
class MaskFile:
    """One input file, read and checked: the image and its masks in file order."""

    source: str  # absolute path of the JSON, or the reference of a tar's JSON member
    image_id: str
    image: str  # absolute path of the image, or a reference to a tar's image member
    width: int
    height: int
    annotations: list[dict]  # the file's annotation dicts
    ids: list[Any]  # annotation ids (the index in the file where there is none)
    counts: list[bytes]  # compressed RLE counts per mask, size [height, width]
    runs: RunSet  # the masks' foreground intervals, areas and pixel boxes
    generator: dict | None = None  # how the masks were made, where the file says (tree --generate-masks: SAM)
    warnings: list[str] = field(default_factory=list)  # what a person should hear (an image not found, ...)


class NotMaskFile(InputError):
    """A JSON file that is not a mask file at all (a ``notes.json`` beside the masks): ``run`` skips it with one
    warning, where a broken mask file fails."""


def _is_mask_document(data: Any) -> bool:
    """Whether a JSON document is meant as a mask file: an object with SA-1B's ``annotations`` or ``image``, or a
    list whose first element is an object with a ``segmentation`` (SAM's automatic mask generator). Anything
    else (``{"note": ...}``, a list of strings, a number) is some other JSON that happens to lie among them."""
    if isinstance(data, dict):
        return "annotations" in data or "image" in data
    if isinstance(data, list):
        return not data or isinstance(data[0], dict) and "segmentation" in data[0]
    return False


def _positive_int(value: Any, field: str, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InputError(f"image.{field} should be a positive whole number, got {value!r}", source=where)
    return value


def _find_image(src: Path, where: str, info: dict, images: Path | None, render: bool) -> tuple[Path, str | None]:
    """(the image's path, a warning or None). A file that names its image (``file_name``) and holds its size
    gives a tree without the image: only later stages look at the photo, so a missing one is a warning (an
    error with ``--render``, which draws over it). Without ``file_name`` the image is found by the JSON's stem,
    and must be there: the record could not name it otherwise."""
    folder = images if images is not None else src.parent
    name = info.get("file_name")
    hint = "" if images is not None else "; --images DIR looks in another folder"
    if isinstance(name, str) and name:
        path = folder / name
        if path.is_file():
            return path, None
        if render:
            raise InputError(f"image file {path} not found (--render draws the tree over it){hint}", source=where)
        return path, (f"{where}: image file {path} not found; the tree is built from the JSON's size, but "
                      f"annotate and refine will need the image{hint}")
    for suffix in IMAGE_SUFFIXES:
        path = folder / (src.stem + suffix)
        if path.is_file():
            return path, None
    raise InputError(
        f"no image for this file: no image.file_name, and no {src.stem}.jpg/.png in {folder} (the record must name "
        "its image)", source=where
    )


def load_mask_file(path: str | Path | TarJson, cfg: TreeConfig, data: Any = None,
                   image: str | Path | None = None) -> MaskFile:
    """Read and check one SA-1B per-image JSON or SAM automatic-mask-generator output (a list of masks): a file
    (its image next to it, or in ``cfg.images``), or a JSON member of a tar shard (``tars.TarJson``, read in
    place; its image is the member beside it, written into the record as a reference into the tar).

    ``data``: the file's parsed JSON, when the caller has it in memory (``tree --generate-masks``: SAM's masks
    of the photo ``path``), so nothing is written to disk to be read back; ``image``: the image file, instead of
    looking for it by the JSON's ``file_name``. Raises ``InputError`` naming the file or member (and the
    annotation) for anything a tree cannot be built from.
    """
    if isinstance(path, TarJson):
        return _load_tar_json(path, cfg)
    src = Path(os.path.abspath(path))
    where = str(path)  # messages name the file as the user gave it
    if data is None:
        data = read_json_file(path)
    if image is not None:
        given = os.path.abspath(image)
        return mask_file_from_json(data, src, where, str(src), lambda info: (given, None))

    def locate(info: dict) -> tuple[str, str | None]:
        found, missing = _find_image(src, where, info, cfg.images, cfg.render is not None)
        return os.path.abspath(found), missing

    return mask_file_from_json(data, src, where, str(src), locate)


def _load_tar_json(item: TarJson, cfg: TreeConfig) -> MaskFile:
    where = str(item.json)  # the member's reference: what `source`, --resume and --failed name it by
    try:
        data = orjson.loads(read_member(item.json, where))
    except orjson.JSONDecodeError as e:
        raise InputError(f"not valid JSON ({e})", source=where) from None
    src = Path(PurePosixPath(item.json.member).name)  # its stem: the image id where the JSON gives none
    return mask_file_from_json(data, src, where, where,
                               lambda info: _find_member_image(item, where, info, cfg.images, cfg.render is not None))


def _find_member_image(item: TarJson, where: str, info: dict, images: Path | None,
                       render: bool) -> tuple[str, str | None]:
    """(the image of a JSON member, a warning or None): in ``images`` (a folder) where given (as
    ``_find_image``), else the tar member named by ``file_name`` (or of the JSON's stem) in the JSON's folder in
    the tar, as a reference."""
    if images is not None:
        found, missing = _find_image(Path(images) / PurePosixPath(item.json.member).name, where, info, images,
                                     render)
        return os.path.abspath(found), missing
    name = info.get("file_name")
    if item.image is not None and (not isinstance(name, str) or not name
                                   or PurePosixPath(item.image.member).name == name):
        return str(item.image), None
    tar = Path(item.json.tar).name
    if isinstance(name, str) and name:  # another name than the stem's: look it up in the tar's index
        found = index_tar(item.json.tar).image_for(item.json.member, name)
        if found is None:
            raise InputError(f"image member {name!r} not found in {tar} beside {item.json.member!r}; --images DIR "
                             "looks in a folder instead", source=where)
        return str(MemberRef(item.json.tar, found.name, found.offset, found.size)), None
    stem = PurePosixPath(item.json.member).stem
    raise InputError(f"no image for this member: no image.file_name, and no {stem}.jpg/.png beside it in {tar}",
                     source=where)


def mask_file_from_json(data: Any, src: Path, where: str, source: str,
                        locate: Callable[[dict], tuple[str, str | None]]) -> MaskFile:
    """Check one parsed SA-1B per-image JSON (or SAM automatic-mask-generator output) and find its image.

    ``src``: the JSON's name (its stem is the image id where the JSON gives none); ``where``: how messages name
    it; ``source``: the record's ``source`` (the ``--resume`` key: the file's absolute path, or a tar member's
    reference); ``locate(info)``: the image (a path or a tar reference, as the record will hold it) from the
    JSON's ``image`` object, and a warning when it is missing (the tree is then built from the JSON's size).
    The image's size is checked against the JSON's from its header (one loader, ``ureca_cli.images``, for files
    and tar members alike). ``NotMaskFile`` for a JSON that is no mask file at all.
    """
    if not _is_mask_document(data):
        raise NotMaskFile("not a mask file (neither an SA-1B per-image JSON with 'image' and 'annotations' nor SAM "
                          "automatic-mask-generator output); skipped", source=where)
    if isinstance(data, list):  # SAM's automatic mask generator: a list of annotation dicts, no image info
        anns, info = data, {}
    elif isinstance(data, dict):
        anns = data.get("annotations")
        if not isinstance(anns, list):
            raise InputError(
                "no 'annotations' list: expected an SA-1B per-image JSON or SAM automatic-mask-generator output",
                source=where,
            )
        info = data.get("image") or {}
        if not isinstance(info, dict):
            raise InputError("'image' should be an object with width, height and file_name", source=where)
    else:
        raise InputError(f"expected a JSON object or list, got {type(data).__name__}", source=where)

    if "width" in info or "height" in info:
        width = _positive_int(info.get("width"), "width", where)
        height = _positive_int(info.get("height"), "height", where)
    else:  # SAM output: the size comes from the masks
        first = anns[0].get("segmentation") if anns and isinstance(anns[0], dict) else None
        size = first.get("size") if isinstance(first, dict) else None
        if not (isinstance(size, list) and len(size) == 2):
            raise InputError("cannot tell the image size: no image.width/height and no RLE size", source=where)
        height = _positive_int(size[0], "height (from the RLE size)", where)
        width = _positive_int(size[1], "width (from the RLE size)", where)
    image_id = R.image_id_for(info.get("image_id"), src, where, "image.image_id")
    if "file_name" in info and not (isinstance(info["file_name"], str) and info["file_name"]):
        raise InputError(f"field 'image.file_name' should be the image's file name (a non-empty string), got "
                         f"{R.type_name(info['file_name'])}", source=where)

    ids: list[Any] = []
    counts: list[bytes] = []
    seen: dict[str, int] = {}  # id as text (the region id's part) -> its annotation
    for i, ann in enumerate(anns):
        at = f"{where}: annotations[{i}]"
        if not isinstance(ann, dict):
            raise InputError(f"annotations[{i}] is not an object", source=where)
        R.check_fields(ann, where, f"annotations[{i}].")  # id, area, bbox: the types every stage reads
        for key in KEPT_ANNOTATION_FIELDS:
            if key in ann and (not isinstance(ann[key], int | float) or isinstance(ann[key], bool)):
                raise InputError(f"field 'annotations[{i}].{key}' should be a number, got {R.type_name(ann[key])}",
                                 source=where)
        node_id = ann.get("id", i)
        if not isinstance(node_id, int | str) or isinstance(node_id, bool):
            raise InputError(f"annotations[{i}].id should be a number or a string, got {node_id!r}", source=where)
        first = seen.setdefault(str(node_id), i)
        if first != i:  # 1 and "1" too: both would be the region <image_id>/1
            raise InputError(f"annotations[{i}]: id {node_id!r} is also the id of annotations[{first}] "
                             f"({ids[first]!r}); region ids (<image_id>/<id>) must differ", source=where)
        if "segmentation" not in ann:
            raise InputError(f"annotations[{i}] has no 'segmentation'", source=where)
        ids.append(node_id)
        counts.append(segmentation_counts(ann["segmentation"], height, width, at))
    try:
        runs = RunSet.from_counts(counts, height, width)
    except BadCounts as e:
        raise InputError(f"annotations[{e.index}]: corrupt RLE counts ({e.reason})", source=where) from None

    image, missing = locate(info)
    if missing is None:
        _check_image_size(image, width, height, where)
    generator = data.get("generator") if isinstance(data, dict) and isinstance(data.get("generator"), dict) else None
    return MaskFile(source, image_id, image, width, height, anns, ids, counts, runs, generator,
                    [missing] if missing else [])


def _check_image_size(image: str, width: int, height: int, where: str) -> None:
    size = image_size(image, where)
    if size != (width, height):
        raise InputError(f"image {image} is {size[0]}x{size[1]}, the JSON says {width}x{height}", source=where)


# ----------------------------------------------------------------------------------------- the algorithm
def order_by_area(areas: np.ndarray) -> np.ndarray:
    """Indices of masks sorted by area, largest first, ties in file order."""
    return np.lexsort((np.arange(len(areas)), -np.asarray(areas, dtype=np.int64)))


def _candidate_pairs(boxes: np.ndarray, areas: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(i, j)``, ``j < i`` (positions in the area order), where mask ``j`` could hold ``threshold`` of
    mask ``i``: their pixel boxes (``n x 4`` XYWH) overlap by at least ``threshold * areas[i]``. Empty masks
    are held by nothing. Computed in row blocks, so memory stays small for thousands of masks."""
    n = len(areas)
    x0, y0 = boxes[:, 0], boxes[:, 1]
    x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
    rows, cols = [], []
    step = max(1, 2_000_000 // max(n, 1))
    for lo in range(1, n, step):
        hi = min(n, lo + step)
        sl = slice(lo, hi)
        iw = np.clip(np.minimum(x1[sl, None], x1[None, :hi]) - np.maximum(x0[sl, None], x0[None, :hi]), 0, None)
        ih = np.clip(np.minimum(y1[sl, None], y1[None, :hi]) - np.maximum(y0[sl, None], y0[None, :hi]), 0, None)
        may = (iw * ih) >= (threshold * areas[sl, None]) * (1 - 1e-9)
        may &= np.arange(hi)[None, :] < np.arange(lo, hi)[:, None]  # only earlier masks
        may[areas[sl] == 0, :] = False
        r, c = np.nonzero(may)
        rows.append(r + lo)
        cols.append(c)
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(rows), np.concatenate(cols)


def build_parents(runs: RunSet, threshold: float = 0.8, rule: str = "tightest") -> list[int]:
    """Parent index of every mask (``-1`` for a child of the root), in file order.

    Candidate pairs are those where the earlier mask's pixel box overlaps the later mask's box by at least
    ``threshold * area`` of the later one (every other pair has ``contain < threshold`` for certain); the
    containment of all candidate pairs is computed on RLE intervals in one pass (``RunSet.intersections``).
    """
    n = runs.n
    if n == 0:
        return []
    areas = runs.areas
    order = order_by_area(areas)
    sorted_areas = areas[order]
    pi, pj = _candidate_pairs(runs.boxes[order], sorted_areas, threshold)
    inter = runs.intersections(order[pi], order[pj])
    hits = np.zeros((n, n), dtype=bool)  # hits[i, j]: contain(position i, position j) >= threshold
    hits[pi, pj] = inter / sorted_areas[pi] >= threshold  # as pycocotools: double(|a ∩ b|) / double(|a|)
    parents = [-1] * n
    if rule == "tightest":  # the latest (smallest) earlier mask that contains it
        has = hits.any(axis=1)
        last = n - 1 - np.argmax(hits[:, ::-1], axis=1)
        for i in np.flatnonzero(has):
            parents[order[i]] = int(order[last[i]])
        return parents
    if rule != "first":
        raise ValueError(f"unknown parent rule {rule!r}")
    children: list[list[int]] = [[] for _ in range(n + 1)]  # positions; index n is the root
    for i in range(n):
        node = n
        row = hits[i]
        while True:
            nxt = next((j for j in children[node] if row[j]), -1)
            if nxt < 0:
                break
            node = nxt
        children[node].append(i)
        if node != n:
            parents[order[i]] = int(order[node])
    return parents


def assign_roles(parents: list[int], areas: np.ndarray, image_area: int, cfg: TreeConfig) -> dict[str, list]:
    """Depth, subtree depth, children, role and drop reason of every mask (lists in file order)."""
    n = len(parents)
    areas = np.asarray(areas, dtype=np.int64)
    order = order_by_area(areas)  # a parent always comes before its children
    children: list[list[int]] = [[] for _ in range(n)]
    for i in order:
        if parents[i] >= 0:
            children[parents[i]].append(int(i))
    depth = [1] * n
    for i in order:
        if parents[i] >= 0:
            depth[i] = depth[parents[i]] + 1
    height = [1] * n
    for i in order[::-1]:
        if parents[i] >= 0:
            height[parents[i]] = max(height[parents[i]], height[i] + 1)
    frac = areas / float(image_area)
    role: list[str] = [R.ROLE_DROPPED] * n
    reason: list[str | None] = [None] * n
    for i in order:
        p = parents[i]
        if areas[i] == 0:
            reason[i] = "empty"
        elif p < 0:
            if not cfg.main_min_area <= frac[i] <= cfg.main_max_area:
                reason[i] = "not-main: area"
            elif height[i] < cfg.main_min_depth:
                reason[i] = "not-main: shallow"
            else:
                role[i] = R.ROLE_MAIN
        elif role[p] == R.ROLE_DROPPED:
            reason[i] = "small" if reason[p] == "small" else "inside-dropped"
        elif frac[i] < cfg.part_min_area:
            reason[i] = "small"
        else:
            role[i] = R.ROLE_PART
    return {"children": children, "depth": depth, "height": height, "role": role, "reason": reason}


def tree_record(mf: MaskFile, cfg: TreeConfig) -> dict:
    """The image record of one checked mask file: every mask a node, with parent, children, depth and role."""
    areas, boxes = mf.runs.areas, mf.runs.boxes
    parents = build_parents(mf.runs, cfg.threshold, cfg.parent_rule)
    info = assign_roles(parents, areas, mf.width * mf.height, cfg)
    nodes = []
    for i, ann in enumerate(mf.annotations):
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4):  # SA-1B convention: one pixel short of the pixels
            x, y, w, h = boxes[i]
            bbox = [float(x), float(y), max(float(w) - 1, 0.0), max(float(h) - 1, 0.0)]
        node = {
            R.ID: mf.ids[i],
            R.PARENT: mf.ids[parents[i]] if parents[i] >= 0 else None,
            R.CHILDREN: [mf.ids[c] for c in info["children"][i]],
            R.DEPTH: info["depth"][i],
            R.AREA: int(areas[i]),
            R.BBOX: bbox,
            R.RLE: {"size": [mf.height, mf.width], "counts": mf.counts[i].decode("ascii")},
            R.ROLE: info["role"][i],
        }
        if info["reason"][i] is not None:
            node[R.DROP_REASON] = info["reason"][i]
        for key in KEPT_ANNOTATION_FIELDS:
            if key in ann:
                node[key] = ann[key]
        nodes.append(node)
    return {
        R.SCHEMA: R.SCHEMA_VERSION,
        R.IMAGE_ID: mf.image_id,
        R.IMAGE: mf.image,
        R.WIDTH: mf.width,
        R.HEIGHT: mf.height,
        R.SOURCE: mf.source,
        R.TREE: cfg.settings(),
        **({GENERATOR: mf.generator} if mf.generator is not None else {}),
        R.NODES: nodes,
    }


def build_tree(path: str | Path | TarJson, cfg: TreeConfig, data: Any = None, image: str | Path | None = None) -> dict:
    """One input file or tar JSON member -> its image record (and, with ``cfg.render``, its PNG). ``data`` and
    ``image``: the parsed file and its image, where the caller has them (``load_mask_file``). ``NotMaskFile``
    for a JSON that is no mask file at all; ``InputError`` for a broken one."""
    return _build(load_mask_file(path, cfg, data, image), cfg)


def _build(mf: MaskFile, cfg: TreeConfig) -> dict:
    rec = tree_record(mf, cfg)
    if cfg.render is not None:
        from ..visual.render import render_tree

        render_tree(rec, Path(cfg.render) / f"{R.file_name(rec[R.IMAGE_ID])}.png")
    return rec


@dataclass
class Built:
    """What one input file gave the run: its image record (``None``: not a mask file, skipped) and the warnings
    to print for it. Crosses from worker processes to the writer."""

    record: dict | None
    warnings: list[str]


def build(path: str | Path | TarJson, cfg: TreeConfig) -> Built:
    """The unit of work of the stage: one input file or tar JSON member -> ``Built``."""
    try:
        mf = load_mask_file(path, cfg)
    except NotMaskFile as e:
        return Built(None, [str(e)])
    return Built(_build(mf, cfg), mf.warnings)


def source_key(path: str | Path | TarJson) -> str:
    """The ``--resume`` key of an input, as written into ``source``: a file's absolute path, a tar JSON member's
    reference (``/abs/sa_000000.tar#sa_1.json@OFFSET:SIZE``)."""
    return str(path.json) if isinstance(path, TarJson) else os.path.abspath(path)


def run(specs: list[str], cfg: TreeConfig, scfg: Any) -> Any:
    """Build the trees of every input ``specs`` names (``tree_inputs.input_items``: each file once, a tar's JSON
    members in archive order, each tar indexed when the run reaches it) under the stream contract
    (``stream.run_stage``; ``scfg`` is the ``StreamConfig``, its ``jobs`` worker processes). Returns
    run_stage's summary."""
    from functools import partial

    from ..images import tar_ref
    from ..stream import Reporter, ordered_map, run_stage
    from .tree_inputs import input_items, member_items, tar_count, unchanged_members

    written: dict[tuple[str, str], str] = {}  # (tar, member) -> the reference --resume read back from -o FILE

    def output_key(rec: dict) -> Any:
        source = rec.get(R.SOURCE)
        ref = tar_ref(source)
        if ref is not None:
            written[(ref.tar, ref.member)] = source
        return source

    warn = Reporter("tree", show=False).warn
    skipped = [0]

    def mapper(fn: Any, todo: Any) -> Any:
        """ordered_map, with each file's warnings printed and the files that are no mask files left out."""
        for item, (ok, result) in ordered_map(fn, todo, jobs=scfg.jobs, kind="process"):
            if ok:
                for message in result.warnings:
                    warn(message)
                if result.record is None:
                    skipped[0] += 1
                    continue
                result = result.record
            yield item, (ok, result)

    items = input_items(specs)
    total = len(items) if not tar_count(items) else None  # a tar's members are counted when it is reached
    members = unchanged_members(member_items(items), written, scfg.output)  # `written` is read before the first
    summary = run_stage("tree", members, partial(build, cfg=cfg), scfg, input_key=source_key,
                        output_key=output_key, total=total, mapper=mapper, key_name="file")
    if skipped[0] and not (summary.written_items or summary.resumed or summary.failed):
        raise UrecaError(f"no mask file among the inputs ({skipped[0]} JSON file(s) skipped, none of them an SA-1B "
                         "per-image JSON or SAM output)")
    return summary
