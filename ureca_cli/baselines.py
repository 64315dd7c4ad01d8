"""The paper's Table 2 baselines: a plain chat model told about the region only through the picture.

- ``none``: the plain photo and the question, no mark at all (every region of a photo gets the same answer,
  so it is asked once per photo);
- ``contour``: the photo with the region's outer contour drawn in yellow, 3 px wide;
- ``crop``: the photo cropped to the box of the region's pixels (nothing blurred).

Any backend of ``ureca_cli.mllm`` answers. ``ureca caption --region-prompt none|contour|crop`` writes the same
region records as the URECA model path (``caption``, an input caption kept as ``reference``, ``model``,
``question``), plus ``region_prompt`` and ``backend``, so ``ureca score`` compares them directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from . import masks as M
from . import records as R
from .errors import UrecaError
from .mllm import ChatBackend, GenerationSettings, user
from .visual import VisualPrompter, VisualSettings

REGION_PROMPTS = ("none", "contour", "crop")


def default_question(region_prompt: str) -> str:
    """The package's question for a baseline (``prompts/baseline_<kind>.txt``)."""
    return (resources.files("ureca_cli") / "prompts" / f"baseline_{region_prompt}.txt").read_text("utf-8").strip()


@dataclass(frozen=True)
class BaselineConfig:
    """Settings of one baseline run."""

    region_prompt: str = "contour"
    question: str | None = None  # None: the package's question for this region prompt
    generation: GenerationSettings = field(default_factory=lambda: GenerationSettings(max_new_tokens=64))
    visual: VisualSettings = field(default_factory=VisualSettings)
    resize_mask: bool = False

    def __post_init__(self):
        if self.region_prompt not in REGION_PROMPTS:
            raise UrecaError(f"--region-prompt {self.region_prompt!r}: choose none, contour or crop")

    @property
    def text(self) -> str:
        return self.question or default_question(self.region_prompt)


class BaselineCaptioner:
    """Captions regions through a chat backend with one of the Table 2 region prompts.

    Duck-compatible with ``caption.Captioner`` where ``ureca caption`` needs it (``caption_masks``,
    ``caption_regions``, ``caption_tree``, ``work``, ``_record``), so the command's grouping and resume apply.
    """

    def __init__(self, backend: ChatBackend, cfg: BaselineConfig):
        self.backend = backend
        self.cfg = cfg
        self.model_name = backend.model

    def prompt_image(self, prompter: VisualPrompter, mask: np.ndarray) -> Any:
        """The picture sent for one region (``mask``: ``HxW`` 0/1, the photo's frame)."""
        if self.cfg.region_prompt == "contour":
            return prompter.full_contour(mask)
        if self.cfg.region_prompt == "crop":
            return prompter.crop(mask)
        return prompter.plain()

    def caption_masks(self, image: Any, masks: list[np.ndarray], question: str | None = None) -> list[str]:
        """Captions of the regions ``masks`` (each ``HxW`` 0/1) of one RGB PIL image, up to the backend's
        concurrency at once."""
        if not masks:
            return []
        text = question or self.cfg.text
        prompter = VisualPrompter(image, self.cfg.visual)
        if self.cfg.region_prompt == "none":  # the same request for every region of the photo
            answer = self.backend.chat([user(prompter.plain(), text)], self.cfg.generation)
            return [answer] * len(masks)
        convs = [[user(self.prompt_image(prompter, m), text)] for m in masks]
        return self.backend.chat_many(convs, self.cfg.generation)

    def _record(self, base: dict, caption: str, question: str | None = None) -> dict:
        out = dict(base)
        if R.CAPTION in out:
            out["reference"] = out.pop(R.CAPTION)
        out[R.CAPTION] = caption
        out["model"] = self.model_name
        out["question"] = question or self.cfg.text
        out["region_prompt"] = self.cfg.region_prompt
        out["backend"] = self.backend.kind
        return out

    def _masks(self, image: Any, items: list[tuple[str, dict]]) -> list[np.ndarray]:
        from .caption import fit_mask

        out = []
        for what, rle in items:
            R.check_rle(rle, what)
            out.append(fit_mask(M.decode(rle, what), image.size, what, self.cfg.resize_mask))
        return out

    def caption_regions(self, regions: list[dict], where: str = "") -> list[dict]:
        """Caption region records that all name the same image; returns their output records."""
        from .caption import load_image

        image = load_image(regions[0][R.IMAGE], where)
        masks = self._masks(image, [(_at(where, f"region {r.get(R.ID)}"), r.get(R.RLE)) for r in regions])
        captions = self.caption_masks(image, masks)
        return [self._record(r, c) for r, c in zip(regions, captions, strict=True)]

    def caption_tree(self, rec: dict, where: str = "") -> list[dict]:
        """Caption every node of an image (tree) record; one region record per node, in node order."""
        from .caption import load_image

        R.check_image_record(rec, where)
        image = load_image(rec[R.IMAGE], where)
        nodes = rec[R.NODES]
        masks = self._masks(image, [(_at(where, f"node {n[R.ID]}"), n[R.RLE]) for n in nodes])
        captions = self.caption_masks(image, masks)
        extra = (R.ROLE, R.DEPTH, R.PARENT)
        return [
            self._record(R.to_region_record(rec, n, **{k: n[k] for k in extra if k in n}), c)
            for n, c in zip(nodes, captions, strict=True)
        ]

    def work(self, value: Any, where: str = "") -> list[dict]:
        """One input record (region or image record) -> its output region records."""
        from .caption import check_region_record

        if R.is_image_record(value):
            return self.caption_tree(value, where)
        check_region_record(value, where)
        return self.caption_regions([value], where)


def caption_one_image(image_path: Path, bitmaps: list[np.ndarray], captioner: BaselineCaptioner,
                      writer: Any) -> None:
    """Write one region record per bitmap (``HxW`` 0/1) of one image, ids ``<stem>/<i>`` as ``ureca caption``."""
    from .caption import load_image

    picture = load_image(image_path)
    captions = captioner.caption_masks(picture, bitmaps)
    for i, (bitmap, text) in enumerate(zip(bitmaps, captions, strict=True)):
        base = {"id": f"{image_path.stem}/{i}", "image_id": image_path.stem, "image": str(image_path),
                "width": picture.width, "height": picture.height, "rle": M.encode(bitmap),
                "bbox": list(M.pixel_box(bitmap) or ())}
        writer.write(captioner._record(base, text))


def _at(where: str, what: str) -> str:
    return f"{where} {what}" if where else what


def run_cli(image: Path | None, masks: list[Path], rles: list[str], boxes: list[str], input: Path | None,
            backend: ChatBackend, cfg: BaselineConfig, scfg: Any) -> None:
    """What ``ureca caption --region-prompt ...`` does: IMAGE with its regions, or ``--input`` records."""
    from .caption import (
        fit_mask,
        grouping_mapper,
        load_image,
        mask_from_box,
        mask_from_png,
        mask_from_rle,
        record_key,
    )
    from .stream import JsonlWriter, iter_jsonl, run_stage

    captioner = BaselineCaptioner(backend, cfg)
    if input is None:
        assert image is not None
        picture = load_image(image)
        regions = [(str(p), mask_from_png(p)) for p in masks]
        regions += [("--rle", mask_from_rle(t)) for t in rles]
        regions += [(f"--box {t}", mask_from_box(t, picture.size)) for t in boxes]
        bitmaps = [fit_mask(m, picture.size, what, cfg.resize_mask) for what, m in regions]
        writer = JsonlWriter(scfg.output)
        try:
            caption_one_image(image, bitmaps, captioner, writer)
        finally:
            writer.close()
        return
    if str(input) != "-" and not Path(input).is_file():
        raise UrecaError(f"--input {input}: no such file")
    run_stage(
        "caption",
        iter_jsonl(input),
        captioner.work,
        scfg,
        input_key=record_key,
        output_key=lambda rec: rec.get("id"),
        mapper=grouping_mapper(captioner),  # type: ignore[arg-type]
        unit="records",
    )
