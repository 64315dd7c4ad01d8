"""`ureca annotate`: short phrases top-down, paragraphs bottom-up, for every region of every tree record."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .chat import ChatOptions, chat_options
from .common import Failed, OnErrorOpt, Output, ProgressOpt, Resume, Shard, cli_errors, stream_config


@cli_errors("annotate")
@chat_options()
def annotate(
    input: Annotated[str, typer.Argument(help="Tree records (JSONL from `ureca tree`); - for stdin.")] = "-",
    *,
    chat: ChatOptions,
    blur_sigma: Annotated[float, typer.Option("--blur-sigma", help="Gaussian blur of the background, pixels.")] = 100.0,
    prompts: Annotated[Path | None, typer.Option("--prompts", help="Folder of <name>.txt templates that replace "
                                                 "the built-in ones.", show_default=False)] = None,
    save_prompts: Annotated[Path | None, typer.Option("--save-prompts", help="Write every image sent to DIR/"
                                                      "<image_id>/<node>_<kind>.jpg (or .png).", show_default=False)] = None,
    images_in_flight: Annotated[int | None, typer.Option("--images-in-flight", help="Images worked on at once "
                                                         "(default: twice the concurrency).", show_default=False)] = None,
    prepare_workers: Annotated[int | None, typer.Option("--prepare-workers", help="Processes that draw and "
                                                        "encode prompt images (default: up to 4 with --backend "
                                                        "openai, 0 = in threads).", show_default=False)] = None,
    output: Output = None,
    on_error: OnErrorOpt = "stop",  # type: ignore[assignment]
    failed: Failed = None,
    resume: Resume = False,
    shard: Shard = None,
    progress: ProgressOpt = None,
) -> None:
    """Caption every region of every tree record: a short phrase per region top-down (each part sees its
    parent's phrase and its earlier siblings' phrases), then a paragraph per parent bottom-up.

    Each node gets short_caption, long_caption and caption; each record says which model, backend, prompt
    version and settings made them. An image is written only when all its regions are captioned.

    \b
    Examples:
      ureca tree sa_1.json | ureca annotate --backend openai --base-url http://gpu1:8000/v1 -o captioned.jsonl
      ureca annotate trees.jsonl --backend hf --model OpenGVLab/InternVL3-1B-hf --batch-size 16 -o out.jsonl
      ureca annotate trees.jsonl --backend openai --resume -o out.jsonl --failed retry.jsonl --on-error skip
    """
    from ..curate.annotate import AnnotateConfig, Annotator, run
    from ..stream import check_output_not_input, stdin_binary
    from ..visual.prompter import VisualSettings

    cfg_stream = stream_config(output, on_error, failed, resume, shard, progress)
    check_output_not_input(cfg_stream, [input])
    if input == "-":
        stdin_binary(terminal_ok=False)  # a closed stdin or a terminal is named before any server is asked
    cfg = AnnotateConfig(
        generation=chat.generation(),
        visual=VisualSettings.for_max_side(chat.max_side, sigma=blur_sigma),
        prompts=prompts,
        save_prompts=save_prompts,
        images_in_flight=images_in_flight,
        prepare_workers=prepare_workers,
    )
    with chat.build() as backend:
        run(input, Annotator(backend, cfg), cfg_stream)
