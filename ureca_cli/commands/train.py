"""`ureca train`: the two training stages of URECA (mask encoder, then LoRA) on the transformers Trainer."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from ..datasets import FormatName
from .common import cli_errors


class StageChoice(StrEnum):
    one = "1"
    two = "2"
    both = "both"


class PrecisionChoice(StrEnum):
    auto = "auto"
    bf16 = "bf16"
    fp16 = "fp16"
    fp32 = "fp32"


class ProjectorChoice(StrEnum):
    linear = "linear"
    mlp = "mlp"


@cli_errors("train")
def train(
    ctx: typer.Context,
    data: Annotated[list[Path], typer.Argument(
        help="Training data, JSONL: region records (refine --flat), image records (refine), or the released "
             "URECA dataset's InternVL chat lines (with --images and --masks). Several files are concatenated.",
        show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the checkpoint(s), logs and the validation "
                                      "scores: a new or empty one, or with --resume this run's own.",
                                      show_default=False)],
    stage: Annotated[StageChoice, typer.Option("--stage", help="1: mask encoder, its projection and the added "
                                               "tokens' embeddings. 2: LoRA on the language model, from --init. "
                                               "both: 1 then 2 (stage 1 goes to OUT/stage1).")] = StageChoice.both,
    base: Annotated[str, typer.Option("--base", help="InternVL -hf checkpoint (hub id or folder) for stage 1; "
                                      "'tiny' builds a tiny random one (tests, demo).")]
    = "OpenGVLab/InternVL3-1B-hf",
    init: Annotated[Path | None, typer.Option("--init", help="Stage-1 checkpoint folder (or the paper's released model) that stage 2 starts from "
                                              "(the model stays as it was trained: --base, --mask-tokens, "
                                              "--mask-projector, --dynamic-mask and --max-tiles come from it).",
                                              show_default=False)] = None,
    fmt: Annotated[FormatName, typer.Option("--format", help="Format of the data files (ureca_cli.datasets); "
                                            "auto: detected from each file's first record.")] = FormatName.auto,
    images: Annotated[Path | None, typer.Option("--images", help="Folder of the images (released format: "
                                                "sa_XXXX.jpg; also a root for relative paths in records).",
                                                show_default=False)] = None,
    masks: Annotated[Path | None, typer.Option("--masks", help="Folder of SA-1B per-image JSON files "
                                               "(released format).", show_default=False)] = None,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Fraction of images (rounded up) held "
                                                "out of training with all their regions, for the final "
                                                "validation (0: none).")] = 0.05,
    val_max_regions: Annotated[int, typer.Option("--val-max-regions", help="At most this many held-out regions, "
                                                 "spread over the held-out images, are captioned and scored at "
                                                 "the end; the rest are not trained on either (0: all).")] = 200,
    mask_tokens: Annotated[int, typer.Option("--mask-tokens", "-K", help="Mask tokens per tile (4, 8, 16).")] = 8,
    dynamic_mask: Annotated[bool, typer.Option("--dynamic-mask/--no-dynamic-mask",
                                               help="Tile the mask like the image (dynamic mask modeling) or "
                                                    "use one resized mask.")] = True,
    mask_projector: Annotated[ProjectorChoice, typer.Option("--mask-projector",
                                                            help="Projection of mask features.")]
    = ProjectorChoice.linear,
    max_tiles: Annotated[int | None, typer.Option("--max-tiles", help="Most image tiles (InternVL default 12).",
                                                  show_default=False)] = None,
    epochs: Annotated[float, typer.Option("--epochs", help="Epochs per stage.")] = 2.0,
    max_steps: Annotated[int, typer.Option("--max-steps", help="Stop each stage after this many optimizer "
                                           "steps (-1: use --epochs).")] = -1,
    lr1: Annotated[float, typer.Option("--lr-stage1", help="Peak learning rate of stage 1.")] = 2e-4,
    lr2: Annotated[float, typer.Option("--lr-stage2", help="Peak learning rate of stage 2.")] = 4e-5,
    global_batch: Annotated[int, typer.Option("--global-batch", help="Samples per optimizer step over all "
                                              "processes (per-device batch x processes x accumulation).")] = 16,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Most samples per device per forward pass "
                                            "(lowered to the largest that divides the global batch per "
                                            "process).")] = 4,
    warmup: Annotated[float, typer.Option("--warmup-ratio", help="Linear warm-up, as a fraction of steps.")] = 0.03,
    weight_decay: Annotated[float, typer.Option("--weight-decay")] = 0.01,
    scheduler: Annotated[str, typer.Option("--scheduler", help="transformers scheduler name.")] = "cosine",
    lora_r: Annotated[int, typer.Option("--lora-r")] = 128,
    lora_alpha: Annotated[int, typer.Option("--lora-alpha")] = 256,
    lora_dropout: Annotated[float, typer.Option("--lora-dropout")] = 0.05,
    precision: Annotated[PrecisionChoice, typer.Option("--precision", help="auto: bf16 where the GPU supports "
                                                       "it, else fp32.")] = PrecisionChoice.auto,
    grad_ckpt: Annotated[bool, typer.Option("--gradient-checkpointing/--no-gradient-checkpointing",
                                            help="Recompute activations in the backward pass to save memory.")]
    = True,
    save_steps: Annotated[int, typer.Option("--save-steps", help="Checkpoint every N optimizer steps.")] = 500,
    save_limit: Annotated[int, typer.Option("--save-total-limit", help="Keep only the newest N step "
                                            "checkpoints (0: keep all).")] = 3,
    logging_steps: Annotated[int, typer.Option("--logging-steps", help="Print loss and throughput every N "
                                               "steps.")] = 10,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run in OUT from its last "
                                         "complete checkpoint (optimizer, scheduler, RNG and data order); "
                                         "refused when OUT holds none.")] = False,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    workers: Annotated[int, typer.Option("--workers", help="Data-loader worker processes.")] = 0,
    cpu: Annotated[bool, typer.Option("--cpu", help="Train on the CPU even where a GPU is present.")] = False,
    val_max_new_tokens: Annotated[int, typer.Option("--val-max-new-tokens", help="Caption length cap in the "
                                                    "validation pass.")] = 64,
    bertscore_model: Annotated[str | None, typer.Option("--bertscore-model", help="BERTScore model for the "
                                                        "validation scores (passed to ureca score).",
                                                        show_default=False)] = None,
    bertscore_layers: Annotated[int | None, typer.Option("--bertscore-layers", help="Layer of a local "
                                                         "--bertscore-model folder.", show_default=False)] = None,
    no_bertscore: Annotated[bool, typer.Option("--no-bertscore", help="Skip BERTScore in the validation "
                                               "scores.")] = False,
    no_validate: Annotated[bool, typer.Option("--no-validate", help="Skip the final validation pass.")] = False,
) -> None:
    """Train URECA: stage 1 (mask encoder) and/or stage 2 (LoRA on the language model).

    Every default is the paper's (Appendix A): lr 2e-4 then 4e-5, LoRA r 128 / alpha 256 / dropout 0.05,
    cosine schedule, warm-up 0.03, weight decay 0.01, global batch 16, 2 epochs per stage, bf16 where the GPU
    has it. Multi-GPU: launch the same command through torchrun or accelerate (configs/accelerate/).

    Examples:

      ureca train regions.jsonl --out runs/ureca-1b

      ureca train ureca_train.jsonl --images sa1b/images --masks sa1b/json --out runs/ureca-1b

      ureca train regions.jsonl --stage 2 --init runs/s1 --out runs/s2

      torchrun --nproc_per_node 4 -m ureca_cli train regions.jsonl --out runs/ureca-1b

      ureca train regions.jsonl --out runs/ureca-1b --resume
    """
    from ..evaluate.validate import Validator
    from ..train.config import MODEL_OPTIONS, TrainConfig
    from ..train.data import DataConfig
    from ..train.trainer import train_main

    cfg = TrainConfig.from_options(
        out=out,
        stage=stage.value,
        init=init,
        data=DataConfig(images_dir=images, masks_dir=masks, format=FormatName(fmt).value, val_fraction=val_fraction,
                        val_max_regions=val_max_regions, seed=seed),
        base=base,
        mask_tokens=mask_tokens,
        dynamic_mask=dynamic_mask,
        mask_projector=mask_projector.value,
        max_tiles=max_tiles,
        epochs=epochs,
        max_steps=max_steps,
        lr_stage1=lr1,
        lr_stage2=lr2,
        global_batch=global_batch,
        per_device_batch=batch_size,
        warmup_ratio=warmup,
        weight_decay=weight_decay,
        scheduler=scheduler,
        gradient_checkpointing=grad_ckpt,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        validate=not no_validate,
        val_max_new_tokens=val_max_new_tokens,
        bertscore=not no_bertscore,
        bertscore_model=bertscore_model,
        bertscore_layers=bertscore_layers,
        precision=precision.value,
        save_steps=save_steps,
        save_total_limit=save_limit,
        logging_steps=logging_steps,
        resume=resume,
        seed=seed,
        workers=workers,
        cpu=cpu,
        given=frozenset(k for k in MODEL_OPTIONS  # by name: typer may carry its own click and ParameterSource
                        if getattr(ctx.get_parameter_source(k), "name", "DEFAULT") != "DEFAULT"),
    )
    try:
        train_main([str(p) for p in data], cfg, Validator(cfg))
    except BaseException:
        _close_process_group(wait=False)
        raise
    _close_process_group(wait=True)


def _close_process_group(wait: bool) -> None:
    """Under torchrun, leave the gloo/NCCL group cleanly: a rank that exits with the group still up can abort
    ("terminate called without an active exception") after its work is done, failing the whole launch."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return
    try:
        if wait:  # every rank finished: meet, then close
            torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()
