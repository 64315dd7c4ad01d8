"""Training data for ``ureca train``: region samples from any file ``ureca_cli.datasets`` reads.

The readers (``datasets.READERS``; the format is detected from each file's first record, or named with
``--format``): our region records (``ureca refine --flat``, ``ureca_cli.train.synthetic``) and image records
(``ureca refine``: every node with a caption is a sample; a record with none is an error), which may mix in one
file; and the released dataset's InternVL chat JSONL, whose images are found in ``--images DIR`` and masks in
``--masks DIR/<image stem>.json`` (SA-1B's per-image JSON; each file read once for all its lines).

Every bad line stops loading with one ``InputError`` naming ``file:line`` and what is wrong, before anything
is trained or written. Masks stay COCO compressed RLE (``{"size": [H, W], "counts": str}``) until a batch is
built. The validation split is by image (``records.image_key``): an image's regions are all on one side.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import records as R
from ..errors import InputError, UrecaError
from ..images import image_size, load_image


@dataclass(frozen=True)
class Sample:
    """One training example: a region of an image and its caption.

    ``rle`` is a COCO compressed RLE of the region (``HxW`` of the image), or ``None`` for a whole-image
    caption (no mask). ``question`` is ``None`` for the model's default question. ``where`` is ``file:line``.
    ``image_id`` is ``records.image_key`` of its record: the record's, or the resolved image path for a region
    record without one (the validation split keys on it, so it must be the same for every region of an image).
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
    format: str = "auto"  # a name in datasets.READERS, or auto: detected from each file's first record
    val_fraction: float = 0.05  # fraction of images held out (0: no validation split)
    val_max_regions: int = 200  # cap on held-out regions captioned and scored at the end (0: no cap)
    seed: int = 0
    check_images: bool = True  # open every image's header once to check it exists and its size

    def __post_init__(self):
        if not 0 <= self.val_fraction < 1:
            raise UrecaError(f"--val-fraction {self.val_fraction}: needs 0 <= f < 1")
        if self.val_max_regions < 0:
            raise UrecaError("--val-max-regions: needs >= 0")
        if self.format != "auto":
            from ..datasets import reader

            reader(self.format)  # an unknown name is one error now
        self.read_options()  # --images and --masks are folders


    def read_options(self) -> Any:
        """How ``datasets`` reads training data: image, mask and caption needed, captioned nodes only."""
        from ..datasets import ReadOptions

        return ReadOptions(need=(R.IMAGE, R.RLE, R.CAPTION), images=self.images_dir, masks=self.masks_dir)


# ----------------------------------------------------------------------------------------------- reading
def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def load_samples(paths: Iterable[str | Path], cfg: DataConfig = DataConfig()) -> list[Sample]:
    """Every sample of the given files (each in any format ``datasets`` reads), checked; see the module docstring.

    Raises ``InputError`` naming ``file:line`` for the first bad line: invalid JSON, no caption, no mask, a mask
    that breaks the one mask rule (``masks.rle``: runs that do not cover its size, no pixel set), an image that
    does not exist, a mask id missing from its SA-1B file, a mask whose size differs from its image.
    """
    from ..datasets import read
    from ..masks.rle import region_area

    opts = cfg.read_options()
    samples: list[Sample] = []
    for path in paths:
        for unit in read(path, cfg.format, opts):
            if unit.error is not None:
                raise unit.error
            if not unit.value:  # only an image record holds no region
                raise InputError("image record with no captioned node (run `ureca annotate` / `refine` first)",
                                 source=unit.where)
            for r in unit.value:  # the one mask rule (masks.rle): well-formed runs, at least one pixel
                region_area(r[R.RLE], None, f"{unit.where} region {r[R.ID]}")
                samples.append(Sample(r[R.ID], R.image_key(r), r[R.IMAGE], r[R.RLE], R.captions_of(r)[0].strip(),
                                      _text(r.get(R.QUESTION)), unit.where))
    if not samples:
        raise UrecaError("no training samples in " + ", ".join(str(p) for p in paths))
    if cfg.check_images:
        _check_sizes(samples)
    return samples


def _check_sizes(samples: list[Sample]) -> None:
    """Each image exists and decodes its header, and its size is its masks' (read once per image)."""
    sizes: dict[str, tuple[int, int]] = {}
    for s in samples:
        if s.image not in sizes:
            sizes[s.image] = image_size(s.image, s.where)
        w, h = sizes[s.image]
        if s.rle is not None and tuple(s.rle["size"]) != (h, w):
            mh, mw = s.rle["size"]
            raise InputError(f"mask is {mw}x{mh} but image {s.image} is {w}x{h}", source=s.where)


def scene_samples(path: str | Path, question: str) -> list[Sample]:
    """Whole-image samples (no mask) from image records that carry a ``scene_caption`` (synthetic scenes)."""
    from ..stream import iter_jsonl

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
    from .. import masks as M

    image = load_image(sample.image, where=sample.where)
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
