#!/usr/bin/env bash
# The published-anchor comparison of reports/backbones.md: SASRec, BERT4Rec and GRU4Rec with full
# cross-entropy on ml-1m (configs/backbones/ml-1m-*.yaml), seeds 1-3, then the report of those runs.
#   JOBS=9 bash benchmarks/run_backbones_ml1m.sh [RUNS_DIR] [DEVICE] [--set key=value ...]
# JOBS runs that many trainings at once (9 share one GPU well: these models are small; on a CPU keep 1).
# MODELS picks the backbones (default all three). Rerunning the command resumes unfinished runs from their
# checkpoints and skips finished ones (same run directories).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-runs/backbones}
device=${2:-auto}
shift $(( $# < 2 ? $# : 2 ))
DMESR=${DMESR:-.venv/bin/dmesr}
mkdir -p "$runs"
failed=0
for model in ${MODELS:-sasrec bert4rec gru4rec}; do
  for seed in 1 2 3; do
    while (( $(jobs -rp | wc -l) >= ${JOBS:-1} )); do wait -n || failed=1; done
    $DMESR train --config "configs/backbones/ml-1m-$model.yaml" --seed "$seed" --device "$device" \
      --output-dir "$runs" --quiet "$@" > "$runs/$model-seed$seed.log" 2>&1 &
  done
done
while (( $(jobs -rp | wc -l) > 0 )); do wait -n || failed=1; done
$DMESR report "$runs" --out "$runs/results.md"
exit $failed
