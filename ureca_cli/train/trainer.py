"""Two-stage URECA training on the transformers Trainer (so torchrun / accelerate launch give DDP, DeepSpeed, FSDP).

``train_main(paths, cfg, validation)`` is ``ureca train``: it reads the data (``data.load_samples``), splits it
by image, trains stage 1 and/or 2 (``train_stage``; what each stage trains is in ``stages.py``) and hands the
held-out regions to ``validation``, a callback the caller passes in (``ureca train`` passes
``evaluate.validate.Validator``, so training never imports the later stages that caption and score).

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
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from ..errors import UrecaError
from ..stream import read_json_file
from .config import MODEL_OPTIONS, OPTIONS, TrainConfig, flag_text
from .data import Sample, load_samples, split_by_image
from .stages import (
    build_stage1_model,
    check_base,
    init_model,
    parameter_counts,
    prepare_stage1,
    prepare_stage2,
    sync_added_rows,
    trainable_state,
)

TRAINABLE_FILE = "trainable.safetensors"
FINAL_MARK = "ureca.json"  # a finished checkpoint folder holds this


class Validation(Protocol):
    """What ``train_main`` does with the held-out regions at the end (``evaluate.validate.Validator``)."""

    def check(self) -> None:
        """Fail now, before training, when the validation could not run (no Java for METEOR, say)."""

    def __call__(self, model: Any, val: list[Sample], out: Path) -> dict[str, Any]:
        """Caption ``val`` with ``model``, score them, write the results into ``out``; returns the scores."""


# ---------------------------------------------------------------------------------------------- devices
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
            try:
                state = load_file(str(path))
            except Exception as e:  # noqa: BLE001 - safetensors raises its own types for a damaged file
                raise UrecaError(f"{path}: unreadable safetensors file ({e})") from None
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


def _finished_steps(ckpt: Path, trainer: Any) -> int | None:
    """The checkpoint's step when it is this run's last, else None (the Trainer, resumed there, would train one
    step more). The plan is this run's: ``--max-steps``, or the steps the Trainer counts for ``--epochs`` over
    this data (asked only when the checkpoint was its own run's last, which a longer run may go on from)."""
    state = json.loads((ckpt / "trainer_state.json").read_text())
    step, args = state.get("global_step", 0), trainer.args
    if args.max_steps > 0:
        planned = args.max_steps
    elif step >= state.get("max_steps", step + 1):
        planned = trainer.set_initial_training_values(args, trainer.get_train_dataloader())[-1]
    else:
        return None
    return step if step >= planned else None


def last_complete_checkpoint(folder: Path) -> Path | None:
    """The newest ``checkpoint-N`` in ``folder`` whose save finished (it has ``trainer_state.json``)."""
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()
            and (p / "trainer_state.json").is_file() and (p / TRAINABLE_FILE).is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def check_resume_checkpoint(ckpt: Path) -> None:
    """The files ``--resume`` reads from the checkpoint folder ``ckpt``, checked before any model is built: a
    damaged one is one ``UrecaError`` naming it and what is wrong. ``trainer_state.json`` must be a JSON object
    with ``global_step``; ``trainable.safetensors`` a whole safetensors file (its header and sizes); the
    Trainer's ``optimizer.pt``, ``scheduler.pt``, ``scaler.pt`` and ``rng_state*.pth``, where present, PyTorch zip
    archives whose every member passes its CRC check (so a damaged or legacy-pickle file never reaches
    ``torch.load``)."""
    import zipfile

    from ..model.shards import read_header

    hint = f"the checkpoint is damaged; remove {ckpt} to resume from an earlier one, if any"
    state = ckpt / "trainer_state.json"
    try:
        data = read_json_file(state)
    except UrecaError as e:
        raise UrecaError(f"{e}; {hint}") from None
    if not isinstance(data, dict) or not isinstance(data.get("global_step"), int):
        raise UrecaError(f"{state}: not a Trainer state (no integer global_step); {hint}")
    try:
        read_header(ckpt / TRAINABLE_FILE)
    except UrecaError as e:
        raise UrecaError(f"{e}; {hint}") from None
    archives = [ckpt / n for n in ("optimizer.pt", "scheduler.pt", "scaler.pt")] + sorted(ckpt.glob("rng_state*.pth"))
    for path in archives:
        if not path.is_file():
            continue
        try:
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise UrecaError(f"{path}: not a PyTorch archive ({e}); {hint}") from None
        if bad is not None:
            raise UrecaError(f"{path}: member {bad} fails its CRC check; {hint}")


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
    o = cfg.optim
    per_device, accum = batch_layout(o.global_batch, o.per_device_batch, world)
    note = "" if per_device * world * accum == o.global_batch else f" (not {o.global_batch}: it does not divide)"
    lowered = f" (--batch-size {o.per_device_batch} lowered to divide the batch)" \
        if per_device < min(o.per_device_batch, o.global_batch // world) else ""
    _log(cfg, f"global batch {per_device * world * accum}{note} = {per_device} per device{lowered} x {world} "
              f"process{'es' if world > 1 else ''} x {accum} accumulation step{'s' if accum > 1 else ''}")
    amp = _amp(cfg)
    use_cpu = not _gpu(cfg)
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accum,
        learning_rate=lr,
        weight_decay=o.weight_decay,
        lr_scheduler_type=o.scheduler,
        warmup_steps=o.warmup_ratio,  # a float < 1 is a ratio of the total steps
        num_train_epochs=o.epochs,
        max_steps=o.max_steps,
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


def train_stage(cfg: TrainConfig, stage: str, model, train: list[Sample], out: Path, dataset: Any = None) -> Any:
    """Train ``model`` for one stage on ``train`` (or a ready ``dataset`` of encoded examples) and write the
    finished checkpoint to ``out``. Returns the Trainer."""
    from transformers.trainer_callback import PrinterCallback
    from transformers.utils import logging as hf_logging

    from .data import RegionDataset

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    lr = cfg.optim.lr(stage)
    (prepare_stage1(model) if stage == "1" else prepare_stage2(model, cfg.lora))
    if cfg.optim.gradient_checkpointing:
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
    finished = _finished_steps(resume, trainer) if resume else None
    if finished is not None:  # killed after the last checkpoint, before the model was written: train no more
        _log(cfg, f"stage {stage}: resumed at step {finished}/{finished}: training was complete; writing the model "
                  f"from {resume.name}")
        trainer._load_from_checkpoint(str(resume))
    else:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if trainer.is_world_process_zero():
        trainer._save(str(out))
        (out / "train_config.json").write_text(json.dumps(_config_json(cfg, stage), indent=2) + "\n")
    trainer.accelerator.wait_for_everyone()  # the other ranks may read `out` next (stage 2 loads stage 1's)
    model.eval()
    return trainer


def _config_json(cfg: TrainConfig, stage: str) -> dict:
    """``train_config.json``: the run's options as the command line names them (``TrainConfig.options``), the
    stage trained, the autocast dtype and the number of processes."""
    d = cfg.options()
    d["stage_trained"] = stage
    d["amp"] = _amp(cfg)
    d["world_size"] = int(os.environ.get("WORLD_SIZE", "1"))
    return json.loads(json.dumps(d, default=str))


# ------------------------------------------------------------------------------------------ entry
def _entries(folder: Path) -> list[Path]:
    """The entries of a folder that count (hidden files, such as .nfs or .DS_Store, do not)."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


def _run_folder(folder: Path) -> bool:
    """Whether ``folder`` is empty or holds a ``ureca train`` run: its ``train_config.json`` (written as a
    stage ends), a ``checkpoint-N`` (written as it goes), or the ``stage1`` folder of ``--stage both``."""
    entries = _entries(folder)
    return not entries or (folder / "train_config.json").is_file() or any(
        p.is_dir() and p.name.startswith("checkpoint-") for p in entries) or (
        (folder / "stage1").is_dir() and _run_folder(folder / "stage1"))


def _check_out(out: Path, resume: bool, what: str) -> str:
    """'new', 'resume' or 'done' for a stage output folder. Refuses a file, a folder that holds anything but
    a run of ``ureca train`` (a converted or released checkpoint, a Hugging Face model: training would write
    over its files), and a run that is not to be resumed."""
    if out.exists() and not out.is_dir():
        raise UrecaError(f"--out {out}: exists and is not a folder")
    if not _run_folder(out):
        names = [p.name for p in _entries(out)]
        listed = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        why = ("holds a URECA checkpoint that no ureca train run left here (no train_config.json)"
               if (out / FINAL_MARK).is_file() else f"is not empty and holds no ureca train run ({listed})")
        raise UrecaError(f"--out {out}: {why}; choose a new or empty folder (nothing written)")
    finished = (out / FINAL_MARK).is_file() and (out / "train_config.json").is_file()
    if finished:
        if resume:
            return "done"
        raise UrecaError(f"--out {out}: already holds a finished {what}; choose another folder (nothing written)")
    if any(out.glob("checkpoint-*")) and not resume:
        raise UrecaError(f"--out {out}: holds an interrupted run; pass --resume to continue it, or choose another "
                         f"folder (nothing written)")
    return "resume" if resume and last_complete_checkpoint(out) else "new"


def _check_init(cfg: TrainConfig) -> None:
    """--init is a stage-1 checkpoint, and no model option given on the command line contradicts it (stage 2
    keeps the model --init was trained as)."""
    init = cfg.init
    used, adapter = init_model(init)
    if adapter:
        raise UrecaError(f"--init {init}: has a LoRA adapter already (a stage-2 checkpoint); stage 2 starts from "
                         f"a stage-1 checkpoint")
    bad = []
    for name in MODEL_OPTIONS:
        key = OPTIONS[name][1]
        mine, theirs = getattr(cfg.model, key), getattr(used, key)
        if name in cfg.given and mine != theirs:
            bad.append(f"{flag_text(name, mine)} (it has {flag_text(name, theirs)})")
    if bad:
        raise UrecaError(f"--init {init}: stage 2 keeps the model it was trained as; leave out {'; '.join(bad)}")


def train_main(paths: list[str], cfg: TrainConfig, validation: Validation | None = None) -> dict | None:
    """``ureca train``: check everything, train the stage(s), and hand the held-out regions to ``validation``
    (when ``cfg.val.enabled``). Returns what ``validation`` returns (the scores), or ``None``."""
    _amp(cfg)  # a precision this machine cannot run fails here, not after the data is read
    if _fsdp() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Our checkpoint writer reads the unwrapped model's parameters, which under FSDP on several processes
        # are this rank's shards: the checkpoints would be wrong. Only one process has been run (see
        # configs/accelerate/README.md).
        raise UrecaError("FSDP over several processes is not supported yet (checkpoints would hold one rank's "
                         "shards); use configs/accelerate/ddp.yaml, or FSDP with --num_processes 1")
    if cfg.stage in ("1", "both"):
        check_base(cfg.model.base)  # a missing or pickled base fails here, before the data is read
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
    if cfg.resume and set(states.values()) == {"new"}:
        raise UrecaError(f"--resume: {cfg.out} holds no checkpoint to go on from; a fresh run is the same command "
                         f"without --resume")
    if cfg.stage == "2":
        _check_init(cfg)
    for stage, folder in (("1", s1_out), ("2", final)):
        if states.get(stage) == "resume":  # damaged files fail here, named, before a model is built
            check_resume_checkpoint(last_complete_checkpoint(folder))
    validate = validation is not None and cfg.val.enabled and bool(val)
    if validate:
        validation.check()
    held = len(samples) - len(train)
    scored = f" ({len(val)} of them to score)" if len(val) < held else ""
    _log(cfg, f"{len(train)} training regions, {held} held out (split by image){scored}; output {cfg.out}")

    model = None
    if "1" in states:
        if states["1"] == "done":
            _log(cfg, f"stage 1 already finished in {s1_out}")
        else:
            model = build_stage1_model(cfg, _weights_dtype(cfg))
            train_stage(cfg, "1", model, train, s1_out)
    if "2" in states:
        if states["2"] == "done":
            _log(cfg, f"stage 2 already finished in {final}")
            model = None
        else:
            from ..model import load_checkpoint

            init = cfg.init if cfg.stage == "2" else s1_out
            model = load_checkpoint(init, trainable=True, **_load_kwargs(cfg, gpu=False))
            cfg = replace(cfg, model=init_model(init)[0])  # train_config.json records the model trained
            train_stage(cfg, "2", model, train, final)
    if int(os.environ.get("RANK", "0")) != 0 or not validate:
        return None
    if model is None:
        from ..model import load_checkpoint

        model = load_checkpoint(final, **_load_kwargs(cfg, gpu=True))  # rank 0 only: its GPU is "cuda"
    return validation(model, val, final)
