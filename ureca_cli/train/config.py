"""The settings of ``ureca train``, composed of the parts they belong to; defaults are the paper's (Appendix A).

``TrainConfig`` holds the model it trains as the model's own ``UrecaConfig`` (what the checkpoint will say),
and the optimisation (``OptimConfig``), LoRA (``LoraConfig``), data (``data.DataConfig``) and validation
(``ValConfig``) parts, each checked in ``__post_init__``. ``OPTIONS`` maps the command line's options onto
those parts, once: ``TrainConfig.from_options`` builds a config from them, ``options()`` gives them back (what
``train_config.json`` records), and stage 2 names the ones that contradict ``--init`` by their flags.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import UrecaError
from ..model.config import PROJECTORS, UrecaConfig
from .data import DataConfig

STAGES = ("1", "2", "both")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DEFAULT_BASE = "OpenGVLab/InternVL3-1B-hf"


@dataclass(frozen=True)
class OptimConfig:
    """The optimiser, schedule and batch; ``lr_stage1``/``lr_stage2`` are each stage's peak learning rate."""

    lr_stage1: float = 2e-4
    lr_stage2: float = 4e-5
    epochs: float = 2.0  # per stage
    max_steps: int = -1  # per stage; -1: use epochs
    global_batch: int = 16  # samples per optimizer step over all processes
    per_device_batch: int = 4  # an upper bound: lowered to divide the global batch per process
    warmup_ratio: float = 0.03
    weight_decay: float = 0.01
    scheduler: str = "cosine"  # a transformers SchedulerType
    gradient_checkpointing: bool = True

    def __post_init__(self):
        flags = {"lr_stage1": "--lr-stage1", "lr_stage2": "--lr-stage2", "epochs": "--epochs",
                 "weight_decay": "--weight-decay", "warmup_ratio": "--warmup-ratio"}
        for name, flag in flags.items():
            if not math.isfinite(getattr(self, name)):
                raise UrecaError(f"{flag} {getattr(self, name)}: needs a finite number")
        for name in ("lr_stage1", "lr_stage2", "epochs"):
            if getattr(self, name) <= 0:
                raise UrecaError(f"--{name.replace('_', '-')}: needs a positive value")
        for name, flag in (("global_batch", "--global-batch"), ("per_device_batch", "--batch-size")):
            if getattr(self, name) < 1:
                raise UrecaError(f"{flag}: needs at least 1")
        if not 0 <= self.warmup_ratio < 1 or self.weight_decay < 0:
            raise UrecaError("--warmup-ratio needs [0, 1); --weight-decay >= 0")
        if self.max_steps == 0 or self.max_steps < -1:
            raise UrecaError("--max-steps needs -1 or >= 1")
        from transformers import SchedulerType

        if self.scheduler not in {s.value for s in SchedulerType}:
            raise UrecaError(f"--scheduler {self.scheduler!r}: choose one of transformers' "
                             f"{', '.join(s.value for s in SchedulerType)}")

    def lr(self, stage: str) -> float:
        return self.lr_stage1 if stage == "1" else self.lr_stage2


@dataclass(frozen=True)
class LoraConfig:
    """Stage 2's LoRA on the language model (peft; targets ``model.ureca.LORA_TARGET_REGEX``)."""

    r: int = 128
    alpha: int = 256
    dropout: float = 0.05

    def __post_init__(self):
        for name in ("r", "alpha"):
            if getattr(self, name) < 1:
                raise UrecaError(f"--lora-{name}: needs at least 1")
        if not 0 <= self.dropout < 1:
            raise UrecaError("--lora-dropout needs [0, 1)")


@dataclass(frozen=True)
class ValConfig:
    """The validation pass at the end: held-out regions captioned and scored (``evaluate.validate``)."""

    enabled: bool = True
    max_new_tokens: int = 64
    bertscore: bool = True
    bertscore_model: str | None = None  # None: the score module's default
    bertscore_layers: int | None = None

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise UrecaError("--val-max-new-tokens: needs at least 1")


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of one ``ureca train`` run. ``model.base`` is an InternVL ``-hf`` id or folder, or
    ``"tiny"`` (a tiny random one); stage 2 replaces ``model`` with the one ``init`` was trained as."""

    out: Path
    stage: str = "both"
    init: Path | None = None
    model: UrecaConfig = field(default_factory=lambda: UrecaConfig(base=DEFAULT_BASE))
    use_mask: bool = True  # False: the ablation's "no mask" baseline (no mask tokens at all)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    val: ValConfig = field(default_factory=ValConfig)
    precision: str = "auto"
    save_steps: int = 500
    save_total_limit: int = 3
    logging_steps: int = 10
    resume: bool = False
    seed: int = 0
    workers: int = 0
    cpu: bool = False
    quiet: bool = False
    given: frozenset[str] = frozenset()  # OPTIONS set on the command line (stage 2 checks the model's)

    def __post_init__(self):
        if self.stage not in STAGES:
            raise UrecaError(f"--stage {self.stage!r}: choose 1, 2 or both")
        if self.stage == "2" and self.init is None:
            raise UrecaError("--stage 2 needs --init DIR, a stage-1 checkpoint")
        if self.stage != "2" and self.init is not None:
            raise UrecaError("--init is for --stage 2 (stage 1 starts from --base)")
        if self.precision not in PRECISIONS:
            raise UrecaError(f"--precision {self.precision!r}: choose {', '.join(PRECISIONS)}")
        for name in ("save_steps", "logging_steps"):
            if getattr(self, name) < 1:
                raise UrecaError(f"--{name.replace('_', '-')}: needs at least 1")
        if self.save_total_limit < 0 or self.workers < 0:
            raise UrecaError("--save-total-limit and --workers need >= 0")

    @classmethod
    def from_options(cls, **options: Any) -> TrainConfig:
        """A config from the command line's options (``OPTIONS``' names; ``out``, ``stage``, ``init``, ``data``,
        ``use_mask``, ``given`` and the run settings as they are). Bad values are ``UrecaError``s naming the flag."""
        parts: dict[str, dict[str, Any]] = {"model": {}, "optim": {}, "lora": {}, "val": {}}
        own: dict[str, Any] = {}
        for name, value in options.items():
            if name in OPTIONS:
                part, key = OPTIONS[name]
                parts[part][key] = value
            else:
                own[name] = value
        model = parts["model"]
        model.setdefault("base", DEFAULT_BASE)
        if model.get("max_tiles", 12) is None:
            model.pop("max_tiles")  # None: InternVL's own 12
        _check_model_options(model)
        return cls(model=UrecaConfig(**model), optim=OptimConfig(**parts["optim"]), lora=LoraConfig(**parts["lora"]),
                   val=ValConfig(**parts["val"]), **own)

    def options(self) -> dict[str, Any]:
        """The run as the command line names it: every option of ``OPTIONS`` and the run's own settings (not
        ``given``), JSON-ready. ``train_config.json`` records this."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in ("given", "model", "optim", "lora", "val"):
                continue
            value = getattr(self, f.name)
            out[f.name] = asdict(value) if f.name == "data" else value
        for name, (part, key) in OPTIONS.items():
            out[name] = getattr(getattr(self, part), key)
        return out


#: option name (the command line's, underscored) -> (part of TrainConfig, field); FLAGS gives each its flag
OPTIONS: dict[str, tuple[str, str]] = {
    "base": ("model", "base"),
    "mask_tokens": ("model", "num_mask_tokens"),
    "mask_projector": ("model", "mask_projector"),
    "dynamic_mask": ("model", "dynamic_mask"),
    "max_tiles": ("model", "max_tiles"),
    "lr_stage1": ("optim", "lr_stage1"),
    "lr_stage2": ("optim", "lr_stage2"),
    "epochs": ("optim", "epochs"),
    "max_steps": ("optim", "max_steps"),
    "global_batch": ("optim", "global_batch"),
    "per_device_batch": ("optim", "per_device_batch"),
    "warmup_ratio": ("optim", "warmup_ratio"),
    "weight_decay": ("optim", "weight_decay"),
    "scheduler": ("optim", "scheduler"),
    "gradient_checkpointing": ("optim", "gradient_checkpointing"),
    "lora_r": ("lora", "r"),
    "lora_alpha": ("lora", "alpha"),
    "lora_dropout": ("lora", "dropout"),
    "validate": ("val", "enabled"),
    "val_max_new_tokens": ("val", "max_new_tokens"),
    "bertscore": ("val", "bertscore"),
    "bertscore_model": ("val", "bertscore_model"),
    "bertscore_layers": ("val", "bertscore_layers"),
}
FLAGS = {name: "--" + name.replace("_", "-") for name in OPTIONS} | {"per_device_batch": "--batch-size"}
#: the options of the model, which stage 2 takes from --init
MODEL_OPTIONS = tuple(name for name, (part, _) in OPTIONS.items() if part == "model")


def flag_text(name: str, value: Any) -> str:
    """An option as the command line gives it: ``--mask-tokens 4``, ``--no-dynamic-mask``."""
    if isinstance(value, bool):
        return ("--" if value else "--no-") + name.replace("_", "-")
    return f"{FLAGS[name]} {value}"


def _check_model_options(model: dict[str, Any]) -> None:
    """The model options, checked with the flags' names (``UrecaConfig`` names its own fields)."""
    k = model.get("num_mask_tokens", 8)
    if not isinstance(k, int) or k < 1:
        raise UrecaError(f"--mask-tokens {k}: needs >= 1 (the paper uses 4, 8 or 16)")
    if model.get("mask_projector", "linear") not in PROJECTORS:
        raise UrecaError(f"--mask-projector {model['mask_projector']!r}: choose {' or '.join(PROJECTORS)}")
    if model.get("max_tiles", 12) < 1:
        raise UrecaError("--max-tiles: needs >= 1")
