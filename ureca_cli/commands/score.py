"""`ureca score`: caption metrics and uniqueness of predicted region captions against references."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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
    per_item: Annotated[Path | None, typer.Option("--per-item", help="Write per-region scores here (JSONL); "
                                                  "DLC-Bench: the judge's answer to every question.",
                                                  show_default=False)] = None,
    judge_base_url: Annotated[list[str] | None, typer.Option("--judge-base-url", help="DLC-Bench: the judge's "
                                                             "OpenAI-compatible server, ending in /v1 (repeat to "
                                                             "spread requests).", show_default=False)] = None,
    judge_model: Annotated[str | None, typer.Option("--judge-model", help="DLC-Bench: the judge model's served "
                                                    "name (default: the first the server lists; the benchmark "
                                                    "uses Llama-3.1-8B-Instruct).", show_default=False)] = None,
    judge_api_key_env: Annotated[str | None, typer.Option("--judge-api-key-env", help="DLC-Bench: environment "
                                                          "variable holding the judge server's API key.",
                                                          show_default=False)] = None,
    judge_concurrency: Annotated[int, typer.Option("--judge-concurrency", help="DLC-Bench: judge requests in "
                                                   "flight at once.")] = 8,
    judge_timeout: Annotated[float, typer.Option("--judge-timeout", help="DLC-Bench: seconds to wait for one "
                                                 "answer.")] = 120.0,
    judge_retries: Annotated[int, typer.Option("--judge-retries", help="DLC-Bench: retries of a failed judge "
                                               "request (backoff + jitter).")] = 6,
    judge_cache: Annotated[Path | None, typer.Option("--judge-cache", help="DLC-Bench: folder of the judge's "
                                                     "answers, cached by content so a rerun asks nothing twice "
                                                     "(default ~/.cache/ureca/judge).", show_default=False)] = None,
    judge_prompts: Annotated[Path | None, typer.Option("--judge-prompts", help="DLC-Bench: folder whose "
                                                       "dlc_judge.txt replaces the packaged judge instruction "
                                                       "($description, $question).", show_default=False)] = None,
) -> None:
    """Score predicted region captions against references, matched by id.

    BLEU@1-4, METEOR, ROUGE-L and CIDEr exactly as the COCO caption evaluation (pycocoevalcap: PTB
    tokenizer and METEOR 1.5 on Java), BERTScore (bert-score), and uniqueness per image: the duplicate
    rate and unique@1 (a prediction is closest to its own region's references among the image's
    regions). All figures on 0-100. One JSON object goes to stdout, a table to stderr.

    Inputs: region records ({"id", "caption"} or "captions": [...]), image records from annotate/refine,
    COCO results + COCO caption annotations, Osprey's [{"image_id", "caption"}], Describe Anything's
    {id: caption}, and the benchmarks' own files as references (RefCOCOg's and Visual Genome's JSON); several
    references per id are fine. Regions are grouped into images by image_id, or, where a format has none, by
    the id before its last "/".

    DLC-Bench: give its folder as REFERENCES and a judge server; each region's caption is judged by the
    benchmark's protocol (recognition first, then its positive and negative questions) and Pos, Neg and
    their average are reported.

    \b
    Examples:
      ureca score preds.jsonl refs.jsonl
      ureca score results.json captions_val2014.json --format coco --no-bertscore
      ureca score preds.jsonl finetune_refcocog_val_captions.json --no-bertscore
      ureca score preds.jsonl refs.jsonl --per-item items.jsonl \\
          --bertscore-model ./all-MiniLM-L6-v2 --bertscore-layers 6
      ureca score preds.jsonl DLC-bench/ --judge-base-url http://gpu1:8000/v1 \\
          --judge-model meta-llama/Llama-3.1-8B-Instruct --per-item judged.jsonl
    """
    judge = dict(base_url=judge_base_url, model=judge_model, api_key_env=judge_api_key_env,
                 concurrency=judge_concurrency, timeout=judge_timeout, retries=judge_retries, cache=judge_cache,
                 prompts=judge_prompts)
    metric_flags = [flag for flag, given in (
        ("--metrics", metrics != "bleu,meteor,rouge,cider,bertscore"), ("--no-bertscore", no_bertscore),
        ("--bertscore-model", bertscore_model != "roberta-large"), ("--bertscore-layers", bertscore_layers is not None),
        ("--device", device is not None), ("--batch-size", batch_size != 256), ("--no-uniqueness", no_uniqueness))
        if given]
    _run(predictions, references, fmt, ref_format, metrics, no_bertscore, bertscore_model, bertscore_layers,
         device, batch_size, no_uniqueness, allow_missing, per_item, judge, metric_flags)


def _judge_default(name: str) -> Any:
    """The judge option's default, as ``JudgeConfig`` has it (``base_url``: none)."""
    from dataclasses import MISSING, fields

    from ..evaluate.dlc import JudgeConfig

    default = {f.name: f.default for f in fields(JudgeConfig)}.get(name)
    return None if default is MISSING else default


def _write_per_item(per_item: Path, rows: Any) -> None:
    """``--per-item``: one JSON line per row."""
    from ..errors import UrecaError
    from ..stream import dumps

    try:
        with open(per_item, "wb") as fh:
            for row in rows:
                fh.write(dumps(row))
    except OSError as e:
        raise UrecaError(f"--per-item {per_item}: cannot write ({e.strerror})") from None


def _is_dlc(references: Path, fmt: str, ref_format: str | None) -> bool:
    from ..datasets import detect

    named = ref_format or fmt
    if named == "dlc":
        return True
    return named == "auto" and str(references) != "-" and Path(references).is_dir() \
        and detect(Path(references), "folder") == "dlc"


@cli_errors("score")
def _run(predictions, references, fmt, ref_format, metrics, no_bertscore, bertscore_model, bertscore_layers,
         device, batch_size, no_uniqueness, allow_missing, per_item, judge, metric_flags) -> None:
    import time

    from ..errors import UrecaError
    from ..evaluate.readers import read_pair
    from ..evaluate.score import ScoreConfig, check_ready
    from ..evaluate.score import score as run_score
    from ..stream import check_writable_file, dumps, stdin_binary, stdout_binary

    t0 = time.perf_counter()
    if str(predictions) == "-" and str(references) == "-":
        raise UrecaError("predictions and references cannot both be - (stdin is read once)")
    fmt, ref_format = ScoreFormat(fmt).value, ScoreFormat(ref_format).value if ref_format else None
    dlc = _is_dlc(references, fmt, ref_format)
    judge_given = [f"--judge-{k.replace('_', '-')}" for k, v in judge.items() if v not in (_judge_default(k), [])]
    if not dlc and judge_given:
        raise UrecaError(f"{', '.join(judge_given)}: the judge scores DLC-Bench; give the benchmark's folder as "
                         "REFERENCES")
    if dlc and metric_flags:
        raise UrecaError(f"{', '.join(metric_flags)}: caption metrics, not used on DLC-Bench (an LLM judge "
                         "scores it)")
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
    if dlc:
        _run_dlc(predictions, references, fmt, allow_missing, per_item, judge, stdout, t0)
        return
    cfg = ScoreConfig(metrics=wanted, bertscore_model=bertscore_model, bertscore_layers=bertscore_layers,
                      device=device, batch_size=batch_size, uniqueness=not no_uniqueness)
    if "-" in (str(predictions), str(references)):
        stdin_binary(terminal_ok=False)  # a closed stdin is named first (nothing is read from it here)
    check_ready(cfg)  # Java and the BERTScore model fail here, before the inputs are read
    matched = read_pair(predictions, references, fmt, ref_format, allow_missing=allow_missing)
    if matched.left_out_predictions or matched.left_out_references:
        typer.echo(f"ureca score: --allow-missing: scoring {len(matched.ids)} ids on both sides; left out "
                   f"{matched.left_out_predictions} prediction(s) without a reference and "
                   f"{matched.left_out_references} reference(s) without a prediction", err=True)
    result = run_score(matched, cfg)
    for warning in result.warnings:
        typer.echo(f"ureca score: warning: {warning}", err=True)
    if per_item is not None:
        _write_per_item(per_item, ({**item, "prediction": pred, "references": refs_i} for item, pred, refs_i in
                                   zip(result.items, matched.predictions, matched.references, strict=True)))
    stdout.write(dumps(result.summary))
    stdout.flush()
    _table(result.summary, time.perf_counter() - t0)


def _run_dlc(predictions, references, fmt, allow_missing, per_item, judge, stdout, t0) -> None:
    """DLC-Bench: predictions judged by an LLM against the benchmark's questions (``evaluate/dlc.py``)."""
    import time

    from ..evaluate.dlc import JudgeConfig, score_dlc
    from ..evaluate.readers import read_captions
    from ..stream import Reporter, dumps, want_progress

    options = dict(judge)
    cfg = JudgeConfig(base_urls=tuple(options.pop("base_url") or ()), **options)
    preds = read_captions(predictions, "predictions", "auto" if fmt == "dlc" else fmt)
    reporter = Reporter("score", show=want_progress(None), unit="questions")
    try:
        result = score_dlc(preds, Path(references), cfg, allow_missing=allow_missing, progress=reporter.advance)
    finally:
        reporter.close()
    if per_item is not None:
        _write_per_item(per_item, result.items)
    stdout.write(dumps(result.summary))
    stdout.flush()
    _dlc_table(result.summary, time.perf_counter() - t0)


def _dlc_table(summary: dict, elapsed: float) -> None:
    from rich.console import Console
    from rich.table import Table

    meta = summary["meta"]
    table = Table(title=f"ureca score: DLC-Bench, {summary['count']} regions", title_justify="left")
    table.add_column("figure")
    table.add_column("score (0-100)", justify="right")
    for name in ("Pos", "Neg", "Avg"):
        value = summary[name]
        table.add_row(name, "n/a" if value is None else f"{value:.1f}")
    console = Console(stderr=True)
    console.print(table)
    console.print(f"judge {meta['judge']['model']}: {meta['questions']} questions, {meta['asked']} asked, "
                  f"{meta['cached']} from the cache ({meta['cache']}); {summary['recognised']} of "
                  f"{summary['count']} regions recognised; {meta['unparsed']} answer(s) matched no choice; "
                  f"{elapsed:.1f} s", highlight=False, soft_wrap=True)
