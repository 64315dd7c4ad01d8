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
from .sam import AmgOptions, SamDtypeOpt, SamModelOpt, amg_options


class ParentRule(StrEnum):
    tightest = "tightest"
    first = "first"


@cli_errors("tree")
@amg_options()
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
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Worker processes (1 with --generate-masks: SAM runs "
                                      "in this process).")] = 1,
    generate_masks: Annotated[
        bool,
        typer.Option("--generate-masks", help="The inputs are photos (jpg, jpeg, png; folders, globs): SAM's automatic "
                     "mask generation makes each one's masks, then its tree is built as from an SA-1B file."),
    ] = False,
    write_masks: Annotated[
        Path | None,
        typer.Option("--write-masks", metavar="DIR", help="With --generate-masks: keep each photo's masks as SA-1B "
                     "JSON, DIR/<image_id>.json (ureca tree DIR --images PHOTOS reads them).", show_default=False),
    ] = None,
    sam_model: SamModelOpt = None,
    sam_dtype: SamDtypeOpt = None,
    device: Annotated[
        str | None,
        typer.Option("--device", help="With --generate-masks: where SAM runs (cpu, cuda, cuda:1; default: cuda when "
                     "present).", show_default=False),
    ] = None,
    amg: AmgOptions = AmgOptions(),  # noqa: B008 - replaced by @amg_options with one option per setting
    output: Output = None,
    on_error: OnErrorOpt = OnErrorChoice.stop,
    failed: Failed = None,
    resume: Resume = False,
    shard: Shard = None,
    progress: ProgressOpt = None,
) -> None:
    """Build a mask tree per image from SA-1B masks, or from any photos: one JSON line per image, every mask a node.

    Masks are ordered by area; a mask hangs under an earlier one that holds at least --threshold of its
    pixels. Children of the whole image with a subtree at least --main-min-depth deep and an area within
    the bounds become main objects, their large enough descendants parts; the rest are kept as dropped,
    with a drop_reason. With --generate-masks the inputs are photos, and SAM (--sam-model, loaded once)
    makes their masks as SA-1B's were made: a grid of point prompts, predicted-IoU and stability filters,
    non-maximum suppression, crops (--points-per-side, --pred-iou-thresh, ...; the defaults are SAM's).

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
      ureca tree photos/ --generate-masks --write-masks masks/ -o trees.jsonl
      ureca tree 'photos/**/*.jpg' --generate-masks --sam-model ./sam-vit-base --points-per-side 16 --device cuda:1 --shard 1/2 -o part1.jsonl
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
    if not generate_masks:
        only = [flag for flag, value in (("--write-masks", write_masks), ("--sam-model", sam_model),
                                         ("--sam-dtype", sam_dtype), ("--device", device)) if value is not None]
        only += amg.given()
        if only:
            raise UrecaError(f"{', '.join(only)}: only with --generate-masks (SAM makes the masks of photos)")
    else:
        from ..curate.tree_photos import GenerateConfig

        gcfg = GenerateConfig(sam_model=sam_model or GenerateConfig.sam_model, device=device,
                              dtype=sam_dtype or "auto", amg=amg.config(), write_masks=write_masks)
    specs = list(inputs or [])
    if not specs:
        if sys.stdin.isatty():
            what = "photos" if generate_masks else "SA-1B JSON files or tar shards"
            raise UrecaError(f"give {what}, directories or globs, or - to read a list of paths from stdin")
        specs = ["-"]
    if generate_masks:
        from ..curate import tree_photos

        tree_photos.run(specs, cfg, gcfg, scfg)
        return
    run(specs, cfg, scfg)
