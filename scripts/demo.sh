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
