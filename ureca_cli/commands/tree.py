"""`ureca tree`: SA-1B per-image JSON files (or tar shards of them) -> one image record (a mask tree) per line."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UrecaError
from .common import (
    Failed,
    OnErrorChoice,
    OnErrorOpt,
    Output,
    ProgressOpt,
    Resume,
    Shard,
    cli_errors,
    stream_config,
)


class ParentRule(StrEnum):
    tightest = "tightest"
    first = "first"


@cli_errors("tree")
def tree(
    inputs: Annotated[
        list[str] | None,
        typer.Argument(
            help="SA-1B per-image JSON files (or SAM automatic-mask-generator output), SA-1B tar shards (read in "
            "place, never extracted), directories or globs of either, or - to read a list of paths from stdin. "
            "Each file is read once.",
            show_default=False,
        ),
    ] = None,
    threshold: Annotated[
        float, typer.Option("--threshold", help="Containment |a∩b|/|a| at which a hangs under b.")
    ] = 0.8,
    parent_rule: Annotated[
        ParentRule,
        typer.Option(
            "--parent-rule",
            help="tightest: the smallest earlier mask that contains it. first: the released URECA code "
            "(greedy descent into the first child that contains it).",
        ),
    ] = ParentRule.tightest,
    main_min_depth: Annotated[
        int, typer.Option("--main-min-depth", help="Levels a main object's subtree needs, counting itself.")
    ] = 4,
    main_min_area: Annotated[
        float, typer.Option("--main-min-area", help="Smallest main object, as a fraction of the image.")
    ] = 0.007,
    main_max_area: Annotated[
        float, typer.Option("--main-max-area", help="Largest main object, as a fraction of the image.")
    ] = 0.7,
    part_min_area: Annotated[
        float,
        typer.Option("--part-min-area", help="Parts below this fraction of the image are dropped with their subtree."),
    ] = 0.007,
    images: Annotated[
        Path | None,
        typer.Option("--images", help="Folder holding the images (default: next to each JSON, in its tar for a "
                     "tar shard).", show_default=False),
    ] = None,
    render: Annotated[
        Path | None,
        typer.Option("--render", help="Write a PNG per image here: outlined regions beside the tree.",
                     show_default=False),
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Worker processes.")] = 1,
    output: Output = None,
    on_error: OnErrorOpt = OnErrorChoice.stop,
    failed: Failed = None,
    resume: Resume = False,
    shard: Shard = None,
    progress: ProgressOpt = None,
) -> None:
    """Build a mask tree per image from SA-1B masks: one JSON line per image, every mask a node.

    Masks are ordered by area; a mask hangs under an earlier one that holds at least --threshold of its
    pixels. Children of the whole image with a subtree at least --main-min-depth deep and an area within
    the bounds become main objects, their large enough descendants parts; the rest are kept as dropped,
    with a drop_reason.

    A tar shard (SA-1B as it is distributed) is read in place: its JSON members in archive order, each
    record's image a reference into the tar (TAR#MEMBER@OFFSET:SIZE) that every later stage opens directly.
    A compressed tar is refused: decompress it once, or extract it.

    \b
    Examples:
      ureca tree sa_000000/sa_1.json
      ureca tree sa_000000.tar sa_000001.tar -o trees.jsonl --jobs 8
      ureca tree sa_000000/ -o trees.jsonl --jobs 8
      ureca tree 'sa_*/*.json' --parent-rule first --render trees-png/
      find sa_000000 -name '*.json' | ureca tree - --shard 0/4 -o part0.jsonl
      ureca tree sa_000000/ -o trees.jsonl --resume
    """
    from ..curate.tree import TreeConfig, run

    cfg = TreeConfig(
        threshold=threshold,
        parent_rule=ParentRule(parent_rule).value,
        main_min_depth=main_min_depth,
        main_min_area=main_min_area,
        main_max_area=main_max_area,
        part_min_area=part_min_area,
        images=images,
        render=render,
    )
    scfg = stream_config(output, on_error, failed, resume, shard, progress, jobs)
    specs = list(inputs or [])
    if not specs:
        if sys.stdin.isatty():
            raise UrecaError("give SA-1B JSON files or tar shards, directories or globs, or - to read a list of paths "
                             "from stdin")
        specs = ["-"]
    run(specs, cfg, scfg)
