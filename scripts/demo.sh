#!/usr/bin/env bash
# The main job end to end, offline, on example data. Each step prints a heading; outputs go to demo-out/.
# Later stages append their steps below (each reads the previous step's file, so a step can be re-run alone).
set -euo pipefail
cd "$(dirname "$0")/.."
URECA=.venv/bin/ureca
OUT=demo-out
export HF_HUB_OFFLINE=1
mkdir -p "$OUT"

echo "== 1. masks: SA-1B-format masks for scikit-image's CC0 'coffee' photo (classical segmentation, several scales)"
.venv/bin/python scripts/make_demo_masks.py "$OUT/sa"

echo "== 2. ureca tree: one mask tree per image (main objects, parts, dropped masks), and a picture of it"
"$URECA" tree "$OUT/sa" -o "$OUT/trees.jsonl" --render "$OUT/trees"
.venv/bin/python - "$OUT/trees.jsonl" <<'PY'
import json, sys
from collections import Counter
for line in open(sys.argv[1]):
    rec = json.loads(line)
    roles = Counter(n["role"] for n in rec["nodes"])
    depth = max((n["depth"] for n in rec["nodes"]), default=0)
    print(f"   image {rec['image_id']}: {len(rec['nodes'])} masks, {roles['main']} main objects, "
          f"{roles['part']} parts, {roles['dropped']} dropped, depth {depth}")
PY
echo "   wrote $OUT/trees.jsonl and $(ls "$OUT"/trees/*.png | tr '\n' ' ')"

# ---- training (issue 7): a task that needs the mask -> a tiny URECA trained on it -> captions -> scores
echo "== training a. a region-captioning task that needs the mask: synthetic scenes of coloured shapes, several per image;"
echo "   each caption names its shape's colour, kind, place and what contains it (the grammar is in the README)"
.venv/bin/python -m ureca_cli.train.synthetic "$OUT/synthetic" --train 48 --test 6 --size 224x224 --size 336x224 >/dev/null
echo "   $(wc -l < "$OUT/synthetic/train.jsonl") training regions, $(wc -l < "$OUT/synthetic/test.jsonl") held-out regions; e.g. \"$(head -1 "$OUT/synthetic/test.jsonl" | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["caption"])')\""

echo "== training b. ureca train: a tiny random InternVL + mask encoder; stage 1 (mask encoder and added tokens), then"
echo "   stage 2 (LoRA on the language model); the transformers Trainer, checkpoints, a validation pass at the end"
rm -rf "$OUT/ureca-tiny"  # the demo's own earlier run: ureca train never writes over a finished run
"$URECA" train "$OUT/synthetic/train.jsonl" --base tiny --out "$OUT/ureca-tiny" --stage both --max-steps 400 \
  --global-batch 8 --batch-size 8 --lr-stage1 5e-3 --lr-stage2 3e-3 --lora-r 64 --lora-alpha 128 \
  --no-gradient-checkpointing --save-steps 200 --logging-steps 100 --val-fraction 0.1 --no-bertscore --cpu

echo "== training c. ureca caption: captions for the held-out regions (greedy), then ureca score against their references"
"$URECA" caption --input "$OUT/synthetic/test.jsonl" --model "$OUT/ureca-tiny" -o "$OUT/test_captions.jsonl" \
  --max-new-tokens 24
"$URECA" score "$OUT/test_captions.jsonl" "$OUT/synthetic/test.jsonl" --no-bertscore > "$OUT/test_scores.json"
.venv/bin/python - "$OUT/test_captions.jsonl" "$OUT/synthetic/test.jsonl" "$OUT/test_scores.json" <<'PY'
import json, sys
from ureca_cli.train.synthetic import attribute_accuracy
preds = {r["id"]: r["caption"] for r in map(json.loads, open(sys.argv[1]))}
refs = [json.loads(line) for line in open(sys.argv[2])]
scores = json.load(open(sys.argv[3]))
scores = scores.get("summary", scores)
acc = attribute_accuracy(preds, refs)
print("   " + "  ".join(f"{k} {scores[k]:.1f}" for k in ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr") if k in scores)
      + f"  | words right: colour {acc['colour']:.0f}%  shape {acc['shape']:.0f}%  place {acc['position']:.0f}%")
print(f"   {'region':14} {'reference':50} prediction")
for r in refs[:8]:
    print(f"   {r['id']:14} {r['caption'][:50]:50} {preds.get(r['id'], '')[:60]}")
PY
echo "   (what this shows: the whole cycle runs, and in under a minute of training from random weights the model"
echo "   reads the mask: the place words are mostly right and regions of one image get different captions, which a"
echo "   model without the mask cannot do. Colour and shape need a model that has learned to see, which random"
echo "   weights have not: bench/ablation.py starts from a pretrained tiny base and compares with and without the mask)"
