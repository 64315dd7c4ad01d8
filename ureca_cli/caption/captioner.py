"""`ureca caption`: caption regions of images with a URECA checkpoint.

Regions come as masks (PNG: any non-zero pixel, or the alpha channel of an RGBA PNG), COCO RLEs, boxes, or
from JSONL: region records (`{"id", "image_id", "image", "rle"}`) or image/tree records (every node is
captioned). All regions of one image share one image encoding: the vision tower runs once and the prompt up to
`<mask>` is prefilled once (`UrecaModel.generate_shared`); consecutive region records of the same image are
grouped for this. Output: region records `{"id", "image_id", "image", "caption", ...}` that `ureca score` reads.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import masks as M
from .. import records as R
from ..errors import UrecaError
from ..images import load_image
from ..masks.regions import fit_mask, region_masks

MAX_GROUP = 256  # most consecutive region records of one image captioned together


@dataclass(frozen=True)
class CaptionConfig:
    """Settings of `ureca caption`. device "auto": CUDA when present, else the CPU. dtype "auto": bfloat16 on
    CUDA; on the CPU the dtype the weights are stored in (bfloat16 for InternVL's -hf checkpoints), read
    memory-mapped as they are, unless this CPU has no fast bfloat16 (or the weights are float16), then float32.
    A ``Captioner`` keeps ``timings`` (where the time goes), which ``--verbose`` prints."""

    model: Path
    question: str | None = None
    max_new_tokens: int = 64
    sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    batch_size: int = 8
    device: str = "auto"
    dtype: str = "auto"
    resize_mask: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise UrecaError(f"--max-new-tokens {self.max_new_tokens}: needs at least 1")
        if self.batch_size < 1:
            raise UrecaError(f"--batch-size {self.batch_size}: needs at least 1")
        if not math.isfinite(self.temperature):
            raise UrecaError(f"--temperature {self.temperature}: needs a finite number above 0")
        if self.temperature <= 0:
            raise UrecaError(f"--temperature {self.temperature}: must be above 0 (decoding is greedy unless --sample)")
        if not 0 < self.top_p <= 1:
            raise UrecaError(f"--top-p {self.top_p}: must be in (0, 1]")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise UrecaError(f"--dtype {self.dtype!r}: choose auto, float32, bfloat16 or float16")
        if self.question is not None and not self.question.strip():
            raise UrecaError("--question must not be empty")


# ------------------------------------------------------------------------------------------ records
class RegionCaptioner:
    """Region records in, region records out, for any captioner of `ureca caption` (the URECA model here, the
    Table 2 baselines in `baselines.py`). A subclass gives `caption_masks(image, masks)` (an RGB PIL image and
    its regions as HxW 0/1 masks of the image's size -> one caption each), `stamp()` (the fields that say how
    a caption was made) and `resize_mask` (resize a mask of another size, nearest, instead of failing)."""

    resize_mask: bool = False

    def caption_masks(self, image: Any, masks: list[np.ndarray]) -> list[str]:
        raise NotImplementedError

    def caption_named(self, image: Any, masks: list[np.ndarray], names: list[tuple[str, str]]) -> list[str]:
        """``caption_masks``, told each region's name: ``(image id, node)``, its id ``"<image id>/<node>"`` (for
        a captioner that writes files per region, such as the baselines' ``--save-prompts``)."""
        return self.caption_masks(image, masks)

    def stamp(self) -> dict[str, Any]:
        raise NotImplementedError

    def region_record(self, base: dict, caption: str) -> dict:
        """`base` (a region record) with the caption and the stamp; an input caption is kept as `reference`, and
        a record without `image_id` gets its image's (`records.image_key`)."""
        out = dict(base)
        if R.CAPTION in out:
            out["reference"] = out.pop(R.CAPTION)
        if out.get(R.IMAGE_ID) is None:
            out[R.IMAGE_ID] = R.image_key(base)
        out[R.SCHEMA] = R.SCHEMA_VERSION
        out[R.CAPTION] = caption
        out.update(self.stamp())
        return out

    def caption_regions(self, regions: list[dict], where: str = "") -> list[dict]:
        """Caption checked region records (``datasets``' rules) that all name the same image, loaded once;
        returns their output records. A mask of another size than the image, or an empty one, fails."""
        if not regions:
            return []
        image = load_image(regions[0][R.IMAGE], where=where)
        masks = []
        for rec in regions:
            what = _at(where, f"region {rec[R.ID]}")
            masks.append(fit_mask(M.decode(rec[R.RLE], what), image.size, what, self.resize_mask))
        captions = self.caption_named(image, masks, [_name_of(rec) for rec in regions])
        return [self.region_record(rec, c) for rec, c in zip(regions, captions, strict=True)]

    def work(self, regions: list[dict], where: str = "") -> list[dict]:
        """The region records of one input record (a region record, or every node of an image record that has a
        pixel) -> their output records."""
        return self.caption_regions(regions, where)


# ------------------------------------------------------------------------------------------ the model
class Captioner(RegionCaptioner):
    """A loaded URECA checkpoint that captions masks of an image (`caption_masks`) and records (`work`)."""

    def __init__(self, cfg: CaptionConfig):
        import time

        start = time.perf_counter()
        import torch
        import transformers  # noqa: F401 - the libraries' own start-up, timed apart from the weights

        from ..model.checkpoint import load_checkpoint

        transformers.AutoProcessor, transformers.InternVLForConditionalGeneration  # noqa: B018 - their imports
        self.timings = Timings(imports=time.perf_counter() - start)
        self.cfg = cfg
        device = cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = cfg.dtype
        if dtype == "auto":
            dtype = "bfloat16" if device.startswith("cuda") else "auto"  # CPU: as the weights are stored
        try:
            torch.device(device)
        except (RuntimeError, ValueError):
            raise UrecaError(f"--device {cfg.device!r}: not a torch device (cpu, cuda, cuda:1, ...)") from None
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UrecaError(f"--device {device}: CUDA is not available on this machine")
        start = time.perf_counter()
        self.model = load_checkpoint(cfg.model, device=device, dtype=dtype)
        if dtype == "auto" and not cpu_computes(self.model.dtype):
            self.model.to(torch.float32)
        self.timings.load = time.perf_counter() - start
        self.timings.dtype = str(self.model.dtype).removeprefix("torch.")
        self.processor = self.model.processor
        self.model_name = Path(cfg.model).name
        self.resize_mask = cfg.resize_mask

    def _generate_kwargs(self) -> dict[str, Any]:
        tok = self.processor.tokenizer
        kw: dict[str, Any] = {
            "max_new_tokens": self.cfg.max_new_tokens,
            "do_sample": self.cfg.sample,
            "eos_token_id": self.processor.end_of_turn_id,
            "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else self.processor.end_of_turn_id,
        }
        if self.cfg.sample:
            kw.update(temperature=self.cfg.temperature, top_p=self.cfg.top_p)
        else:
            kw.update(temperature=None, top_p=None, top_k=None)
        return kw

    def _decode(self, ids) -> str:
        ids = ids.tolist()
        end = self.processor.end_of_turn_id
        if end in ids:
            ids = ids[:ids.index(end)]
        return self.processor.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def caption_masks(self, image, masks: list[np.ndarray], question: str | None = None) -> list[str]:
        """Captions of the regions `masks` (each HxW 0/1, the image's size) of one PIL image, the image encoded
        once for all of them."""
        import time

        import torch

        if not masks:
            return []
        torch.manual_seed(self.cfg.seed)
        question = question or self.cfg.question
        proc = self.processor
        start = time.perf_counter()
        first = proc(image, masks[0], question)
        tiles = [first["mask_tiles"]] + [torch.from_numpy(proc.mask_tiles(m)) for m in masks[1:]]
        mid = time.perf_counter()
        if len(masks) == 1:
            outs = [self.model.generate(**first, **self._generate_kwargs())[0]]
        else:
            outs = self.model.generate_shared(first["input_ids"], first["pixel_values"], tiles,
                                              batch_size=self.cfg.batch_size, **self._generate_kwargs())
        captions = [self._decode(o) for o in outs]
        self.timings.add(mid - start, time.perf_counter() - mid, len(masks))
        return captions

    def stamp(self) -> dict[str, Any]:
        """The model and the question each output record names."""
        return {"model": self.model_name, "question": self.cfg.question or self.processor.config.question}


@dataclass
class Timings:
    """Where a caption run's time goes (seconds), for ``--verbose``: ``imports`` (torch and transformers start),
    ``load`` (the checkpoint into the model, in ``dtype``), ``preprocess`` (image tiles, mask tiles, tokens),
    ``generate`` (vision encoding, prefill and decoding) over ``images`` images and ``regions`` regions."""

    imports: float = 0.0
    load: float = 0.0
    dtype: str = ""
    preprocess: float = 0.0
    generate: float = 0.0
    images: int = 0
    regions: int = 0

    def add(self, preprocess: float, generate: float, regions: int) -> None:
        self.preprocess += preprocess
        self.generate += generate
        self.images += 1
        self.regions += regions

    def line(self) -> str:
        total = self.imports + self.load + self.preprocess + self.generate
        return (f"imports {self.imports:.1f} s, load {self.load:.1f} s ({self.dtype} weights), preprocess "
                f"{self.preprocess:.2f} s, generate {self.generate:.1f} s ({self.regions} region(s) of "
                f"{self.images} image(s)); {total:.1f} s in all")


def cpu_computes(dtype: Any) -> bool:
    """Whether the CPU runs a model of ``dtype`` at speed: float32 always; bfloat16 where torch's oneDNN says it
    supports it (AVX-512 CPUs, native with AVX512-BF16 or AMX; on AVX2-only CPUs it is emulated and slower than
    float32); float16 not."""
    import torch

    if dtype == torch.float32:
        return True
    if dtype == torch.bfloat16:
        check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        try:
            return bool(check()) if check is not None else False
        except RuntimeError:
            return False
    return False


def _at(where: str, what: str) -> str:
    return f"{where} {what}" if where else what


def _name_of(rec: dict) -> tuple[str, str]:
    """``(image id, node)`` of a region record: its ``image_id`` (else its image's, ``records.image_id_for``) and
    its id without that image id in front."""
    image_id = str(rec.get(R.IMAGE_ID) or R.image_id_for(None, rec[R.IMAGE]))
    rid = str(rec[R.ID])
    return image_id, rid[len(image_id) + 1:] if rid.startswith(f"{image_id}/") else rid


def _input_key(regions: Any) -> Any:
    """--resume key of an input record: its last region's id (an image's records are written together, so its
    last one present means the image is done)."""
    return regions[-1][R.ID] if isinstance(regions, list) and regions else None


def _image_of(item: Any) -> str | None:
    return item.value[0][R.IMAGE] if item.error is None and item.value else None


def grouping_mapper(captioner: RegionCaptioner,
                    prepare: Callable[[list[dict], str], None] | None = None) -> Callable[[Callable, Iterable], Iterator]:
    """A `run_stage` mapper that captions consecutive input records of the same image together (one image
    encoding, at most `MAX_GROUP` regions), and everything else one item at a time. If a group fails, its items
    are retried one by one so each bad record gets its own message. `prepare(regions, where)`, when given, runs
    on a group's regions first (the masks of box regions, made with one SAM encoding for the image)."""
    from ..stream import call_safely

    def run_group(group: list) -> list[list[dict]]:
        regions = [r for it in group for r in it.value]
        if prepare is not None:
            prepare(regions, group[0].where)
        out = captioner.caption_regions(regions, group[0].where)
        split, start = [], 0
        for it in group:
            split.append(out[start:start + len(it.value)])
            start += len(it.value)
        return split

    def mapper(fn: Callable, items: Iterable) -> Iterator:
        group: list = []
        size = 0

        def flush() -> Iterator:
            nonlocal size
            if len(group) == 1:
                yield group[0], call_safely(fn, group[0])
            elif group:
                ok, result = call_safely(run_group, group)
                if ok:
                    for it, recs in zip(group, result, strict=True):
                        yield it, (True, recs)
                else:
                    for it in group:
                        yield it, call_safely(fn, it)
            group.clear()
            size = 0

        for item in items:
            image = _image_of(item)
            if image is None:
                yield from flush()
                yield item, call_safely(fn, item)
                continue
            if group and (image != _image_of(group[0]) or size + len(item.value) > MAX_GROUP):
                yield from flush()
            group.append(item)
            size += len(item.value)
        yield from flush()

    return mapper


# ------------------------------------------------------------------------------------------ the command
def image_regions(image: Path, masks: list[Path], rles: list[str], boxes: list[str],
                  resize: bool) -> tuple[Any, list[np.ndarray]]:
    """IMAGE and its regions as the command line gives them, checked before any model loads: the RGB PIL
    image and one HxW uint8 0/1 mask of its size per region, in the order --mask, --rle, --box."""
    picture = load_image(image)
    regions = region_masks(picture.size, mask=masks, rle=rles, box=boxes)
    return picture, [fit_mask(m, picture.size, what, resize) for what, m in regions]


def write_image_regions(image: Path, picture: Any, bitmaps: list[np.ndarray], captioner: RegionCaptioner,
                        output: Path | None, extra: list[dict] | None = None, save_masks: Path | None = None) -> None:
    """Caption the regions of one image and write one region record each: ``image_id`` by the package's one rule
    (``records.image_id_for``: ``sa_900003.jpg`` -> ``900003``, as ``ureca tree`` names it), ids
    ``<image_id>/<i>`` for the i-th region given. ``extra``: fields per region to add to its record (SAM's
    ``sam`` block); ``save_masks``: a folder for each region's mask PNG (``caption/sam_regions.save_mask_pngs``),
    written once the records are."""
    from ..stream import JsonlWriter

    image_id = R.image_id_for(None, image)
    captions = captioner.caption_named(picture, bitmaps, [(image_id, str(i)) for i in range(len(bitmaps))])
    extra = extra or [{} for _ in bitmaps]
    writer = JsonlWriter(output)
    try:
        writer.write_many([
            captioner.region_record({R.ID: R.region_id(image_id, i), R.IMAGE_ID: image_id, R.IMAGE: str(image),
                                     R.WIDTH: picture.width, R.HEIGHT: picture.height, R.RLE: M.encode(bitmap),
                                     R.BBOX: list(M.pixel_box(bitmap) or ()), **more}, text)
            for i, (bitmap, text, more) in enumerate(zip(bitmaps, captions, extra, strict=True))
        ])
    finally:
        writer.close()
    if save_masks is not None:
        from .sam_regions import save_mask_pngs

        save_mask_pngs(save_masks, image_id, bitmaps)


def check_input(input: Path) -> None:
    """Fail on a missing or unreadable --input before any model loads (``-`` is stdin; a folder must be a benchmark
    folder ``datasets`` reads, such as DLC-Bench's)."""
    from ..datasets import benchmark_folder, check_not_pickle
    from ..stream import open_binary

    if str(input) != "-" and Path(input).is_dir():
        benchmark_folder(Path(input))
        return
    fh = open_binary(input)  # stdin: refused when closed or a terminal; a file: named when unreadable
    if str(input) != "-":
        fh.close()
        check_not_pickle(input)  # a pickle is refused before any model loads, never read


def caption_input(input: Path, captioner: RegionCaptioner, scfg: Any, fmt: str = "auto",
                  opts: Any = None) -> Any:
    """``--input`` records (any format ``datasets`` reads; ``opts``: its ``ReadOptions``) through ``captioner``
    under the stream contract; returns run_stage's summary. With ``opts.box_to_mask`` (``--box-to-mask sam``), the
    masks of box regions are made here, only for the inputs this run captions (not those ``--shard`` or
    ``--resume`` set aside), and once per image for its consecutive records (``datasets.box_masks``)."""
    from ..datasets import ReadOptions, box_masks, read
    from ..stream import run_stage

    opts = opts or ReadOptions()
    opts = replace(opts, need=(R.IMAGE, R.RLE), captioned_only=False)
    work, prepare = captioner.work, None
    if opts.box_to_mask is not None:
        to_mask = opts.box_to_mask

        def prepare(regions: list[dict], where: str) -> None:
            box_masks(regions, where, to_mask)

        def work(regions: list[dict]) -> list[dict]:
            prepare(regions, "")
            return captioner.work(regions)

    return run_stage("caption", read(input, fmt, opts), work, scfg, input_key=_input_key,
                     output_key=lambda rec: rec.get(R.ID), mapper=grouping_mapper(captioner, prepare), unit="inputs",
                     shard_key=lambda regions: R.image_key(regions[0]), key_name="region id",
                     unique_keys=lambda regions: [r[R.ID] for r in regions], group_key=R.image_key)
