"""`ureca score`: caption metrics and uniqueness of predicted region captions against references."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..evaluate.readers import ScoreFormat
from .common import cli_errors


def _table(summary: dict, elapsed: float) -> None:
    from rich.console import Console
    from rich.table import Table

    meta = summary["meta"]
    table = Table(title=f"ureca score: {summary['count']} regions", title_justify="left")
    table.add_column("metric")
    table.add_column("score (0-100)", justify="right")
    names = ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr",
             "BERTScore_P", "BERTScore_R", "BERTScore_F1", "duplicate_rate", "unique@1", "unique@1_chance"]
    for name in names:
        if name in summary:
            value = summary[name]
            table.add_row(name, "n/a" if value is None else f"{value:.2f}")
    console = Console(stderr=True)
    console.print(table)
    notes = []
    if "images" in summary:
        notes.append(f"uniqueness over {summary['images']} image(s) with 2+ regions "
                     f"({summary['regions_in_images']} regions), similarity {meta['unique@1_similarity']}")
    if meta["bertscore_model"]:
        notes.append(f"BERTScore: {meta['bertscore_model']}, layer {meta['bertscore_layers']}")
    if meta["left_out_predictions"] or meta["left_out_references"]:
        notes.append(f"left out: {meta['left_out_predictions']} prediction(s), "
                     f"{meta['left_out_references']} reference(s) (--allow-missing)")
    notes.append(f"{elapsed:.1f} s")
    for note in notes:
        console.print(note, highlight=False, soft_wrap=True)


def score(
    predictions: Annotated[Path, typer.Argument(help="Predicted captions (- for stdin).", show_default=False)],
    references: Annotated[Path, typer.Argument(help="Reference captions.", show_default=False)],
    fmt: Annotated[ScoreFormat, typer.Option("--format", help="Format of both files (auto: detected from "
                                             "the content).")] = ScoreFormat.auto,
    ref_format: Annotated[ScoreFormat | None, typer.Option("--ref-format", help="Format of the references, "
                                                           "when it differs from --format.",
                                                           show_default=False)] = None,
    metrics: Annotated[str, typer.Option("--metrics", help="Comma-separated: bleu, meteor, rouge, cider, "
                                         "bertscore.")] = "bleu,meteor,rouge,cider,bertscore",
    no_bertscore: Annotated[bool, typer.Option("--no-bertscore", help="Skip BERTScore (unique@1 then "
                                               "compares with ROUGE-L).")] = False,
    bertscore_model: Annotated[str, typer.Option("--bertscore-model", help="Hub id or local folder of the "
                                                 "BERTScore model (bert-score's English default: "
                                                 "roberta-large, which needs the hub or its cache).")]
    = "roberta-large",
    bertscore_layers: Annotated[int | None, typer.Option("--bertscore-layers", help="Layer whose embeddings "
                                                         "BERTScore compares; needed for a local folder.",
                                                         show_default=False)] = None,
    device: Annotated[str | None, typer.Option("--device", help="Device for BERTScore (default: cuda when "
                                               "available, else cpu).", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="BERTScore batch: sentences per forward "
                                            "pass and pairs per matching step.")] = 256,
    no_uniqueness: Annotated[bool, typer.Option("--no-uniqueness", help="Skip duplicate rate and "
                                                "unique@1.")] = False,
    allow_missing: Annotated[bool, typer.Option("--allow-missing", help="Score the ids present on both "
                                                "sides and report how many were left out.")] = False,
    per_item: Annotated[Path | None, typer.Option("--per-item", help="Write per-region scores here (JSONL).",
                                                  show_default=False)] = None,
) -> None:
    """Score predicted region captions against references, matched by id.

    BLEU@1-4, METEOR, ROUGE-L and CIDEr exactly as the COCO caption evaluation (pycocoevalcap: PTB
    tokenizer and METEOR 1.5 on Java), BERTScore (bert-score), and uniqueness per image: the duplicate
    rate and unique@1 (a prediction is closest to its own region's references among the image's
    regions). All figures on 0-100. One JSON object goes to stdout, a table to stderr.

    Inputs: region records ({"id", "caption"} or "captions": [...]), image records from annotate/refine,
    COCO results + COCO caption annotations, Osprey's [{"image_id", "caption"}], Describe Anything's
    {id: caption}; several references per id are fine. Regions are grouped into images by image_id, or,
    where a format has none, by the id before its last "/".

    \b
    Examples:
      ureca score preds.jsonl refs.jsonl
      ureca score results.json captions_val2014.json --format coco --no-bertscore
      ureca score preds.jsonl refs.jsonl --per-item items.jsonl \\
          --bertscore-model ./all-MiniLM-L6-v2 --bertscore-layers 6
    """
    _run(predictions, references, fmt, ref_format, metrics, no_bertscore, bertscore_model, bertscore_layers,
         device, batch_size, no_uniqueness, allow_missing, per_item)


@cli_errors("score")
def _run(predictions, references, fmt, ref_format, metrics, no_bertscore, bertscore_model, bertscore_layers,
         device, batch_size, no_uniqueness, allow_missing, per_item) -> None:
    import time

    from ..errors import UrecaError
    from ..evaluate.readers import read_pair
    from ..evaluate.score import ScoreConfig
    from ..evaluate.score import score as run_score
    from ..stream import check_writable_file, dumps, stdout_binary

    t0 = time.perf_counter()
    if str(predictions) == "-" and str(references) == "-":
        raise UrecaError("predictions and references cannot both be - (stdin is read once)")
    stdout = stdout_binary("redirect it to a file")  # a closed stdout is one error now, not after the metrics ran
    wanted = tuple(m.strip().lower() for m in metrics.split(",") if m.strip())
    if no_bertscore:
        wanted = tuple(m for m in wanted if m != "bertscore")
    if per_item is not None:  # a bad --per-item path fails now, not after minutes of metrics
        check_writable_file("--per-item", per_item)
        for given in (predictions, references):
            if str(given) != "-" and Path(given).exists() and Path(per_item).exists() \
                    and Path(given).samefile(per_item):
                raise UrecaError(f"--per-item {per_item} is the input file {given}: write to another file")
    cfg = ScoreConfig(metrics=wanted, bertscore_model=bertscore_model, bertscore_layers=bertscore_layers,
                      device=device, batch_size=batch_size, uniqueness=not no_uniqueness)
    matched = read_pair(predictions, references, ScoreFormat(fmt).value,
                        ScoreFormat(ref_format).value if ref_format else None, allow_missing=allow_missing)
    if matched.left_out_predictions or matched.left_out_references:
        typer.echo(f"ureca score: --allow-missing: scoring {len(matched.ids)} ids on both sides; left out "
                   f"{matched.left_out_predictions} prediction(s) without a reference and "
                   f"{matched.left_out_references} reference(s) without a prediction", err=True)
    result = run_score(matched, cfg)
    for warning in result.warnings:
        typer.echo(f"ureca score: warning: {warning}", err=True)
    if per_item is not None:
        try:
            with open(per_item, "wb") as fh:
                for item, pred, refs_i in zip(result.items, matched.predictions, matched.references, strict=True):
                    fh.write(dumps({**item, "prediction": pred, "references": refs_i}))
        except OSError as e:
            raise UrecaError(f"--per-item {per_item}: cannot write ({e.strerror})") from None
    stdout.write(dumps(result.summary))
    stdout.flush()
    _table(result.summary, time.perf_counter() - t0)
