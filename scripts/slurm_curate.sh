#!/usr/bin/env bash
#SBATCH --job-name=ureca-curate
#SBATCH --output=ureca-curate-%A_%a.log
#SBATCH --cpus-per-task=8
# The curation pipe (ureca tree, then optionally annotate and refine) over many SA-1B shards as a Slurm array
# job: one task per block of inputs, one output file per task and step, every step with --resume, so a task
# that failed is simply submitted again alone.
#
#   sbatch --array=0-99 scripts/slurm_curate.sh /data/sa1b/sa_*.tar          # 1,000 tars read in place, 10 a task
#   sbatch --array=0-2 scripts/slurm_curate.sh /data/sa_000000/sa_*.json      # extracted JSON files work too
#   URECA_TASKS=100 sbatch --array=7,12 scripts/slurm_curate.sh /data/sa1b/sa_*.tar   # rerun two tasks alone
#
# Which task takes what: the inputs (the arguments, in the order given: let the shell expand the glob, or
# give a sorted list) are cut into N contiguous blocks, N = the array's size (SLURM_ARRAY_TASK_COUNT, or
# URECA_TASKS when only some tasks are submitted again; the array starts at 0). Task k = SLURM_ARRAY_TASK_ID
# takes inputs floor(k*M/N) .. floor((k+1)*M/N)-1 of the M inputs. A rerun needs the same inputs and N.
# Each input is passed to `ureca tree` unchanged (a tar, a JSON file, or a folder, which is one unit that is
# not split). Contiguous blocks, not --shard's round robin, so that the task outputs concatenated in task
# order are the records of one run over all inputs, in the same order, byte for byte.
#
# Output, in $URECA_OUT (default ./ureca-curate), for task k (six digits, so names sort in task order):
#   tree.00000k.jsonl, annotate.00000k.jsonl, refine.00000k.jsonl   each step's records
#   task.00000k.done                                                 written when all steps of the task ended
# Merge (one line, once every task is done; `ls $URECA_OUT/task.*.done | wc -l` is then the array size):
#   cat ureca-curate/tree.*.jsonl > trees.jsonl          # or annotate.*/refine.*, the last step you ran
# or as a job that waits for the array:
#   sbatch --dependency=afterok:$ARRAY_JOB_ID --wrap 'cat ureca-curate/refine.*.jsonl > refined.jsonl'
#
# Settings (environment variables; sbatch passes the submitting shell's environment on):
#   URECA_OUT           output folder (default ureca-curate)
#   URECA_TASKS         the whole array's size, to submit some of its tasks again (default: SLURM_ARRAY_TASK_COUNT)
#   URECA               the ureca command (default: ureca), e.g. "/opt/venv/bin/ureca" or "python -m ureca_cli"
#   URECA_STEPS         steps to run, in this order, space-separated: tree annotate refine (default: tree).
#                       A step reads the previous step's file of the same task, so "annotate refine" goes on
#                       from trees an earlier run wrote.
#   URECA_BASE_URL      chat servers for annotate and refine, space-separated; given, both steps use
#                       --backend openai with one --base-url per server (requests go round-robin). Not given:
#                       the steps use their defaults (the hf backend: a model on this node's GPU).
#   URECA_MODEL         --model for annotate and refine (default: their own)
#   URECA_ON_ERROR      stop (default) or skip; with skip each step also writes <step>.00000k.failed
#   URECA_JOBS          --jobs of ureca tree (default: SLURM_CPUS_PER_TASK, else 1)
#   URECA_TREE_ARGS, URECA_ANNOTATE_ARGS, URECA_REFINE_ARGS
#                       more options for one step, split on spaces (e.g. URECA_TREE_ARGS="--parent-rule first",
#                       URECA_REFINE_ARGS="--features masked-pool --verify")
# Outside Slurm, set SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT yourself to run one task by hand.
set -euo pipefail

say() { echo "slurm_curate: $*" >&2; }
die() { say "error: $*"; exit 2; }

[ $# -gt 0 ] || die "give the inputs: tar files (or SA-1B JSON files, or folders), e.g. /data/sa1b/sa_*.tar"
[ -n "${SLURM_ARRAY_TASK_ID:-}" ] && [ -n "${SLURM_ARRAY_TASK_COUNT:-}" ] \
  || die "SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT are not set: submit with sbatch --array=0-N, or set both by hand"
first=${SLURM_ARRAY_TASK_MIN:-0}
step=${SLURM_ARRAY_TASK_STEP:-1}
n=${URECA_TASKS:-$SLURM_ARRAY_TASK_COUNT}
k=$SLURM_ARRAY_TASK_ID
for v in "$k" "$n" "$first" "$step"; do
  [[ $v =~ ^[0-9]+$ ]] || die "SLURM_ARRAY_TASK_* and URECA_TASKS must be whole numbers, got '$v'"
done
if [ -z "${URECA_TASKS:-}" ]; then  # the whole array: it must be 0..N-1, each task a block
  [ "$first" = 0 ] && [ "$step" = 1 ] || die "submit the whole array as --array=0-$((n - 1)) (this one starts at \
$first, step $step); to submit some tasks again, set URECA_TASKS to the whole array's size"
fi
[ "$n" -ge 1 ] && [ "$k" -lt "$n" ] || die "task $k is outside the array of $n tasks (0..$((n - 1))); to submit \
some tasks again, set URECA_TASKS to the whole array's size"

inputs=("$@")
m=${#inputs[@]}
lo=$((k * m / n))
hi=$(((k + 1) * m / n))
block=("${inputs[@]:lo:hi-lo}")

out=${URECA_OUT:-ureca-curate}
mkdir -p "$out"
tag=$(printf '%06d' "$k")
read -r -a ureca <<< "${URECA:-ureca}"
read -r -a steps <<< "${URECA_STEPS:-tree}"
read -r -a urls <<< "${URECA_BASE_URL:-}"
on_error=${URECA_ON_ERROR:-stop}
[ "$on_error" = stop ] || [ "$on_error" = skip ] || die "URECA_ON_ERROR=$on_error: choose stop or skip"

chat=()
if [ ${#urls[@]} -gt 0 ]; then
  chat+=(--backend openai)
  for u in "${urls[@]}"; do chat+=(--base-url "$u"); done
fi
[ -z "${URECA_MODEL:-}" ] || chat+=(--model "$URECA_MODEL")

[ ${#steps[@]} -gt 0 ] || die "URECA_STEPS is empty: name the steps to run (tree annotate refine)"
last=0
for s in "${steps[@]}"; do
  case $s in tree) rank=1 ;; annotate) rank=2 ;; refine) rank=3 ;;
    *) die "URECA_STEPS: unknown step '$s' (choose from: tree annotate refine)" ;; esac
  [ "$rank" -gt "$last" ] || die "URECA_STEPS='${steps[*]}': steps run in the order tree annotate refine, each once"
  last=$rank
done
case ${steps[0]} in  # a run that starts after tree goes on from the files an earlier run of this task wrote
  annotate) need=tree ;; refine) need=annotate ;; *) need= ;; esac
[ -z "$need" ] || [ -f "$out/$need.$tag.jsonl" ] || die "${steps[0]} reads $out/$need.$tag.jsonl, which no \
earlier run of task $k wrote: add $need to URECA_STEPS"

rm -f "$out/task.$tag.done"
if [ $hi -gt $lo ]; then say "task $k of $n: inputs $lo..$((hi - 1)) of $m, steps: ${steps[*]}"
else say "task $k of $n: no inputs (more tasks than the $m inputs), steps: ${steps[*]}"; fi
for s in "${steps[@]}"; do
  opts=(-o "$out/$s.$tag.jsonl" --resume --no-progress --on-error "$on_error")
  [ "$on_error" = stop ] || opts+=(--failed "$out/$s.$tag.failed")
  case $s in
    tree)
      read -r -a extra <<< "${URECA_TREE_ARGS:-}"
      if [ ${#block[@]} -eq 0 ]; then  # more tasks than inputs: an empty file keeps the merge whole
        : >> "$out/tree.$tag.jsonl"
      else
        "${ureca[@]}" tree "${block[@]}" --jobs "${URECA_JOBS:-${SLURM_CPUS_PER_TASK:-1}}" "${opts[@]}" \
          ${extra[@]+"${extra[@]}"}
      fi
      ;;
    annotate | refine)
      if [ "$s" = annotate ]; then src=tree; read -r -a extra <<< "${URECA_ANNOTATE_ARGS:-}"
      else src=annotate; read -r -a extra <<< "${URECA_REFINE_ARGS:-}"; fi
      "${ureca[@]}" "$s" "$out/$src.$tag.jsonl" ${chat[@]+"${chat[@]}"} "${opts[@]}" ${extra[@]+"${extra[@]}"}
      ;;
  esac
done
: > "$out/task.$tag.done"
say "task $k done: $out/${steps[-1]}.$tag.jsonl"
