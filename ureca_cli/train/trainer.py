"""Two-stage URECA training on the transformers Trainer (so torchrun / accelerate launch give DDP, DeepSpeed, FSDP).

Stage 1 trains the mask encoder (convolutions and projection) and the embedding rows of the added tokens
(``<mask>``, ``</mask>``, ``<MASK_CONTEXT>``); every other weight is frozen. The added rows are trained as a
separate (n_added, D) parameter whose values a forward hook puts in place of those rows' embeddings (and
logits, for the output embedding), so no other row can move, not even by weight decay, and the optimizer
holds 3 x D values instead of the whole vocabulary; the rows are written back into the embedding matrices
before every save. Stage 2 wraps the language model in LoRA (peft, targets limited to the language model) and
trains the LoRA weights only. Vision tower and image projector stay frozen throughout.

Checkpoints (``OUT/checkpoint-N``) are URECA checkpoint folders (``ureca_cli.model.save_checkpoint``) plus
``trainable.safetensors`` (the trainable tensors, which ``--resume`` loads) and the Trainer's optimizer,
scheduler, RNG and trainer state; ``--resume`` continues from the newest *complete* one (the one whose
``trainer_state.json``, written last, exists). The finished model is written to ``OUT`` itself, with
``train_config.json``; a validation pass then captions held-out regions and scores them (``val_*.json*``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import UrecaError
from .data import DataConfig, Sample, load_samples, split_by_image

STAGES = ("1", "2", "both")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
MODEL_FIELDS = {"base": "--base", "mask_tokens": "--mask-tokens", "mask_projector": "--mask-projector",
                "dynamic_mask": "--dynamic-mask", "max_tiles": "--max-tiles"}  # stage 2 takes these from --init
TRAINABLE_FILE = "trainable.safetensors"
FINAL_MARK = "ureca.json"  # a finished checkpoint folder holds this


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of ``ureca train``; defaults are the paper's (Appendix A)."""

    out: Path
    stage: str = "both"
    base: str = "OpenGVLab/InternVL3-1B-hf"
    init: Path | None = None
    data: DataConfig = field(default_factory=DataConfig)
    mask_tokens: int = 8
    dynamic_mask: bool = True
    mask_projector: str = "linear"
    max_tiles: int | None = None
    use_mask: bool = True  # False: the ablation's "no mask" baseline (no mask tokens at all)
    epochs: float = 2.0
    max_steps: int = -1
    lr_stage1: float = 2e-4
    lr_stage2: float = 4e-5
    global_batch: int = 16
    per_device_batch: int = 4
    warmup_ratio: float = 0.03
    weight_decay: float = 0.01
    scheduler: str = "cosine"
    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    precision: str = "auto"
    gradient_checkpointing: bool = True
    save_steps: int = 500
    save_total_limit: int = 3
    logging_steps: int = 10
    resume: bool = False
    seed: int = 0
    workers: int = 0
    cpu: bool = False
    val_max_new_tokens: int = 64
    bertscore_model: str | None = None
    bertscore_layers: int | None = None
    bertscore: bool = True
    validate: bool = True
    quiet: bool = False
    given: frozenset[str] = frozenset()  # fields set on the command line (stage 2 checks MODEL_FIELDS among them)

    def __post_init__(self):
        if self.stage not in STAGES:
            raise UrecaError(f"--stage {self.stage!r}: choose 1, 2 or both")
        if self.stage == "2" and self.init is None:
            raise UrecaError("--stage 2 needs --init DIR, a stage-1 checkpoint")
        if self.stage != "2" and self.init is not None:
            raise UrecaError("--init is for --stage 2 (stage 1 starts from --base)")
        if self.mask_tokens < 1:
            raise UrecaError(f"--mask-tokens {self.mask_tokens}: needs >= 1 (the paper uses 4, 8 or 16)")
        if self.mask_projector not in ("linear", "mlp"):
            raise UrecaError(f"--mask-projector {self.mask_projector!r}: choose linear or mlp")
        if self.max_tiles is not None and self.max_tiles < 1:
            raise UrecaError("--max-tiles: needs >= 1")
        if self.precision not in PRECISIONS:
            raise UrecaError(f"--precision {self.precision!r}: choose {', '.join(PRECISIONS)}")
        for name in ("lr_stage1", "lr_stage2", "epochs"):
            if getattr(self, name) <= 0:
                raise UrecaError(f"--{name.replace('_', '-')}: needs a positive value")
        for name in ("global_batch", "per_device_batch", "save_steps", "logging_steps", "lora_r", "lora_alpha",
                     "val_max_new_tokens"):
            if getattr(self, name) < 1:
                flag = "--batch-size" if name == "per_device_batch" else f"--{name.replace('_', '-')}"
                raise UrecaError(f"{flag}: needs at least 1")
        if not 0 <= self.warmup_ratio < 1 or not 0 <= self.lora_dropout < 1 or self.weight_decay < 0:
            raise UrecaError("--warmup-ratio and --lora-dropout need [0, 1); --weight-decay >= 0")
        if self.max_steps == 0 or self.max_steps < -1 or self.save_total_limit < 0 or self.workers < 0:
            raise UrecaError("--max-steps needs -1 or >= 1; --save-total-limit and --workers need >= 0")
        from transformers import SchedulerType

        if self.scheduler not in {s.value for s in SchedulerType}:
            raise UrecaError(f"--scheduler {self.scheduler!r}: choose one of transformers' "
                             f"{', '.join(s.value for s in SchedulerType)}")


# ----------------------------------------------------------------------------------------- the model
def _log(cfg: TrainConfig, message: str) -> None:
    if not cfg.quiet and int(os.environ.get("RANK", "0")) == 0:
        print(f"ureca train: {message}", file=sys.stderr, flush=True)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _gpu(cfg: TrainConfig) -> bool:
    """Whether this run trains on a CUDA GPU (one is there and --cpu was not given)."""
    return not cfg.cpu and _cuda()


def _amp(cfg: TrainConfig) -> str:
    """The autocast dtype the run uses: bf16, fp16 or fp32 (none)."""
    import torch

    if cfg.precision == "auto":
        return "bf16" if _gpu(cfg) and torch.cuda.is_bf16_supported() else "fp32"
    if cfg.precision == "fp16" and not _gpu(cfg):
        raise UrecaError("--precision fp16 needs a CUDA GPU; use bf16 or fp32 on the CPU")
    if cfg.precision == "bf16" and _gpu(cfg) and not torch.cuda.is_bf16_supported():
        raise UrecaError("--precision bf16: this GPU has no bf16; use fp16 or fp32 (or --cpu)")
    return cfg.precision


def _fsdp() -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")


def _weights_dtype(cfg: TrainConfig) -> str:
    """The dtype the base weights are loaded in: bf16 on a bf16 GPU run (frozen weights need no fp32 copy),
    else fp32. FSDP flattens frozen and trainable weights into shared units, which must have one dtype, and
    casts for compute itself (its mixed_precision setting): all fp32 there."""
    if _fsdp():
        return "float32"
    return "bfloat16" if _amp(cfg) == "bf16" and _gpu(cfg) else "float32"


def _load_kwargs(cfg: TrainConfig, *, gpu: bool) -> dict[str, str]:
    """``load_checkpoint``'s device and dtype in this run: always the run's weights dtype (not the one the
    checkpoint was saved in); the GPU where ``gpu`` and the run has one, else the CPU. Training passes
    ``gpu=False``: the Trainer moves the model to each rank's own GPU, where "cuda" would put every rank's
    copy on the first one."""
    return {"device": "cuda" if gpu and _gpu(cfg) else "cpu", "dtype": _weights_dtype(cfg)}


def build_stage1_model(cfg: TrainConfig):
    """A new URECA model around ``cfg.base`` ("tiny" or an InternVL -hf id/folder) with a fresh mask encoder."""
    from ..model import UrecaConfig, build_tiny_ureca, load_base

    kw = {"num_mask_tokens": cfg.mask_tokens, "mask_projector": cfg.mask_projector, "dynamic_mask": cfg.dynamic_mask}
    if cfg.base == "tiny":
        return build_tiny_ureca(seed=cfg.seed, max_tiles=cfg.max_tiles or 12, **kw)
    ucfg = UrecaConfig(**kw, **({"max_tiles": cfg.max_tiles} if cfg.max_tiles else {}))
    try:
        return load_base(cfg.base, ucfg, dtype=_weights_dtype(cfg), seed=cfg.seed)
    except OSError as e:
        raise UrecaError(f"--base {cfg.base}: cannot load ({str(e).splitlines()[0]})") from None


def attach_added_rows(model) -> Any:
    """Give ``model`` (a UrecaModel) a submodule ``added_rows`` and hooks that use it; returns the submodule.

    ``added_rows.input``: (n, D) fp32 rows of the input embedding for the n added tokens (in ``ADDED_TOKENS``
    order); ``added_rows.output``: the same for the output embedding when it is a separate matrix, else None
    (tied: the input rows serve both). The hooks put these rows in place of the matrices' rows in the
    embedding output (B, L, D) and in the logits (B, L, V), so gradients reach them and nothing else.
    """
    import torch
    from torch import nn

    from ..model.ureca import ADDED_TOKENS, _embedding_matrices

    ids = model.token_ids.added()
    index = torch.tensor([ids[t] for t in ADDED_TOKENS])
    mats = _embedding_matrices(model.internvl)
    rows = nn.Module()
    rows.register_buffer("index", index, persistent=False)
    rows.input = nn.Parameter(mats[0].weight.detach()[index].clone().float())
    rows.output = nn.Parameter(mats[1].weight.detach()[index].clone().float()) if len(mats) > 1 else None
    lookup = torch.full((mats[0].weight.shape[0],), -1, dtype=torch.long)
    lookup[index] = torch.arange(len(index))
    rows.register_buffer("lookup", lookup, persistent=False)

    def on_input(module, args, out):
        slot = rows.lookup.to(args[0].device)[args[0]]
        hit = slot >= 0
        if not bool(hit.any()):
            return out
        new = rows.input.to(out.dtype)[slot.clamp(min=0)]
        return torch.where(hit.unsqueeze(-1), new, out)

    def on_output(module, args, out):
        table = rows.output if rows.output is not None else rows.input
        extra = args[0] @ table.to(args[0].dtype).t()
        return out.index_copy(-1, rows.index.to(out.device), extra.to(out.dtype))

    model.added_rows = rows
    rows.hooks = [mats[0].register_forward_hook(on_input)]
    out_emb = model.internvl.get_output_embeddings()
    if out_emb is not None:
        rows.hooks.append(out_emb.register_forward_hook(on_output))
    return rows


def sync_added_rows(model) -> None:
    """Copy the trained added rows into the embedding matrices (before a save: the checkpoint reads them there)."""
    import torch

    from ..model.ureca import _embedding_matrices

    rows = getattr(model, "added_rows", None)
    if rows is None:
        return
    mats = _embedding_matrices(model.internvl)
    with torch.no_grad():
        mats[0].weight[rows.index] = rows.input.to(mats[0].weight.dtype)
        if len(mats) > 1:
            src = rows.output if rows.output is not None else rows.input
            mats[1].weight[rows.index] = src.to(mats[1].weight.dtype)


def prepare_stage1(model) -> None:
    """Freeze everything but the mask encoder and the added tokens' rows (attached here)."""
    for p in model.parameters():
        p.requires_grad_(False)
    model.mask_encoder.float()
    for p in model.mask_encoder.parameters():
        p.requires_grad_(True)
    attach_added_rows(model)


def prepare_stage2(model, cfg: TrainConfig) -> None:
    """Freeze everything, then add LoRA on the language model (its weights are the only trainable ones)."""
    for p in model.parameters():
        p.requires_grad_(False)
    model.add_lora(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout)
    bad = [n for n, p in model.named_parameters() if p.requires_grad and ("lora_" not in n or "language_model" not in n)]
    if bad:
        raise RuntimeError(f"stage 2 would train non-LoRA or non-language-model weights: {bad[:3]}")
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()


def parameter_counts(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; frozen embedding rows that the added rows shadow are not double
    counted in ``trainable``."""
    seen, trainable, total = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    rows = getattr(model, "added_rows", None)
    if rows is not None:  # the shadow rows replace rows already counted in the embedding matrices
        total -= sum(p.numel() for p in rows.parameters())
    return trainable, total


def trainable_state(model) -> dict[str, Any]:
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}


# --------------------------------------------------------------------------------------- the Trainer
def _trainer_view(model):
    """The UrecaModel as the Trainer wants a model: ``.config`` is the InternVL's (a transformers config the
    Trainer may set ``use_cache`` on; URECA's own config is a frozen dataclass), ``.ureca`` the model itself."""
    from torch import nn

    class TrainerView(nn.Module):
        def __init__(self, ureca):
            super().__init__()
            self.ureca = ureca

        @property
        def config(self):
            return self.ureca.internvl.config

        def forward(self, input_ids, attention_mask=None, pixel_values=None, mask_tiles=None, labels=None,
                    **kwargs):
            return self.ureca(input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
                              mask_tiles=mask_tiles, labels=labels, **kwargs)

    return TrainerView(model)


def _trainer_class():
    import torch
    from transformers import Trainer

    class UrecaTrainer(Trainer):
        """The transformers Trainer, saving URECA checkpoints and resuming from their trainable tensors."""

        def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
            from safetensors.torch import save_file

            from ..model import save_checkpoint

            output_dir = output_dir or self.args.output_dir
            if not self.args.should_save:
                return
            view = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
            sync_added_rows(view.ureca)
            save_checkpoint(view.ureca, output_dir)
            save_file(trainable_state(view), os.path.join(output_dir, TRAINABLE_FILE), metadata={"format": "pt"})
            torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

        def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
            from safetensors.torch import load_file

            model = model or self.model
            path = Path(resume_from_checkpoint) / TRAINABLE_FILE
            if not path.is_file():
                raise UrecaError(f"{resume_from_checkpoint}: no {TRAINABLE_FILE}; not a checkpoint of this run")
            state = load_file(str(path))
            params = dict(model.named_parameters())
            want = {n for n, p in params.items() if p.requires_grad}
            if set(state) != want:
                raise UrecaError(f"{path}: trainable tensors differ from this run's (a different --stage or "
                                 f"model?): missing {sorted(want - set(state))[:3]}, "
                                 f"unexpected {sorted(set(state) - want)[:3]}")
            with torch.no_grad():
                for n, v in state.items():
                    params[n].copy_(v.to(params[n].dtype))

        def get_decay_parameter_names(self, model) -> list[str]:
            names = super().get_decay_parameter_names(model)
            return [n for n in names if "added_rows" not in n]  # the paper decays weights, not embeddings

    return UrecaTrainer


def _progress_callback(cfg: TrainConfig, stage: str, global_batch: int):
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """One line per logging step on stderr: step, loss, learning rate, samples per second, time left."""

        def on_train_begin(self, args, state, control, **kw):
            self.t0, self.step0 = time.perf_counter(), state.global_step
            if _gpu(cfg):
                import torch

                torch.cuda.reset_peak_memory_stats()
            if state.global_step:
                _log(cfg, f"stage {stage}: resumed at step {state.global_step}/{state.max_steps}")

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            if "loss" not in logs and "train_loss" not in logs:
                return
            dt = time.perf_counter() - self.t0
            done = state.global_step - self.step0
            rate = done * global_batch / dt if dt > 0 else 0.0
            left = (state.max_steps - state.global_step) * dt / done if done else 0.0
            if "loss" in logs:
                _log(cfg, f"stage {stage}: step {state.global_step}/{state.max_steps} loss {logs['loss']:.4f} "
                          f"lr {logs.get('learning_rate', 0):.2e} | {rate:.2f} samples/s | {left:.0f}s left")
            else:
                peak = ""
                if _gpu(cfg):
                    import torch

                    peak = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
                _log(cfg, f"stage {stage}: done, {state.global_step} steps, mean loss {logs['train_loss']:.4f}, "
                          f"{rate:.2f} samples/s{peak}")

    return Progress()


def last_complete_checkpoint(folder: Path) -> Path | None:
    """The newest ``checkpoint-N`` in ``folder`` whose save finished (it has ``trainer_state.json``)."""
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()
            and (p / "trainer_state.json").is_file() and (p / TRAINABLE_FILE).is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def batch_layout(global_batch: int, per_device_batch: int, world: int) -> tuple[int, int]:
    """(per-device batch, accumulation steps) for ``global_batch`` samples per optimizer step over ``world``
    processes: the largest per-device batch <= ``per_device_batch`` that divides ``global_batch / world``, so
    the product is exact. When ``world`` does not divide ``global_batch``, the nearest smaller layout."""
    if global_batch % world:
        per_device = min(per_device_batch, max(1, global_batch // world))
        return per_device, max(1, global_batch // (per_device * world))
    per_rank = global_batch // world
    per_device = max(d for d in range(1, min(per_device_batch, per_rank) + 1) if per_rank % d == 0)
    return per_device, per_rank // per_device


def _training_args(cfg: TrainConfig, out: Path, lr: float):
    from transformers import TrainingArguments

    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_device, accum = batch_layout(cfg.global_batch, cfg.per_device_batch, world)
    note = "" if per_device * world * accum == cfg.global_batch else f" (not {cfg.global_batch}: it does not divide)"
    lowered = f" (--batch-size {cfg.per_device_batch} lowered to divide the batch)" \
        if per_device < min(cfg.per_device_batch, cfg.global_batch // world) else ""
    _log(cfg, f"global batch {per_device * world * accum}{note} = {per_device} per device{lowered} x {world} "
              f"process{'es' if world > 1 else ''} x {accum} accumulation step{'s' if accum > 1 else ''}")
    amp = _amp(cfg)
    use_cpu = not _gpu(cfg)
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accum,
        learning_rate=lr,
        weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float < 1 is a ratio of the total steps
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        bf16=amp == "bf16",
        fp16=amp == "fp16",
        use_cpu=use_cpu,
        ddp_backend="gloo" if use_cpu and world > 1 else None,
        ddp_find_unused_parameters=False,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit or None,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        report_to=[],
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=cfg.workers,
        seed=cfg.seed,
        data_seed=cfg.seed,
        log_level="warning",
    )
    return args, per_device * world * accum


def run_stage(cfg: TrainConfig, stage: str, model, train: list[Sample], out: Path, dataset: Any = None) -> Any:
    """Train ``model`` for one stage on ``train`` (or a ready ``dataset`` of encoded examples) and write the
    finished checkpoint to ``out``. Returns the Trainer."""
    from transformers.trainer_callback import PrinterCallback
    from transformers.utils import logging as hf_logging

    from .data import RegionDataset

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    lr = cfg.lr_stage1 if stage == "1" else cfg.lr_stage2
    (prepare_stage1(model) if stage == "1" else prepare_stage2(model, cfg))
    if cfg.gradient_checkpointing:
        internvl, kw = model.internvl, {"use_reentrant": False}
        if hasattr(internvl, "activation_checkpointing_enable"):  # transformers >= 5.2x
            internvl.activation_checkpointing_enable(activation_checkpointing_kwargs=kw)
        else:
            internvl.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kw)
    model.train()
    trainable, total = parameter_counts(model)
    n = len(dataset) if dataset is not None else len(train)
    _log(cfg, f"stage {stage}: {trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.3f}%); "
              f"{n} regions; lr {lr:g}")
    args, global_batch = _training_args(cfg, out, lr)
    resume = last_complete_checkpoint(out) if cfg.resume else None
    trainer = _trainer_class()(
        model=_trainer_view(model),
        args=args,
        train_dataset=dataset if dataset is not None else RegionDataset(train, model.processor, use_mask=cfg.use_mask),
        data_collator=model.processor.collate,
        callbacks=[_progress_callback(cfg, stage, global_batch)],
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if trainer.is_world_process_zero():
        trainer._save(str(out))
        (out / "train_config.json").write_text(json.dumps(_config_json(cfg, stage), indent=2) + "\n")
    trainer.accelerator.wait_for_everyone()  # the other ranks may read `out` next (stage 2 loads stage 1's)
    model.eval()
    return trainer


def _config_json(cfg: TrainConfig, stage: str) -> dict:
    d = asdict(cfg)
    del d["given"]
    d["stage_trained"] = stage
    d["amp"] = _amp(cfg)
    d["world_size"] = int(os.environ.get("WORLD_SIZE", "1"))
    return json.loads(json.dumps(d, default=str))


# ------------------------------------------------------------------------------------------ entry
def _check_out(out: Path, resume: bool, what: str) -> str:
    """'new', 'resume' or 'done' for a stage output folder; refuses to write over a run without --resume."""
    finished = (out / FINAL_MARK).is_file() and (out / "train_config.json").is_file()
    if finished:
        if resume:
            return "done"
        raise UrecaError(f"--out {out}: already holds a finished {what}; choose another folder (nothing written)")
    if any(out.glob("checkpoint-*")) and not resume:
        raise UrecaError(f"--out {out}: holds an interrupted run; pass --resume to continue it, or choose another "
                         f"folder (nothing written)")
    if out.exists() and not out.is_dir():
        raise UrecaError(f"--out {out}: exists and is not a folder")
    return "resume" if resume and last_complete_checkpoint(out) else "new"


def _model_fields(folder: Path) -> tuple[dict[str, Any], bool]:
    """(TrainConfig's model fields (``MODEL_FIELDS``) as the checkpoint in ``folder`` has them, whether it has
    a LoRA adapter). ``base`` is the embedded base's folder where the checkpoint carries one (``load_checkpoint``
    loads that)."""
    from ..model.checkpoint import BASE_DIR, read_checkpoint_config

    meta, c = read_checkpoint_config(folder)
    fields = {"base": str(folder / BASE_DIR) if meta["base_embedded"] else c.base, "mask_tokens": c.num_mask_tokens,
              "mask_projector": c.mask_projector, "dynamic_mask": c.dynamic_mask, "max_tiles": c.max_tiles}
    return fields, bool(meta["adapter"])


def _check_init(cfg: TrainConfig) -> None:
    """--init is a stage-1 checkpoint, and no model option given on the command line contradicts it (stage 2
    keeps the model --init was trained as)."""
    init = cfg.init
    used, adapter = _model_fields(init)
    if adapter:
        raise UrecaError(f"--init {init}: has a LoRA adapter already (a stage-2 checkpoint); stage 2 starts from "
                         f"a stage-1 checkpoint")

    def flag(k: str, v: Any) -> str:
        return ("--" if v else "--no-") + "dynamic-mask" if k == "dynamic_mask" else f"{MODEL_FIELDS[k]} {v}"

    bad = [f"{flag(k, getattr(cfg, k))} (it has {flag(k, used[k])})" for k in MODEL_FIELDS
           if k in cfg.given and getattr(cfg, k) != used[k]]
    if bad:
        raise UrecaError(f"--init {init}: stage 2 keeps the model it was trained as; leave out {'; '.join(bad)}")


def _score_config(cfg: TrainConfig):
    from ..evaluate.score import METRICS, NGRAM_METRICS, ScoreConfig

    return ScoreConfig(metrics=METRICS if cfg.bertscore else NGRAM_METRICS,
                       **({"bertscore_model": cfg.bertscore_model} if cfg.bertscore_model else {}),
                       bertscore_layers=cfg.bertscore_layers)


def train_main(paths: list[str], cfg: TrainConfig) -> dict | None:
    """``ureca train``: check everything, train the stage(s), validate. Returns the validation summary."""
    from ..evaluate.validate import validate

    _amp(cfg)  # a precision this machine cannot run fails here, not after the data is read
    if _fsdp() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Our checkpoint writer reads the unwrapped model's parameters, which under FSDP on several processes
        # are this rank's shards: the checkpoints would be wrong. Only one process has been run (see
        # configs/accelerate/README.md).
        raise UrecaError("FSDP over several processes is not supported yet (checkpoints would hold one rank's "
                         "shards); use configs/accelerate/ddp.yaml, or FSDP with --num_processes 1")
    samples = load_samples(paths, cfg.data)
    train, val = split_by_image(samples, cfg.data.val_fraction, cfg.data.seed, cfg.data.val_max_regions)
    if not train:
        raise UrecaError("no training regions left after the validation split; lower --val-fraction")
    final = cfg.out
    s1_out = cfg.out / "stage1" if cfg.stage == "both" else cfg.out
    states = {}
    if cfg.stage in ("1", "both"):
        states["1"] = _check_out(s1_out, cfg.resume, "stage-1 checkpoint")
    if cfg.stage in ("2", "both"):
        states["2"] = _check_out(final, cfg.resume, "stage-2 checkpoint")
    if cfg.stage == "2":
        _check_init(cfg)
    if cfg.validate and val:
        scfg = _score_config(cfg)
        if scfg.use_bertscore:
            from ..evaluate.score import resolve_bertscore_model

            resolve_bertscore_model(scfg.bertscore_model, scfg.bertscore_layers)
        if scfg.needs_java:
            from ..evaluate.score import check_java

            check_java()
    held = len(samples) - len(train)
    scored = f" ({len(val)} of them to score)" if len(val) < held else ""
    _log(cfg, f"{len(train)} training regions, {held} held out (split by image){scored}; output {cfg.out}")

    model = None
    if "1" in states:
        if states["1"] == "done":
            _log(cfg, f"stage 1 already finished in {s1_out}")
        else:
            model = build_stage1_model(cfg)
            run_stage(cfg, "1", model, train, s1_out)
    if "2" in states:
        if states["2"] == "done":
            _log(cfg, f"stage 2 already finished in {final}")
            model = None
        else:
            from ..model import load_checkpoint

            init = cfg.init if cfg.stage == "2" else s1_out
            model = load_checkpoint(init, trainable=True, **_load_kwargs(cfg, gpu=False))
            cfg = replace(cfg, **_model_fields(init)[0])  # train_config.json records the model trained
            run_stage(cfg, "2", model, train, final)
    if int(os.environ.get("RANK", "0")) != 0 or not cfg.validate or not val:
        return None
    if model is None:
        from ..model import load_checkpoint

        model = load_checkpoint(final, **_load_kwargs(cfg, gpu=True))  # rank 0 only: its GPU is "cuda"
    return validate(model, val, final, cfg, _score_config(cfg))
