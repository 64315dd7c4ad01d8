"""The SAM options ``caption`` and ``tree`` share (``--sam-model``, ``--sam-dtype``), and the settings of
automatic mask generation as one group of ``tree`` options (``@amg_options()``, as ``chat.py`` does for the chat
options): every field of ``sam.AmgConfig`` is an option, its default SAM's.

The group's options default to "not given", so a command can refuse them where they do nothing (``tree``
without ``--generate-masks``) and ``AmgOptions.config()`` fills in SAM's defaults for the rest.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Annotated, Any

import typer

from ..sam import DEFAULT_SAM_MODEL, AmgConfig
from .common import option_group

SamModelOpt = Annotated[
    str | None,
    typer.Option("--sam-model", metavar="ID|DIR", help=f"SAM or SAM 2 checkpoint: a hub id or a local folder "
                 f"(default {DEFAULT_SAM_MODEL}). Offline: a folder from `hf download {DEFAULT_SAM_MODEL} "
                 "--local-dir DIR`.", show_default=False),
]
SamDtypeOpt = Annotated[
    str | None,
    typer.Option("--sam-dtype", help="SAM's dtype: auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16, "
                 "float16.", show_default=False),
]

# AmgConfig field -> help (the default is appended from AmgConfig)
AMG_HELP: dict[str, str] = {
    "points_per_side": "Grid of point prompts per image side (n x n points).",
    "points_per_batch": "Points through SAM's mask decoder in one call (more: faster on a GPU, more memory).",
    "pred_iou_thresh": "Keep masks whose predicted IoU is above this; 0 turns the filter off.",
    "stability_score_thresh": "Keep masks whose stability score is at least this; 0 turns the filter off.",
    "stability_score_offset": "Logit offset of the stability score (mask at +offset against -offset).",
    "box_nms_thresh": "Box IoU above which the lower-scored of two masks of one crop is dropped.",
    "crop_n_layers": "Layers of zoomed crops (0: the whole image only; layer i adds (2^i)^2 crops).",
    "crop_nms_thresh": "Box IoU of the suppression across crops (the smaller crop's mask is kept).",
    "crop_overlap_ratio": "Overlap of neighbouring crops, as a fraction of the image's short side.",
    "crop_n_points_downscale_factor": "The grid per side is divided by this at each crop layer.",
    "min_area": "Drop masks with fewer pixels (1: only empty ones).",
}


def amg_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class AmgOptions:
    """The automatic-mask-generation options given on one command line (field -> value; the rest not given)."""

    values: dict[str, Any] = field(default_factory=dict)

    def given(self) -> list[str]:
        """The flags given, in ``AmgConfig`` field order."""
        return [amg_flag(f.name) for f in fields(AmgConfig) if f.name in self.values]

    def config(self) -> AmgConfig:
        """The settings: the options given, SAM's defaults for the others (checked by ``AmgConfig``)."""
        return AmgConfig(**self.values)


def _parameter(name: str) -> inspect.Parameter:
    default = getattr(AmgConfig(), name)
    kind = int | None if isinstance(default, int) else float | None
    value = f"{default:.4g}" if isinstance(default, float) else str(default)
    option = typer.Option(amg_flag(name), help=f"{AMG_HELP[name]} Default: {value}.", show_default=False)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind, option])


def amg_options(param: str = "amg") -> Callable[[Callable], Callable]:
    """Decorate a command: its ``param`` (an ``AmgOptions``) becomes one option per ``AmgConfig`` field."""
    names = [f.name for f in fields(AmgConfig)]
    missing = sorted(set(names) - set(AMG_HELP))
    if missing:
        raise TypeError(f"AMG_HELP lacks {missing}")

    return option_group(names, param, _parameter,
                        lambda values: AmgOptions({n: v for n, v in values.items() if v is not None}))
