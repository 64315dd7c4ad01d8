"""`ureca annotate`: short phrases top-down, paragraphs bottom-up, for every region of every tree record.

The chat-backend options defined here (``BackendOpt``, ``ModelOpt``, ...) and ``backend_from_options`` are
shared by the other commands that talk to a chat model (refine, caption's baselines).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from .common import Failed, OnErrorOpt, Output, ProgressOpt, Resume, Shard, cli_errors, stream_config

BackendOpt = Annotated[
    str,
    typer.Option("--backend", help="hf: a transformers model in this process. openai: an OpenAI-compatible server."),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="hf: a hub id or local folder (default OpenGVLab/InternVL3-1B-hf). openai: the served model name "
        "(default: the first one the server lists).",
        show_default=False,
    ),
]
BaseUrlOpt = Annotated[
    list[str] | None,
    typer.Option("--base-url", help="openai: server URL ending in /v1; repeat it to spread requests round-robin.",
                 show_default=False),
]
ApiKeyEnvOpt = Annotated[
    str | None,
    typer.Option("--api-key-env", help="openai: name of the environment variable holding the API key.",
                 show_default=False),
]
ConcurrencyOpt = Annotated[int, typer.Option("--concurrency", help="openai: requests in flight at once.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="openai: seconds to wait for one answer.")]
RetriesOpt = Annotated[int, typer.Option("--retries", help="openai: retries of a failed request (backoff + jitter).")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="hf: cuda, cuda:1, cpu (default: cuda if present).",
                                               show_default=False)]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="hf: auto, bfloat16, float16 or float32.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="hf: conversations per generate call.")]
MaxNewOpt = Annotated[int, typer.Option("--max-new-tokens", help="Longest answer, in tokens.")]
TempOpt = Annotated[float, typer.Option("--temperature", help="0 for greedy decoding.")]
TopPOpt = Annotated[float, typer.Option("--top-p", help="Nucleus sampling mass (with --temperature > 0).")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Sampling seed, where the backend supports one.",
                                             show_default=False)]
MaxSideOpt = Annotated[int | None, typer.Option("--max-side", help="Downscale every image sent so its longer side "
                                                "is at most this many pixels.", show_default=False)]


def backend_from_options(
    backend: str, model: str | None, base_url: list[str] | None, api_key_env: str | None, concurrency: int,
    timeout: float, retries: int, device: str | None, dtype: str, batch_size: int,
) -> Any:
    """A ``ChatBackend`` from the shared options (``ureca_cli.mllm.make_backend``)."""
    from ..errors import UrecaError
    from ..mllm import make_backend

    if backend == "openai":
        return make_backend("openai", base_urls=base_url or ["http://127.0.0.1:8000/v1"], model=model,
                            api_key_env=api_key_env, concurrency=concurrency, timeout=timeout, retries=retries)
    if backend == "hf":
        from ..mllm.hf import DEFAULT_MODEL

        return make_backend("hf", model=model or DEFAULT_MODEL, device=device, dtype=dtype, batch_size=batch_size)
    raise UrecaError(f"--backend {backend!r}: choose hf or openai")


@cli_errors("annotate")
def annotate(
    input: Annotated[str, typer.Argument(help="Tree records (JSONL from `ureca tree`); - for stdin.")] = "-",
    backend: BackendOpt = "hf",
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    api_key_env: ApiKeyEnvOpt = None,
    concurrency: ConcurrencyOpt = 8,
    timeout: TimeoutOpt = 120.0,
    retries: RetriesOpt = 6,
    device: DeviceOpt = None,
    dtype: DtypeOpt = "auto",
    batch_size: BatchOpt = 8,
    max_new_tokens: MaxNewOpt = 256,
    temperature: TempOpt = 0.0,
    top_p: TopPOpt = 1.0,
    seed: SeedOpt = None,
    max_side: MaxSideOpt = None,
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
    from ..curate.annotate import AnnotateConfig, Annotator
    from ..mllm import GenerationSettings
    from ..stream import check_output_not_input
    from ..visual.prompter import VisualSettings

    cfg_stream = stream_config(output, on_error, failed, resume, shard, progress)
    check_output_not_input(cfg_stream, [input])
    cfg = AnnotateConfig(
        generation=GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed),
        visual=VisualSettings(sigma=blur_sigma, max_side=max_side),
        prompts=prompts,
        save_prompts=save_prompts,
        images_in_flight=images_in_flight,
        prepare_workers=prepare_workers,
    )
    chat = backend_from_options(backend, model, base_url, api_key_env, concurrency, timeout, retries, device, dtype,
                                batch_size)
    with chat:
        run_annotate(input, Annotator(chat, cfg), cfg_stream)


def run_annotate(input: str, annotator: Any, cfg_stream: Any) -> Any:
    """Stream ``input`` through ``annotator`` under the stream contract; returns run_stage's summary."""
    from ..curate.annotate import run

    return run(input, annotator, cfg_stream)
