"""`ureca caption`: caption regions with a URECA checkpoint (one image and its masks, or a JSONL batch)."""

from __future__ import annotations

from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from ..datasets import FormatName
from ..errors import UrecaError
from .chat import ChatOptions, chat_options
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
from .sam import SamDtypeOpt, SamModelOpt


class BoxToMask(StrEnum):
    rect = "rect"
    sam = "sam"


CHAT_ONLY = ("backend", "base_url", "api_key_env", "concurrency", "timeout", "retries", "max_side")


@cli_errors("caption")
@chat_options(only=CHAT_ONLY)
def caption(
    image: Annotated[
        Path | None,
        typer.Argument(metavar="IMAGE", help="The image whose regions to caption (or use --input).",
                       show_default=False),
    ] = None,
    *,
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", metavar="DIR", help="URECA checkpoint folder (from ureca train or ureca convert), "
                     "or the paper's released model (folder or hub id, e.g. SammyLim/URECA). With --region-prompt: "
                     "the chat model (--backend openai: the served name, default the server's first; --backend hf: a "
                     "hub id or folder, default OpenGVLab/InternVL3-1B-hf).", show_default=False),
    ] = None,
    mask: Annotated[
        list[Path] | None,
        typer.Option("--mask", metavar="PNG", help="Region mask PNG: any non-zero pixel, or the alpha channel of an RGBA PNG. "
                     "Repeat for several regions.", show_default=False),
    ] = None,
    rle: Annotated[
        list[str] | None,
        typer.Option("--rle", metavar="JSON", help="Region as a COCO RLE: JSON text or a JSON file. Repeatable.",
                     show_default=False),
    ] = None,
    box: Annotated[
        list[str] | None,
        typer.Option("--box", metavar="X,Y,W,H", help="Region as a box x,y,w,h in pixels: its rectangle, or SAM's mask "
                     "of it with --box-to-mask sam. Repeatable: each box is a region.", show_default=False),
    ] = None,
    point: Annotated[
        list[str] | None,
        typer.Option("--point", metavar="X,Y[:0]", help="A click on the region, x,y in pixels (:0 a click off it); SAM "
                     "makes the mask. Repeatable: all --point options make one region (after the boxes).",
                     show_default=False),
    ] = None,
    box_to_mask: Annotated[
        BoxToMask,
        typer.Option("--box-to-mask", help="rect: a box region is its rectangle. sam: SAM's mask of the box "
                     "(--box, and the box regions of --input files such as Visual Genome's)."),
    ] = BoxToMask.rect,
    sam_model: SamModelOpt = None,
    sam_dtype: SamDtypeOpt = None,
    save_masks: Annotated[
        Path | None,
        typer.Option("--save-masks", metavar="DIR", help="Write each region's mask of IMAGE as a PNG: "
                     "DIR/<image_id>_<i>.png (0/255; --mask reads it back).", show_default=False),
    ] = None,
    input: Annotated[
        Path | None,
        typer.Option("--input", "-i", metavar="FILE", help="JSONL of region records (id, image, rle) or image/tree records "
                     "(every node is captioned), or a benchmark's files (--format: the released URECA JSONL, "
                     "RefCOCOg or Visual Genome JSON, DLC-Bench's folder); - for stdin.", show_default=False),
    ] = None,
    fmt: Annotated[FormatName, typer.Option("--format", help="Format of --input (ureca_cli.datasets); auto: "
                                            "detected from its first record.")] = FormatName.auto,
    images: Annotated[Path | None, typer.Option("--images", help="Folder of the images --input names (also a root "
                                                "for relative paths).", show_default=False)] = None,
    masks: Annotated[Path | None, typer.Option("--masks", help="Folder of SA-1B per-image JSON files (--format "
                                               "internvl).", show_default=False)] = None,
    question: Annotated[
        str | None,
        typer.Option("--question", help="The question after the mask tokens. Default: the checkpoint's "
                     "(\"Describe this region in the image.\").", show_default=False),
    ] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Longest caption, in tokens.")] = 64,
    sample: Annotated[bool, typer.Option("--sample", help="Sample instead of greedy decoding.")] = False,
    temperature: Annotated[float, typer.Option("--temperature", help="Sampling temperature (--sample).")] = 0.7,
    top_p: Annotated[float, typer.Option("--top-p", help="Nucleus sampling mass (--sample).")] = 0.9,
    seed: Annotated[int, typer.Option("--seed", help="Random seed for --sample.")] = 0,
    batch_size: Annotated[
        int, typer.Option("--batch-size", "-b", help="Regions of one image decoded together.")
    ] = 8,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1, ...")] = "auto",
    dtype: Annotated[
        str, typer.Option("--dtype", help="auto (bfloat16 on CUDA; on CPU the weights' own dtype, read as they "
                          "are stored, or float32 where the CPU lacks fast bfloat16), float32, bfloat16, float16.")
    ] = "auto",
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Say where the time went: imports, loading the model, "
                           "preprocessing, generation (the URECA model).")
    ] = False,
    resize_mask: Annotated[
        bool, typer.Option("--resize-mask", help="Resize a mask whose size differs from the image (nearest).")
    ] = False,
    region_prompt: Annotated[
        str | None,
        typer.Option("--region-prompt", metavar="none|contour|crop", help="Paper's Table 2 baselines: caption with a "
                     "plain chat model (--backend; --model names it, default: the server's first) shown the plain "
                     "photo, the region contoured, or its crop.", show_default=False),
    ] = None,
    save_prompts: Annotated[
        Path | None,
        typer.Option("--save-prompts", metavar="DIR", help="With --region-prompt: write every picture sent to "
                     "DIR/<image_id>/<node>_<contour|crop>.png (none: DIR/<image_id>/none.png).",
                     show_default=False),
    ] = None,
    chat: ChatOptions,
    output: Output = None,
    on_error: OnErrorOpt = OnErrorChoice.stop,
    failed: Failed = None,
    resume: Resume = False,
    shard: Shard = None,
    progress: ProgressOpt = None,
) -> None:
    """Caption image regions with a URECA model: one JSON region record per region.

    A region is a mask PNG, a COCO RLE, a box or SAM prompts on IMAGE, or comes from --input: region records
    (id, image, rle) or image records from ureca tree/annotate/refine, whose every node is captioned. SAM
    (--sam-model) turns clicks (--point: all of them one region) and, with --box-to-mask sam, boxes (each its
    own region) into masks, one SAM image encoding for all; the record keeps SAM's mask as rle and the prompt
    under "sam". All regions of one image share one image encoding. Output records {"id", "image_id", "image",
    "caption", ...} feed ureca score; an input caption is kept as "reference".

    \b
    Examples:
      ureca caption photo.jpg --mask dog.png --model runs/ureca-1b
      ureca caption photo.jpg --mask dog.png --model SammyLim/URECA   # the paper's released model
      ureca caption photo.jpg --box 40,60,200,120 --box 300,10,80,80 --model runs/ureca-1b
      ureca caption photo.jpg --rle region.json --model runs/ureca-1b --sample --temperature 0.7
      ureca caption photo.jpg --point 412,300 --point 500,310:0 --model runs/ureca-1b --save-masks masks/
      ureca caption photo.jpg --box 40,60,200,120 --box-to-mask sam --sam-model ./sam-vit-base --model runs/ureca-1b
      ureca caption photo.jpg --mask dog.png --model runs/ureca-1b --verbose   # where the time goes
      ureca caption --input regions.jsonl --model runs/ureca-1b -o preds.jsonl
      ureca caption --input trees.jsonl --model runs/ureca-1b -o preds.jsonl && ureca score preds.jsonl regions.jsonl
      ureca caption --input finetune_refcocog_val_captions.json --images coco/train2014 --model runs/ureca-1b -o preds.jsonl
      ureca caption --input DLC-bench/ --model runs/ureca-1b -o dlc_preds.jsonl
      ureca caption --input region_descriptions.json --images vg/ --box-to-mask sam --model runs/ureca-1b -o vg_preds.jsonl
      ureca caption --input regions.jsonl --region-prompt contour --backend openai --base-url http://gpu1:8000/v1 -o base.jsonl
      ureca caption --input regions.jsonl --region-prompt crop --backend openai --base-url http://gpu1:8000/v1 --save-prompts sent/ -o base.jsonl
    """
    from ..caption.captioner import (
        CaptionConfig,
        Captioner,
        caption_input,
        check_input,
        image_regions,
        write_image_regions,
    )
    from ..caption.sam_regions import box_masker, prompt_regions, sam_masks
    from ..datasets import ReadOptions
    from ..sam import DEFAULT_SAM_MODEL
    from ..sam.config import check_sam_dtype
    from ..stream import check_output_folder, check_output_not_input

    regions_given = bool(mask or rle or box or point)
    if input is not None and (image is not None or regions_given):
        raise UrecaError("give either IMAGE with --mask/--rle/--box/--point, or --input FILE, not both")
    by_sam = BoxToMask(box_to_mask) == BoxToMask.sam
    if input is None:
        if image is None:
            raise UrecaError("give an IMAGE and a region (--mask, --rle, --box or --point), or --input FILE")
        if not regions_given:
            raise UrecaError(f"{image}: give the region with --mask PNG, --rle JSON, --box x,y,w,h or --point x,y")
        batch_only = [flag for flag, given in (("--resume", resume), ("--failed", failed is not None),
                                               ("--shard", shard is not None),
                                               ("--on-error skip", OnErrorChoice(on_error) == OnErrorChoice.skip),
                                               ("--format", FormatName(fmt) != FormatName.auto),
                                               ("--images", images is not None), ("--masks", masks is not None))
                      if given]
        if batch_only:
            raise UrecaError(f"{', '.join(batch_only)}: only with --input FILE (one IMAGE is one unit of work)")
    elif save_masks is not None:
        raise UrecaError("--save-masks: only with IMAGE (the records --input reads keep their masks as rle)")
    if region_prompt is None and model is None:
        raise UrecaError("--model DIR: give the URECA checkpoint to caption with (a folder from ureca train or "
                         "ureca convert, or a hub id such as SammyLim/URECA)")
    use_sam = bool(point) or (by_sam and (input is not None or bool(box)))
    sam_only = [flag for flag, value in (("--sam-model", sam_model), ("--sam-dtype", sam_dtype)) if value is not None]
    if sam_only and not use_sam:
        raise UrecaError(f"{', '.join(sam_only)}: only with --point or --box-to-mask sam (no region here is made by SAM)")
    sam_opts = {"sam_model": sam_model or DEFAULT_SAM_MODEL, "device": None if device == "auto" else device,
                "dtype": check_sam_dtype(sam_dtype or "auto")}
    check_output_folder("--save-masks", save_masks)
    if region_prompt is not None and verbose:
        raise UrecaError("--verbose: only for the URECA model (with --region-prompt the time is the server's)")
    if region_prompt is None:
        chat_only = chat.given(CHAT_ONLY) + (["--save-prompts"] if save_prompts is not None else [])
        if chat_only:
            raise UrecaError(f"{', '.join(chat_only)}: only with --region-prompt (the chat-model baselines); "
                             "the URECA model runs in this process")
    # every setting is checked before any input is read or any model is looked for
    scfg = stream_config(output, on_error, failed, resume, shard, progress)
    if region_prompt is not None:  # the Table 2 baselines through a chat backend (ureca_cli/caption/baselines.py)
        from ..caption.baselines import BaselineConfig
        from ..visual.prompter import VisualSettings

        chat = replace(chat, model=None if model is None else str(model), device=None if device == "auto" else device, dtype=dtype,
                       batch_size=batch_size, max_new_tokens=max_new_tokens, seed=seed,
                       temperature=temperature if sample else 0.0, top_p=top_p if sample else 1.0)
        bcfg = BaselineConfig(region_prompt=region_prompt, question=question, resize_mask=resize_mask,
                              visual=VisualSettings(max_side=chat.max_side), generation=chat.generation(),
                              save_prompts=save_prompts)
    else:
        ccfg = CaptionConfig(
            model=model, question=question, max_new_tokens=max_new_tokens, sample=sample, temperature=temperature,
            top_p=top_p, batch_size=batch_size, device=device, dtype=dtype, resize_mask=resize_mask, seed=seed,
        )
    picture = bitmaps = None
    if input is None:  # check the inputs before loading any model
        assert image is not None
        picture, bitmaps = image_regions(image, mask or [], rle or [], [] if by_sam else (box or []), resize_mask)
        prompts = prompt_regions(point or [], (box or []) if by_sam else [], picture.size, str(image))
        extra = [{} for _ in bitmaps]
        if prompts:  # SAM makes its masks, and lets go, before the captioner loads
            more, blocks = sam_masks(prompts, picture, where=str(image), **sam_opts)
            bitmaps, extra = bitmaps + more, extra + blocks
    else:
        check_input(input)
        read_opts = ReadOptions(images=images, masks=masks)
        check_output_not_input(scfg, [input])
        if use_sam:  # box regions of the input: SAM's masks, made as each image is captioned
            read_opts = replace(read_opts, box_to_mask=box_masker(**sam_opts))

    def run(captioner) -> None:
        if input is None:
            write_image_regions(image, picture, bitmaps, captioner, scfg.output, extra, save_masks)
        else:
            caption_input(input, captioner, scfg, FormatName(fmt).value, read_opts)

    if region_prompt is not None:
        from ..caption.baselines import BaselineCaptioner

        with chat.build() as backend:  # --model left out: the server's first model (asked when first needed)
            run(BaselineCaptioner(backend, bcfg))
        return
    from ..model.released import resolve_source

    # a folder, or a hub id (the paper's model: SammyLim/URECA)
    captioner = Captioner(replace(ccfg, model=resolve_source(model, "--model")))
    run(captioner)
    if verbose:
        typer.echo(f"ureca caption: {captioner.timings.line()}", err=True)
