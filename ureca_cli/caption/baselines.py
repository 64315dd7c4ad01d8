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
from typing import Any

import numpy as np

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

    def __post_init__(self):
        if self.region_prompt not in REGION_PROMPTS:
            raise UrecaError(f"--region-prompt {self.region_prompt!r}: choose none, contour or crop")

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
        if not masks:
            return []
        text = self.cfg.text
        prompter = VisualPrompter(image, self.cfg.visual)
        if self.cfg.region_prompt == "none":  # the same request for every region of the photo
            answer = self.backend.chat([user(prompter.plain(), text)], self.cfg.generation)
            return [answer] * len(masks)
        convs = [[user(self.prompt_image(prompter, m), text)] for m in masks]
        return self.backend.chat_many(convs, self.cfg.generation)

    def stamp(self) -> dict:
        """The model, question, region prompt and backend each output record names."""
        return {"model": self.model_name, "question": self.cfg.text, "region_prompt": self.cfg.region_prompt,
                "backend": self.backend.kind}
