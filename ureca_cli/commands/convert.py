"""`ureca convert`: the paper's released checkpoint -> a URECA checkpoint (once; later loads are fast)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import cli_errors


@cli_errors("convert")
def convert(
    src: Annotated[
        Path,
        typer.Argument(metavar="SRC", help="The paper's released checkpoint: a folder (config.json with model_type "
                       "internvl_chat, safetensors weights, tokenizer) or a hub id.", show_default=False),
    ],
    out: Annotated[
        Path,
        typer.Argument(metavar="OUT", help="New URECA checkpoint folder (must not exist, or be empty).",
                       show_default=False),
    ],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Convert the paper's released model to a URECA checkpoint, shard by shard (memory: about one tensor).

    The InternVL part is renamed to transformers' InternVL (InternLM2 becomes Llama, fused qkv split), the mask
    encoder to ours, the tokenizer to a fast one that needs no remote code; the checkpoint records the released
    preprocessing, so ureca caption reproduces the released captions with no flag. Nothing of SRC is run or
    unpickled (safetensors only). On any error nothing is written.

    \b
    Examples:
      ureca convert ~/models/URECA runs/ureca-paper
      ureca convert SammyLim/URECA runs/ureca-paper
      ureca caption photo.jpg --mask dog.png --model runs/ureca-paper
    """
    from ..model.convert import check_out, convert_released
    from ..model.released import resolve_source

    check_out(out)  # before any download
    source = resolve_source(src, "SRC")
    log = None if quiet else (lambda line: typer.echo(line, err=True))
    summary = convert_released(source, out, log=log)
    if not quiet:
        typer.echo(f"converted {src} ({summary.family}, {summary.shards} shard(s), {summary.tensors} tensors, "
                   f"{summary.bytes_written / 2**30:.2f} GiB) to {out} in {summary.seconds:.1f} s", err=True)
