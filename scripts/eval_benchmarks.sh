#!/usr/bin/env bash
# The field's region-captioning benchmarks in one command: caption each benchmark's regions with MODEL, score
# them, and print one table with the published figures beside ours (scripts/benchmark_table.py).
#
#   scripts/eval_benchmarks.sh runs/ureca-1b ~/data/benchmarks
#   JUDGE_URL=http://gpu1:8000/v1 scripts/eval_benchmarks.sh SammyLim/URECA ~/data/benchmarks
#
# DATA_DIR holds each benchmark as it is released (a missing one is skipped and shown as such):
#   ureca/test.jsonl ureca/masks/ ureca/images/   URECA's test set: the released InternVL chat JSONL, the SA-1B
#                                                 JSON files its masks come from, and the SA-1B images
#   refcocog/finetune_refcocog_val_captions.json  RefCOCOg val (MDETR/GLaMM's boxes; or Osprey's
#     (or finetune_refcocog_val_with_mask.json)   finetune_refcocog_val_with_mask.json, masks), with
#   refcocog/images/                              COCO train2014 images
#   vg/test_caption.json (or region_descriptions.json) + vg/images/   Visual Genome (GRiT/GLaMM's test split)
#   dlc/                                          DLC-Bench's folder (annotations.json, class_names.json, qa.json,
#                                                 images/), judged by an LLM at $JUDGE_URL
#
# Settings (environment variables):
#   URECA          the ureca command (default: ureca), e.g. "python -m ureca_cli"
#   OUT            where predictions, scores and the table go (default: runs/benchmarks/<model's name>)
#   CAPTION_ARGS   more options of ureca caption (e.g. "--batch-size 16 --dtype bfloat16")
#   SCORE_ARGS     options of ureca score for the caption benchmarks (default: --no-bertscore; give
#                  "--bertscore-model DIR --bertscore-layers N" for BERTScore on URECA's test set)
#   JUDGE_URL      DLC-Bench's judge, an OpenAI-compatible server (default: http://127.0.0.1:8000/v1; the
#                  benchmark uses meta-llama/Llama-3.1-8B-Instruct, e.g. `vllm serve` it)
#   JUDGE_MODEL    the judge's served name (default: the first model the server lists)
#   JUDGE_ARGS     more options of the judge (e.g. "--judge-concurrency 32 --judge-cache DIR")
#
# Every step resumes: captions already in OUT are kept (--resume), and the judge's answers are cached.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  sed -n '2,8p' "$0" >&2
  exit 2
fi
model=$1
data=$2
[[ -d $data ]] || { echo "eval_benchmarks: $data: no such folder" >&2; exit 2; }
read -r -a ureca <<< "${URECA:-ureca}"
read -r -a caption_args <<< "${CAPTION_ARGS:-}"
read -r -a score_args <<< "${SCORE_ARGS:---no-bertscore}"
read -r -a judge_args <<< "${JUDGE_ARGS:-}"
out=${OUT:-runs/benchmarks/$(basename "$model")}
mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)

first() {  # the first of the given paths that exists, else nothing
  for p in "$@"; do [[ -e $p ]] && { echo "$p"; return; }; done
}

caption() {  # NAME INPUT [caption options...]: predictions in $out/NAME.preds.jsonl
  local name=$1 input=$2
  shift 2
  echo "eval_benchmarks: $name: captioning $input" >&2
  "${ureca[@]}" caption --input "$input" --model "$model" -o "$out/$name.preds.jsonl" --resume \
    "${caption_args[@]}" "$@"
}

# URECA's test set
refs=$(first "$data/ureca/test.jsonl")
if [[ -n $refs ]]; then
  caption ureca "$refs" --format internvl --masks "$data/ureca/masks" --images "$data/ureca/images"
  "${ureca[@]}" score "$out/ureca.preds.jsonl" "$refs" "${score_args[@]}" > "$out/ureca.score.json"
fi

# RefCOCOg and Visual Genome: METEOR, as the paper's Table 3
for bench in refcocog vg; do
  if [[ $bench == refcocog ]]; then
    refs=$(first "$data/refcocog/finetune_refcocog_val_captions.json" "$data/refcocog/finetune_refcocog_val_with_mask.json")
  else
    refs=$(first "$data/vg/test_caption.json" "$data/vg/region_descriptions.json")
  fi
  [[ -n $refs ]] || continue
  caption "$bench" "$refs" --images "$data/$bench/images"
  "${ureca[@]}" score "$out/$bench.preds.jsonl" "$refs" "${score_args[@]}" > "$out/$bench.score.json"
done

# DLC-Bench, judged by an LLM
if [[ -d $data/dlc ]]; then
  caption dlc "$data/dlc"
  judge=(--judge-base-url "${JUDGE_URL:-http://127.0.0.1:8000/v1}")
  [[ -n ${JUDGE_MODEL:-} ]] && judge+=(--judge-model "$JUDGE_MODEL")
  "${ureca[@]}" score "$out/dlc.preds.jsonl" "$data/dlc" "${judge[@]}" "${judge_args[@]}" \
    --per-item "$out/dlc.judged.jsonl" > "$out/dlc.score.json"
fi

python3 "$here/benchmark_table.py" "$out" --model "$model" | tee "$out/table.txt"
