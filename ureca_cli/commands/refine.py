"""`ureca refine`: uniqueness refinement with DINOv2 and set-of-mark prompts, verification, and export."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from .chat import ChatOptions, chat_options
from .common import Failed, OnErrorOpt, Output, ProgressOpt, Resume, Shard, cli_errors, stream_config


class FeatureChoice(StrEnum):
    crop = "crop"
    masked_pool = "masked-pool"


class FormatChoice(StrEnum):
    records = "records"
    flat = "flat"
    internvl = "internvl"


HELP = """Give every captioned region a caption that tells it apart from the regions that look like it.

Reads image records from `ureca annotate` (files or - for stdin). Each captioned region is embedded with
DINOv2; the regions above --threshold cosine similarity form its similar set. A region with look-alikes is
shown to the chat model in a set-of-mark image (itself outlined in blue as 0, the others numbered) with its
caption, and the answer becomes its `unique_caption` and `caption`. Every region gets `similar` (ids and
scores). --verify asks a judge model True or False per caption (`verified`); an answer that is neither gets one
reminder, and a second one leaves `verified: null` (undecided); --drop-unverified removes the regions not
judged True. --flat writes one region record per captioned region (what train, caption and score
read); --format internvl writes the released URECA dataset's chat JSONL. Both carry the refined captions.

Examples:

\b
  ureca tree sa_1.json | ureca annotate | ureca refine -o refined.jsonl
  ureca refine captioned.jsonl --backend openai \\
      --base-url http://127.0.0.1:8000/v1 -o refined.jsonl
  ureca refine captioned.jsonl --features masked-pool --threshold 0.85 \\
      --save-prompts prompts/ -o refined.jsonl
  ureca refine refined.jsonl --no-refine --verify --drop-unverified \\
      --backend openai --base-url https://api.openai.com/v1 \\
      --judge-model gpt-4o --api-key-env OPENAI_API_KEY -o test.jsonl
  ureca refine refined.jsonl --no-refine --format internvl -o train.jsonl
"""


@cli_errors("refine")
@chat_options()
def refine(
    inputs: Annotated[list[str] | None, typer.Argument(help="JSONL files of image records; - or nothing: stdin.",
                                                       show_default=False)] = None,
    output: Output = None,
    *,
    chat: ChatOptions,
    features: Annotated[FeatureChoice, typer.Option(help="crop: DINOv2 on each region's blurred-background crop "
                                                         "(the released input). masked-pool: one pass per image, "
                                                         "patch features pooled inside each mask.")] = FeatureChoice.crop,
    features_model: Annotated[str, typer.Option(help="DINOv2 checkpoint (hub id or folder), or random:NAME for "
                                                     "random weights from a packaged config (dinov2-vits14, "
                                                     "dinov2-base, dinov2-tiny).")] = "facebook/dinov2-base",
    features_device: Annotated[str | None, typer.Option(help="Device for DINOv2 (default: --device, else cuda "
                                                             "when present).", show_default=False)] = None,
    features_batch: Annotated[int, typer.Option(help="Crops per DINOv2 forward pass.")] = 32,
    features_dtype: Annotated[str, typer.Option(help="dtype of DINOv2: float32, bfloat16, float16.")] = "float32",
    pool_side: Annotated[int, typer.Option(help="Long side, in pixels, of the image DINOv2 sees in masked-pool "
                                                "mode.")] = 518,
    threshold: Annotated[float, typer.Option(help="Cosine similarity above which two regions are look-alikes.")] = 0.8,
    max_similar: Annotated[int, typer.Option(help="At most this many look-alikes per region, most similar first; "
                                                  "0: no cap.")] = 8,
    do_refine: Annotated[bool, typer.Option("--refine/--no-refine", help="Rewrite captions of regions with "
                                            "look-alikes. --no-refine with neither --verify: only export.")] = True,
    verify: Annotated[bool, typer.Option("--verify", help="Ask a judge model whether each caption fits its region "
                                         "(True/False), stored as `verified`.")] = False,
    drop_unverified: Annotated[bool, typer.Option("--drop-unverified", help="Remove regions the judge does not "
                                                  "find True: False, or no True/False after one reminder (needs "
                                                  "--verify).")] = False,
    judge_model: Annotated[str | None, typer.Option(help="Judge model for --verify (default: the chat model), on "
                                                         "the same backend.", show_default=False)] = None,
    judge_base_url: Annotated[list[str] | None, typer.Option("--judge-base-url", help="Server(s) of the judge "
                                                             "(default: --base-url).", show_default=False)] = None,
    prompts: Annotated[Path | None, typer.Option(help="Folder whose refine.txt / verify.txt / verify_retry.txt "
                                                      "replace the packaged templates.", show_default=False)] = None,
    save_prompts: Annotated[Path | None, typer.Option(help="Write every image sent to DIR/<image_id>/<node>_<kind>"
                                                           ".png.", show_default=False)] = None,
    images_in_flight: Annotated[int | None, typer.Option(help="Images worked on at once (default: twice the "
                                                               "backend's concurrency).", show_default=False)] = None,
    flat: Annotated[bool, typer.Option("--flat", help="Write one region record per captioned region "
                                       "(same as --format flat).")] = False,
    fmt: Annotated[FormatChoice, typer.Option("--format", help="records: image records; flat: region records; "
                                              "internvl: the released dataset's chat JSONL.")] = FormatChoice.records,
    question: Annotated[str, typer.Option(help="The human turn of --format internvl.")] = (
        "Describe this region in the image."),
    on_error: OnErrorOpt = "stop",  # type: ignore[assignment]
    failed: Failed = None,
    resume: Resume = False,
    shard: Shard = None,
    progress: ProgressOpt = None,
) -> None:
    from ..curate.features import FeatureConfig
    from ..curate.refine import RefineConfig, Refiner, run
    from ..errors import UrecaError
    from ..stream import check_output_not_input, stdin_binary
    from ..visual.prompter import VisualSettings
    from ..visual.setofmark import MarkSettings

    if flat and fmt not in (FormatChoice.records, FormatChoice.flat):
        raise UrecaError("--flat and --format internvl: choose one")
    if not verify and (judge_model is not None or judge_base_url):
        raise UrecaError("--judge-model and --judge-base-url choose the judge of --verify: add --verify")
    out_format = "flat" if flat else fmt.value
    scfg = stream_config(output, on_error, failed, resume, shard, progress)
    check_output_not_input(scfg, inputs or [])
    if not inputs or "-" in inputs:
        stdin_binary(terminal_ok=False)  # a closed stdin or a terminal is named before any model or server
    cfg = RefineConfig(
        features=FeatureConfig(model=features_model, mode=features.value, device=features_device or chat.device or _auto_device(do_refine),
                               dtype=features_dtype, batch_size=features_batch, pool_side=pool_side),
        threshold=threshold,
        max_similar=max_similar or None,
        refine=do_refine,
        verify=verify,
        drop_unverified=drop_unverified,
        visual=VisualSettings(max_side=chat.max_side),
        marks=MarkSettings(max_side=chat.max_side),
        generation=chat.generation(),
        prompts=prompts,
        save_prompts=save_prompts,
        images_in_flight=images_in_flight,
        format=out_format,
        question=question,
    )

    backend = judge = None
    try:
        if do_refine or (verify and judge_model is None and not judge_base_url):
            backend = chat.build()
        if verify and (judge_model is not None or judge_base_url):
            judge = chat.build(model=judge_model or chat.model, base_url=tuple(judge_base_url or chat.base_url))
        run(inputs, Refiner(cfg, backend, judge), scfg)
    finally:
        for b in {id(x): x for x in (backend, judge) if x is not None}.values():
            b.close()


def _auto_device(needed: bool) -> str:
    if not needed:
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


refine.__doc__ = HELP
