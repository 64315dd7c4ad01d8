"""Training data for ``ureca train``: region samples from our records or the released URECA dataset.

Three input forms, told apart line by line:

- region records (``ureca refine --flat``, ``ureca_cli.synthetic``): ``{"id", "image_id", "image", "rle",
  "caption", ...}``, one region per line;
- image records (``ureca refine``): ``{"image_id", "image", "nodes": [...]}``; every node with a non-empty
  ``caption`` becomes a sample (nodes without one are skipped; a record with none is an error);
- the released dataset's InternVL chat JSONL: ``{"id", "image": "sa_XXXX", "mask_id", "conversations":
  [{"from": "human", "value": "<image>\\n<mask>\\n..."}, {"from": "gpt", "value": caption}, ...]}``; the image is
  looked up in ``--images DIR`` and the mask in ``--masks DIR/<image stem>.json`` (SA-1B's per-image JSON).
  Each SA-1B file is read once for all its lines and only the referenced masks are kept.

Every bad line stops loading with one ``InputError`` naming ``file:line`` and what is wrong, before anything
is trained or written. Masks stay COCO compressed RLE (``{"size": [H, W], "counts": str}``) until a batch is
built. The validation split is by image: an image's regions are all on one side.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import records as R
from .errors import InputError, UrecaError

IMAGE_SUFFIXES = ("", ".jpg", ".jpeg", ".png", ".JPG", ".webp")
_PLACEHOLDER = re.compile(r"<image>|<mask>|</mask>")


@dataclass(frozen=True)
class Sample:
    """One training example: a region of an image and its caption.

    ``rle`` is a COCO compressed RLE of the region (``HxW`` of the image), or ``None`` for a whole-image
    caption (no mask). ``question`` is ``None`` for the model's default question. ``where`` is ``file:line``.
    ``image_id`` is the record's, or the resolved image path for a region record without one (the
    validation split keys on it, so it must be the same for every region of an image).
    """

    id: str
    image_id: str
    image: str
    rle: dict | None
    caption: str
    question: str | None = None
    where: str = ""


@dataclass(frozen=True)
class DataConfig:
    """Where the released format finds images and masks, and how the validation split is drawn."""

    images_dir: Path | None = None  # images of the released format (and of relative paths in records)
    masks_dir: Path | None = None  # SA-1B per-image JSON files of the released format
    val_fraction: float = 0.05  # fraction of images held out (0: no validation split)
    val_max_regions: int = 200  # cap on held-out regions captioned and scored at the end (0: no cap)
    seed: int = 0
    check_images: bool = True  # open every image's header once to check it exists and its size

    def __post_init__(self):
        if not 0 <= self.val_fraction < 1:
            raise UrecaError(f"--val-fraction {self.val_fraction}: needs 0 <= f < 1")
        if self.val_max_regions < 0:
            raise UrecaError("--val-max-regions: needs >= 0")
        for name in ("images_dir", "masks_dir"):
            d = getattr(self, name)
            if d is not None and not Path(d).is_dir():
                raise UrecaError(f"--{name.split('_')[0]} {d}: no such folder")


# ----------------------------------------------------------------------------------------------- reading
def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _resolve_image(image: str, cfg: DataConfig, base: Path) -> Path | None:
    """The image file for a record's ``image`` field: absolute, under ``--images``, the cwd or the file's dir."""
    p = Path(image)
    if p.is_absolute():
        return p if p.is_file() else None
    roots = [cfg.images_dir] if cfg.images_dir is not None else []
    roots += [Path.cwd(), base]
    for root in roots:
        for suffix in IMAGE_SUFFIXES:
            q = root / (image + suffix)
            if q.is_file():
                return q
    return None


def _from_region(rec: dict, where: str) -> Sample:
    for f in (R.ID, R.IMAGE):
        if not isinstance(rec.get(f), str | int) or rec.get(f) == "":
            raise InputError(f"region record without '{f}'", source=where)
    caption = _text(rec.get(R.CAPTION))
    if caption is None and isinstance(rec.get(R.CAPTIONS), list) and rec[R.CAPTIONS]:
        caption = _text(rec[R.CAPTIONS][0])
    if caption is None:
        raise InputError("region record without a caption (field 'caption')", source=where)
    if R.RLE not in rec:
        raise InputError("region record without a mask (field 'rle')", source=where)
    R.check_rle(rec[R.RLE], where)
    image_id = "" if rec.get(R.IMAGE_ID) in (None, "") else str(rec[R.IMAGE_ID])  # "": the image file's path
    return Sample(str(rec[R.ID]), image_id, str(rec[R.IMAGE]), rec[R.RLE], caption, _text(rec.get("question")), where)


def _from_image(rec: dict, where: str) -> list[Sample]:
    R.check_image_record(rec, where)
    out = [
        Sample(R.region_id(rec[R.IMAGE_ID], n[R.ID]), rec[R.IMAGE_ID], rec[R.IMAGE], n[R.RLE], n[R.CAPTION].strip(),
               None, where)
        for n in R.captioned_nodes(rec)
    ]
    if not out:
        raise InputError("image record with no captioned node (run `ureca annotate` / `refine` first)", source=where)
    return out


def _from_chat(rec: dict, where: str) -> tuple[list[tuple[str | None, str]], Any]:
    """(question, caption) pairs and the mask id of a released-format line."""
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
    only those masks (an SA-1B file holds ~100 masks; a dataset uses a few), so memory stays small.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._wanted: dict[str, set[str]] = defaultdict(set)
        self._masks: dict[tuple[str, str], dict] = {}
        self.files_read = 0

    def want(self, stem: str, mask_id: Any) -> None:
        self._wanted[stem].add(str(mask_id))

    def load(self) -> None:
        from . import masks as M
        from .stream import read_json_file

        for stem, ids in self._wanted.items():
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
            h, w = info.get("height"), info.get("width")
            sized = all(isinstance(v, int) and v > 0 for v in (h, w))
            for idx, ann in enumerate(anns):
                key = str(ann.get("id", idx)) if isinstance(ann, dict) else str(idx)
                if key in ids and isinstance(ann, dict):
                    seg = ann.get("segmentation")
                    if isinstance(seg, list) and not sized:  # an RLE carries its size, a polygon does not
                        raise InputError(f"annotation {key} is a polygon and the file gives no image size "
                                         f"('image': {{'height', 'width'}}); use RLE segmentations",
                                         source=str(path))
                    self._masks[(stem, key)] = M.rle_from_any(seg, h or 0, w or 0, f"{path} annotation {key}")

    def get(self, stem: str, mask_id: Any) -> dict | None:
        return self._masks.get((stem, str(mask_id)))


def load_samples(paths: Iterable[str | Path], cfg: DataConfig = DataConfig()) -> list[Sample]:
    """Every sample of the given JSONL files (any mix of the three forms), checked; see the module docstring.

    Raises ``InputError`` naming ``file:line`` for the first bad line: invalid JSON, no caption, no mask, an
    image that does not exist, a mask id missing from its SA-1B file, a mask whose size differs from its image.
    """
    from .stream import iter_jsonl

    samples: list[Sample] = []
    chat: list[tuple[int, dict, str, list[tuple[str | None, str]]]] = []  # (slot, record, where, pairs)
    sa1b = SA1BMasks(cfg.masks_dir) if cfg.masks_dir is not None else None
    bases: dict[str, Path] = {}
    for path in paths:
        base = Path(path).resolve().parent if str(path) != "-" else Path.cwd()
        for item in iter_jsonl(path):
            if item.error is not None:
                raise item.error
            rec, where = item.value, item.where
            bases[where] = base
            if not isinstance(rec, dict):
                raise InputError(f"expected a JSON object, got {type(rec).__name__}", source=where)
            if "conversations" in rec or "mask_id" in rec:
                pairs, mask_id = _from_chat(rec, where)
                if sa1b is None:
                    raise InputError("released-format line (has 'conversations'): pass --masks DIR with the "
                                     "SA-1B JSON files", source=where)
                stem = Path(rec[R.IMAGE]).stem
                sa1b.want(stem, mask_id)
                chat.append((len(samples), rec, where, pairs))
                samples.append(None)  # type: ignore[arg-type]  # filled below, keeps file order
            elif R.NODES in rec:
                samples.extend(_from_image(rec, where))
            else:
                samples.append(_from_region(rec, where))
    if sa1b is not None and chat:
        sa1b.load()
        filled: dict[int, list[Sample]] = {}
        for slot, rec, where, pairs in chat:
            stem = Path(rec[R.IMAGE]).stem
            rle = sa1b.get(stem, rec["mask_id"])
            if rle is None:
                raise InputError(f"mask id {rec['mask_id']!r} is not in {sa1b.folder / (stem + '.json')}",
                                 source=where)
            base_id = R.region_id(stem, rec["mask_id"])  # the line's own "id" is a counter; keep ours
            filled[slot] = [
                Sample(base_id if len(pairs) == 1 else f"{base_id}#{k}", stem, rec[R.IMAGE], rle, cap, q, where)
                for k, (q, cap) in enumerate(pairs)
            ]
        flat: list[Sample] = []
        for i, s in enumerate(samples):
            flat.extend(filled[i] if s is None else [s])
        samples = flat
    if not samples:
        raise UrecaError("no training samples in " + ", ".join(str(p) for p in paths))
    return _check_images(samples, cfg, bases)


def _check_images(samples: list[Sample], cfg: DataConfig, bases: dict[str, Path]) -> list[Sample]:
    """Resolve image paths once per image; check each exists (and its size matches its masks)."""
    from PIL import Image

    resolved: dict[tuple[str, Path], tuple[str, tuple[int, int] | None]] = {}
    out = []
    for s in samples:
        key = (s.image, bases.get(s.where, Path.cwd()))
        if key not in resolved:
            p = _resolve_image(s.image, cfg, key[1])
            if p is None:
                where_dir = f" (looked in {cfg.images_dir})" if cfg.images_dir else ""
                raise InputError(f"image '{s.image}' does not exist{where_dir}", source=s.where)
            size = None
            if cfg.check_images:
                try:
                    with Image.open(p) as im:
                        size = im.size
                except Exception as e:  # noqa: BLE001 - PIL raises many kinds for a bad file
                    raise InputError(f"image {p} cannot be read ({type(e).__name__})", source=s.where) from None
            resolved[key] = (str(p.resolve()), size)
        path, size = resolved[key]
        if size is not None and s.rle is not None and tuple(s.rle["size"]) != (size[1], size[0]):
            h, w = s.rle["size"]
            raise InputError(f"mask is {w}x{h} but image {path} is {size[0]}x{size[1]}", source=s.where)
        image_id = s.image_id or path  # a region record without 'image_id': the resolved file is the image
        out.append(s if (path, image_id) == (s.image, s.image_id)
                   else Sample(s.id, image_id, path, s.rle, s.caption, s.question, s.where))
    return out


def scene_samples(path: str | Path, question: str) -> list[Sample]:
    """Whole-image samples (no mask) from image records that carry a ``scene_caption`` (synthetic scenes)."""
    from .stream import iter_jsonl

    out = []
    for item in iter_jsonl(path):
        if item.error is not None:
            raise item.error
        rec = item.value
        cap = _text(rec.get("scene_caption")) if isinstance(rec, dict) else None
        if cap is None:
            raise InputError("image record without 'scene_caption'", source=item.where)
        out.append(Sample(f"{rec[R.IMAGE_ID]}/scene", str(rec[R.IMAGE_ID]), rec[R.IMAGE], None, cap, question,
                          item.where))
    return out


# ------------------------------------------------------------------------------------------------ split
def _rank(image_id: str, seed: int) -> str:
    return hashlib.sha1(f"{seed}:{image_id}".encode()).hexdigest()


def split_by_image(samples: list[Sample], val_fraction: float, seed: int = 0,
                   val_max_regions: int = 0) -> tuple[list[Sample], list[Sample]]:
    """(train, val): ``ceil(val_fraction * images)`` images (at least one when the fraction is > 0 and there
    are two images or more) are held out of training with all their regions; the choice depends only on the
    image ids and the seed. ``val`` is those regions, or, when ``val_max_regions`` > 0 and they are more,
    that many of them spread over the held-out images (each image's first region in rank order, then each
    one's second, ...); the rest are neither trained on nor scored. Both lists keep the input order."""
    images = sorted({s.image_id for s in samples}, key=lambda i: _rank(i, seed))
    n_val = 0
    if val_fraction > 0 and len(images) > 1:
        n_val = min(len(images) - 1, max(1, math.ceil(val_fraction * len(images))))
    rank = {image_id: r for r, image_id in enumerate(images[:n_val])}
    train = [s for s in samples if s.image_id not in rank]
    held = [s for s in samples if s.image_id in rank]
    if not val_max_regions or len(held) <= val_max_regions:
        return train, held
    nth: dict[str, int] = defaultdict(int)
    order = []  # (region's place within its image, image's rank, index in held)
    for n, s in enumerate(held):
        order.append((nth[s.image_id], rank[s.image_id], n))
        nth[s.image_id] += 1
    keep = {n for *_, n in sorted(order)[:val_max_regions]}
    return train, [s for n, s in enumerate(held) if n in keep]


# ------------------------------------------------------------------------------------------- to tensors
def load_image_and_mask(sample: Sample) -> tuple[Any, Any]:
    """(RGB PIL image, ``HxW uint8`` 0/1 mask or ``None``) of a sample."""
    from PIL import Image

    from . import masks as M

    try:
        with Image.open(sample.image) as im:
            image = im.convert("RGB")
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds for a bad file
        raise InputError(f"image {sample.image} cannot be read ({type(e).__name__})", source=sample.where) from None
    mask = M.decode(sample.rle, sample.where) if sample.rle is not None else None
    return image, mask


def encode_sample(processor: Any, sample: Sample, *, use_mask: bool = True, with_answer: bool = True) -> dict:
    """One sample -> model inputs through the URECA processor (``ureca_cli.model.UrecaProcessor``).

    With a mask (and ``use_mask``): the processor's own layout (image, ``<mask>`` + K x tiles
    ``<MASK_CONTEXT>`` + ``</mask>``, question). Without (a whole-image sample, or the no-mask baseline of the
    ablation): the same chat prompt with the image and the question only, and ``mask_tiles`` of shape
    (0, S, S). Returns input_ids (1, L), attention_mask (1, L), pixel_values (T, 3, S, S), mask_tiles and,
    with the answer, labels (1, L) (-100 except on the answer and end-of-turn tokens).
    """
    image, mask = load_image_and_mask(sample)
    answer = sample.caption if with_answer else None
    return processor(image, mask if use_mask else None, question=sample.question or None, answer=answer)


class RegionDataset:
    """A map-style dataset (``torch.utils.data.Dataset`` protocol) of encoded samples, for the Trainer."""

    def __init__(self, samples: list[Sample], processor: Any, *, use_mask: bool = True):
        self.samples = samples
        self.processor = processor
        self.use_mask = use_mask

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        return encode_sample(self.processor, self.samples[i], use_mask=self.use_mask)
