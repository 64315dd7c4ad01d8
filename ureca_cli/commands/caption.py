"""`ureca caption`: caption regions with a URECA checkpoint (one image and its masks, or a JSONL batch)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import UrecaError
from .annotate import (
    ApiKeyEnvOpt,
    BackendOpt,
    BaseUrlOpt,
    ConcurrencyOpt,
    MaxSideOpt,
    RetriesOpt,
    TimeoutOpt,
)
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


@cli_errors("caption")
def caption(
    image: Annotated[
        Path | None,
        typer.Argument(metavar="IMAGE", help="The image whose regions to caption (or use --input).",
                       show_default=False),
    ] = None,
    model: Annotated[
        Path,
        typer.Option("--model", "-m", metavar="DIR", help="URECA checkpoint folder (from ureca train).", show_default=False),
    ] = ...,  # type: ignore[assignment]
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
        typer.Option("--box", metavar="X,Y,W,H", help="Region as a box x,y,w,h in pixels. Repeatable.", show_default=False),
    ] = None,
    input: Annotated[
        Path | None,
        typer.Option("--input", "-i", metavar="JSONL", help="JSONL of region records (id, image, rle) or image/tree records "
                     "(every node is captioned); - for stdin.", show_default=False),
    ] = None,
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
        str, typer.Option("--dtype", help="auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16, float16.")
    ] = "auto",
    resize_mask: Annotated[
        bool, typer.Option("--resize-mask", help="Resize a mask whose size differs from the image (nearest).")
    ] = False,
    region_prompt: Annotated[
        str | None,
        typer.Option("--region-prompt", metavar="none|contour|crop", help="Paper's Table 2 baselines: caption with a "
                     "plain chat model (--backend; --model names it) shown the plain photo, the region contoured, or "
                     "its crop.", show_default=False),
    ] = None,
    backend: BackendOpt = "hf",
    base_url: BaseUrlOpt = None,
    api_key_env: ApiKeyEnvOpt = None,
    concurrency: ConcurrencyOpt = 8,
    timeout: TimeoutOpt = 120.0,
    retries: RetriesOpt = 6,
    max_side: MaxSideOpt = None,
    output: Output = None,
    on_error: OnErrorOpt = OnErrorChoice.stop,
    failed: Failed = None,
    resume: Resume = False,
    shard: Shard = None,
    progress: ProgressOpt = None,
) -> None:
    """Caption image regions with a URECA model: one JSON region record per region.

    A region is a mask PNG, a COCO RLE or a box on IMAGE, or comes from --input: region records (id, image,
    rle) or image records from ureca tree/annotate/refine, whose every node is captioned. All regions of one
    image share one image encoding. Output records {"id", "image_id", "image", "caption", ...} feed
    ureca score; an input caption is kept as "reference".

    \b
    Examples:
      ureca caption photo.jpg --mask dog.png --model runs/ureca-1b
      ureca caption photo.jpg --box 40,60,200,120 --box 300,10,80,80 --model runs/ureca-1b
      ureca caption photo.jpg --rle region.json --model runs/ureca-1b --sample --temperature 0.7
      ureca caption --input regions.jsonl --model runs/ureca-1b -o preds.jsonl
      ureca caption --input trees.jsonl --model runs/ureca-1b -o preds.jsonl && ureca score preds.jsonl regions.jsonl
      ureca caption --input regions.jsonl --region-prompt contour --backend openai --base-url http://gpu1:8000/v1 --model m -o base.jsonl
    """
    from ..caption import CaptionConfig

    regions_given = bool(mask or rle or box)
    if input is not None and (image is not None or regions_given):
        raise UrecaError("give either IMAGE with --mask/--rle/--box, or --input FILE, not both")
    if input is None:
        if image is None:
            raise UrecaError("give an IMAGE and a region (--mask, --rle or --box), or --input FILE")
        if not regions_given:
            raise UrecaError(f"{image}: give the region with --mask PNG, --rle JSON or --box x,y,w,h")
    if region_prompt is not None:  # the Table 2 baselines through a chat backend (ureca_cli/baselines.py)
        from ..baselines import BaselineConfig, run_cli
        from ..mllm import GenerationSettings
        from ..visual import VisualSettings
        from .annotate import backend_from_options

        bcfg = BaselineConfig(region_prompt=region_prompt, question=question, resize_mask=resize_mask,
                              visual=VisualSettings(max_side=max_side),
                              generation=GenerationSettings(max_new_tokens=max_new_tokens,
                                                            temperature=temperature if sample else 0.0,
                                                            top_p=top_p if sample else 1.0, seed=seed))
        chat = backend_from_options(backend, str(model), base_url, api_key_env, concurrency, timeout, retries,
                                    None if device == "auto" else device, dtype, batch_size)
        with chat:
            run_cli(image, mask or [], rle or [], box or [], input, chat, bcfg,
                    stream_config(output, on_error, failed, resume, shard, progress))
        return
    if not model.is_dir():
        raise UrecaError(f"--model {model}: checkpoint folder not found")
    cfg = CaptionConfig(
        model=model, question=question, max_new_tokens=max_new_tokens, sample=sample, temperature=temperature,
        top_p=top_p, batch_size=batch_size, device=device, dtype=dtype, resize_mask=resize_mask, seed=seed,
    )
    scfg = stream_config(output, on_error, failed, resume, shard, progress)
    if input is None:
        assert image is not None
        _caption_one_image(image, mask or [], rle or [], box or [], cfg, scfg)
    else:
        _caption_batch(input, cfg, scfg)


def _caption_one_image(image: Path, masks: list[Path], rles: list[str], boxes: list[str], cfg, scfg) -> None:
    """IMAGE and its regions -> one region record per region, in the order --mask, --rle, --box."""
    from .. import masks as M
    from ..caption import Captioner, fit_mask, load_image, mask_from_box, mask_from_png, mask_from_rle
    from ..stream import JsonlWriter

    picture = load_image(image)  # check the inputs before loading the model
    regions = [(str(p), mask_from_png(p)) for p in masks]
    regions += [("--rle", mask_from_rle(t)) for t in rles]
    regions += [(f"--box {t}", mask_from_box(t, picture.size)) for t in boxes]
    bitmaps = [fit_mask(m, picture.size, what, cfg.resize_mask) for what, m in regions]
    captioner = Captioner(cfg)
    captions = captioner.caption_masks(picture, bitmaps)
    writer = JsonlWriter(scfg.output)
    try:
        for i, (bitmap, text) in enumerate(zip(bitmaps, captions, strict=True)):
            base = {"id": f"{image.stem}/{i}", "image_id": image.stem, "image": str(image),
                    "width": picture.width, "height": picture.height, "rle": M.encode(bitmap),
                    "bbox": list(M.pixel_box(bitmap) or ())}
            writer.write(captioner.region_record(base, text, cfg.question))
    finally:
        writer.close()


def _caption_batch(input: Path, cfg, scfg) -> None:
    from ..caption import Captioner, grouping_mapper, record_key
    from ..stream import iter_jsonl, run_stage

    if str(input) != "-" and not Path(input).is_file():
        raise UrecaError(f"--input {input}: no such file")
    captioner = Captioner(cfg)
    run_stage(
        "caption",
        iter_jsonl(input),
        captioner.work,
        scfg,
        input_key=record_key,
        output_key=lambda rec: rec.get("id"),
        mapper=grouping_mapper(captioner),
        unit="records",
    )
