"""A URECA model's settings and token names, without torch: what a checkpoint's ``ureca.json`` holds and what
``ureca train``'s configuration composes (``train.config.TrainConfig.model``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

PROJECTORS = ("linear", "mlp")  # the mask encoder's projection: one linear layer (released) or a 2-layer MLP

MASK_START = "<mask>"
MASK_END = "</mask>"
MASK_CONTEXT = "<MASK_CONTEXT>"
ADDED_TOKENS = (MASK_START, MASK_END, MASK_CONTEXT)
DEFAULT_QUESTION = "Describe this region in the image."
#: how images, masks and prompts are prepared: "ureca" (ours, DESIGN.md) or "released" (the paper's released
#: inference, for a model that came from its checkpoint; see `processor.py` and `model/released.py`)
PREPROCESSING = ("ureca", "released")


@dataclass(frozen=True)
class UrecaConfig:
    """Settings of a URECA model (saved as JSON in every checkpoint).

    base: hub id or local folder of an InternVL `-hf` checkpoint; None when the base's weights are embedded in
    the checkpoint (a model built in memory, such as the tiny one). tile_size must equal the vision tower's
    input size (448 for InternVL); min_tiles/max_tiles are the image (and mask) tiling bounds.
    preprocessing: "ureca" (transformers' InternVL image processor and chat template, binary mask tiles) or
    "released" (the paper's released recipe: its image tiling and normalisation, 0/255 mask tiles with an
    interpolated thumbnail, the `internvl2_5` prompt with `system_message`); set by the released checkpoint's
    loader and converter, kept by every checkpoint trained from it.
    """

    base: str | None = None
    num_mask_tokens: int = 8
    mask_projector: str = "linear"
    dynamic_mask: bool = True
    tile_size: int = 448
    min_tiles: int = 1
    max_tiles: int = 12
    question: str = DEFAULT_QUESTION
    preprocessing: str = "ureca"
    system_message: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.num_mask_tokens, int) or self.num_mask_tokens < 1:
            raise ValueError(f"num_mask_tokens must be a positive integer, got {self.num_mask_tokens!r}")
        if self.mask_projector not in PROJECTORS:
            raise ValueError(f"mask_projector must be one of {PROJECTORS}, got {self.mask_projector!r}")
        if self.tile_size < 4 or self.tile_size % 4:
            raise ValueError(f"tile_size must be a positive multiple of 4, got {self.tile_size}")
        if not 1 <= self.min_tiles <= self.max_tiles:
            raise ValueError(f"need 1 <= min_tiles <= max_tiles, got {self.min_tiles}, {self.max_tiles}")
        if not self.question.strip():
            raise ValueError("question must not be empty")
        if self.preprocessing not in PREPROCESSING:
            raise ValueError(f"preprocessing must be one of {PREPROCESSING}, got {self.preprocessing!r}")
        if self.preprocessing == "released" and not self.dynamic_mask:
            raise ValueError("the released preprocessing tiles the mask like the image (dynamic_mask must be true)")
        if self.preprocessing == "ureca" and self.system_message is not None:
            raise ValueError("system_message belongs to the released preprocessing")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UrecaConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown UrecaConfig fields: {', '.join(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class MaskTokenIds:
    """Token ids of `<mask>`, `</mask>`, `<MASK_CONTEXT>` and InternVL's image context token."""

    start: int
    end: int
    context: int
    image: int

    def added(self) -> dict[str, int]:
        return {MASK_START: self.start, MASK_END: self.end, MASK_CONTEXT: self.context}
