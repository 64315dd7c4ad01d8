"""Print one table of benchmark results beside the published figures: ``python scripts/benchmark_table.py OUT``.

``OUT`` holds the ``ureca score`` summaries that ``scripts/eval_benchmarks.sh`` writes (``ureca.score.json``,
``refcocog.score.json``, ``vg.score.json``, ``dlc.score.json``); a benchmark without one is shown as not run.
The published figures, all on 0-100:

- URECA's test set: the paper's Table 2, row "URECA (Ours)";
- RefCOCOg and Visual Genome: METEOR, the paper's Table 3 (every row; URECA zero-shot);
- DLC-Bench: DAM-3B (nvidia/DAM-3B) with a Llama-3.1-8B-Instruct judge, the reference run of Describe
  Anything's evaluation README (Pos 51.0, Neg 83.0, Avg 67.0).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# benchmark -> (title, [(our summary's key, the metric's name)], {published model: {metric name: figure}})
TABLE3 = {"ControlMLLM": (14.0, None), "Kosmos-2": (14.1, None), "GRiT": (15.2, 17.1), "SLR": (15.9, None),
          "GLaMM": (15.7, 17.0), "OMG-LLaVA": (15.3, None), "ViP-LLaVA": (16.6, None), "Groma": (16.8, 16.8),
          "RegionGPT": (16.9, 17.0), "Omni-RGPT": (17.0, 17.0), "URECA (paper, zero-shot)": (16.1, 18.4)}
BENCHMARKS = {
    "ureca": ("URECA test set", [("Bleu_1", "BLEU@1"), ("Bleu_4", "BLEU@4"), ("ROUGE_L", "ROUGE"),
                                 ("METEOR", "METEOR"), ("BERTScore_F1", "BERTScore")],
              {"URECA (paper, Table 2)": {"BLEU@1": 36.56, "BLEU@4": 9.98, "ROUGE": 38.95, "METEOR": 41.25,
                                          "BERTScore": 75.11}}),
    "refcocog": ("RefCOCOg", [("METEOR", "METEOR")],
                 {name: {"METEOR": r} for name, (r, _) in TABLE3.items()}),
    "vg": ("Visual Genome", [("METEOR", "METEOR")],
           {name: {"METEOR": v} for name, (_, v) in TABLE3.items() if v is not None}),
    "dlc": ("DLC-Bench", [("Pos", "Pos"), ("Neg", "Neg"), ("Avg", "Avg")],
            {"DAM-3B (Llama-3.1-8B judge)": {"Pos": 51.0, "Neg": 83.0, "Avg": 67.0}}),
}


PAPER = ("URECA (paper, Table 2)", "URECA (paper, zero-shot)")  # the paper's own rows


def rows(out: Path) -> list[dict]:
    """One row per benchmark and metric: ours (None when not run or not computed), the paper's URECA figure and
    the best other published one."""
    table = []
    for key, (title, metrics, published) in BENCHMARKS.items():
        path = out / f"{key}.score.json"
        summary = json.loads(path.read_text()) if path.is_file() else None
        for field, name in metrics:
            figs = {m: f[name] for m, f in published.items() if name in f}
            paper = next((v for m, v in figs.items() if m in PAPER), None)
            others = {m: v for m, v in figs.items() if m not in PAPER}
            best = max(others.items(), key=lambda kv: kv[1]) if others else None
            table.append({"benchmark": title, "metric": name, "run": summary is not None,
                          "ours": None if summary is None else summary.get(field),
                          "regions": None if summary is None else summary.get("count"),
                          "paper": paper, "best": best, "published": figs})
    return table


def render(table: list[dict], model: str) -> str:
    lines = [f"{'benchmark':<15} {'metric':<10} {model[-20:]:>20} {'URECA (paper)':>14}  best other published",
             "-" * 100]
    for r in table:
        ours = "not run" if not r["run"] else "n/a" if r["ours"] is None else f"{r['ours']:.2f}"
        paper = "-" if r["paper"] is None else str(r["paper"])
        best = "-" if r["best"] is None else f"{r['best'][0]} {r['best'][1]}"
        lines.append(f"{r['benchmark']:<15} {r['metric']:<10} {ours:>20} {paper:>14}  {best}")
    lines.append("All figures 0-100. URECA test set: the paper's Table 2; RefCOCOg and Visual Genome: METEOR, the "
                 "paper's Table 3 (URECA zero-shot); DLC-Bench: Pos, Neg and their average by an LLM judge (DAM-3B: "
                 "Llama-3.1-8B-Instruct).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="folder of <benchmark>.score.json files")
    ap.add_argument("--model", default="ours", help="the column's name")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON instead")
    args = ap.parse_args(argv)
    table = rows(args.out)
    print(json.dumps(table, indent=1) if args.json else render(table, args.model))


if __name__ == "__main__":
    main()
