"""The paper's Table 2 baselines: a plain chat model told about the region only through the picture.

- ``none``: the plain photo and the question, no mark at all (every region of a photo gets the same answer,
  so it is asked once per photo);
- ``contour``: the photo with the region's outer contour drawn in yellow, 3 px wide;
- ``crop``: the photo cropped to the box of the region's pixels (nothing blurred).

Any backend of ``ureca_cli.mllm`` answers. ``ureca caption --region-prompt none|contour|crop`` writes the same
region records as the URECA model path (``caption``, an input caption kept as ``reference``, ``model``,
``question``), plus ``region_prompt`` and ``backend``, so ``ureca score`` compares them directly. With
``--save-prompts DIR`` every picture sent is written, as annotate and refine write theirs:
``DIR/<image_id>/<node>_<contour|crop>.png`` (``none``: ``DIR/<image_id>/none.png``, one per photo).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..curate.inflight import save_prompt_images
from ..errors import UrecaError
from ..mllm import ChatBackend, GenerationSettings, user
from ..prompts import package_text
from ..visual.prompter import VisualPrompter, VisualSettings
from .captioner import RegionCaptioner

REGION_PROMPTS = ("none", "contour", "crop")


def default_question(region_prompt: str) -> str:
    """The package's question for a baseline (``prompts/baseline_<kind>.txt``)."""
    return package_text(f"baseline_{region_prompt}").strip()


@dataclass(frozen=True)
class BaselineConfig:
    """Settings of one baseline run."""

    region_prompt: str = "contour"
    question: str | None = None  # None: the package's question for this region prompt
    generation: GenerationSettings = field(default_factory=lambda: GenerationSettings(max_new_tokens=64))
    visual: VisualSettings = field(default_factory=VisualSettings)
    resize_mask: bool = False
    save_prompts: Path | None = None  # write every picture sent here (DIR/<image_id>/<node>_<kind>.png)

    def __post_init__(self):
        from ..stream import check_output_folder

        if self.region_prompt not in REGION_PROMPTS:
            raise UrecaError(f"--region-prompt {self.region_prompt!r}: choose none, contour or crop")
        check_output_folder("--save-prompts", self.save_prompts)

    @property
    def text(self) -> str:
        return self.question or default_question(self.region_prompt)


class BaselineCaptioner(RegionCaptioner):
    """Captions regions through a chat backend with one of the Table 2 region prompts.

    A ``caption.RegionCaptioner``, so ``ureca caption`` reads records, groups regions by image and resumes
    exactly as it does with the URECA model.
    """

    def __init__(self, backend: ChatBackend, cfg: BaselineConfig):
        self.backend = backend
        self.cfg = cfg
        self.model_name = backend.describe()["model"]  # as records show it (the HTTP backend masks secrets)
        self.resize_mask = cfg.resize_mask

    def prompt_image(self, prompter: VisualPrompter, mask: np.ndarray) -> Any:
        """The picture sent for one region (``mask``: ``HxW`` 0/1, the photo's frame)."""
        if self.cfg.region_prompt == "contour":
            return prompter.full_contour(mask)
        if self.cfg.region_prompt == "crop":
            return prompter.crop(mask)
        return prompter.plain()

    def caption_masks(self, image: Any, masks: list[np.ndarray]) -> list[str]:
        """Captions of the regions ``masks`` (each ``HxW`` 0/1) of one RGB PIL image, up to the backend's
        concurrency at once."""
        return self.caption_named(image, masks, None)

    def caption_named(self, image: Any, masks: list[np.ndarray], names: list[tuple[str, str]] | None) -> list[str]:
        """``caption_masks``; with ``save_prompts``, each picture is written first under its region's ``names``
        (``(image id, node)``)."""
        if not masks:
            return []
        text = self.cfg.text
        prompter = VisualPrompter(image, self.cfg.visual)
        save = self.cfg.save_prompts is not None and names is not None
        if self.cfg.region_prompt == "none":  # the same request for every region of the photo
            picture = prompter.plain()
            if save:
                save_prompt_images(self.cfg.save_prompts, names[0][0], None, [picture], ["none"])
            answer = self.backend.chat([user(picture, text)], self.cfg.generation)
            return [answer] * len(masks)
        pictures = [self.prompt_image(prompter, m) for m in masks]
        if save:
            for (image_id, node), picture in zip(names, pictures, strict=True):
                save_prompt_images(self.cfg.save_prompts, image_id, node, [picture], [self.cfg.region_prompt])
        return self.backend.chat_many([[user(p, text)] for p in pictures], self.cfg.generation)

    def stamp(self) -> dict:
        """The model, question, region prompt and backend each output record names."""
        return {"model": self.model_name, "question": self.cfg.text, "region_prompt": self.cfg.region_prompt,
                "backend": self.backend.kind}
