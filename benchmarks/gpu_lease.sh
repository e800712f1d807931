#!/usr/bin/env bash
# One lease of a lent GPU spent on ml-1m (see gpu_lease.py for what travels and why): BERT4Rec seeds
# 2-3 under the published protocol (reports/backbones.md) and the ml-1m cells of the main grid, all
# stopped after SECONDS (every run resumes from its last epoch's checkpoint), then the run folders
# packed into $OUT. Runs on the machine's own python3 (its torch), without installing this package.
#   bash benchmarks/gpu_lease.sh SECONDS
# WORKERS grid processes (default 8) run the cells of GRID (default configs/experiments/main.yaml) that match
# CELLS (default 'ml-1m/*'), beside BERT4REC_SEEDS (default "2 3"; empty for none).
set -u
seconds=${1:?usage: gpu_lease.sh SECONDS}
out=${OUT:-runs/gpu-lease-out}
logs=runs/gpu-lease-logs  # tarred into $out with the runs: 8 files at most come back
mkdir -p "$out" "$logs"
export DMESR_HOME=${LEASE_HOME:-/tmp/dmesr_lease_home} PYTHONPATH=$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
python3 benchmarks/gpu_lease.py unpack .devdata "$DMESR_HOME" || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
dmesr="python3 -m dmesr.cli"
for seed in ${BERT4REC_SEEDS-2 3}; do
  timeout -s INT -k 20 "$seconds" $dmesr train --config configs/backbones/ml-1m-bert4rec.yaml --seed "$seed" \
    --device cuda --output-dir runs/backbones-cpu --quiet --set train.num_threads=1 > "$logs/bert4rec-seed$seed.log" 2>&1 &
done
timeout -s INT -k 40 "$seconds" $dmesr experiments run "${GRID:-configs/experiments/main.yaml}" --cells "${CELLS:-ml-1m/*}" \
  --workers "${WORKERS:-8}" --threads 1 > "$logs/grid.log" 2>&1 &
(sleep 90; nvidia-smi > "$logs/nvidia-smi.txt" 2>&1) &
wait
pkill -INT -f "dmesr.cli" ; sleep 3; pkill -KILL -f "dmesr.cli"; pkill -KILL -f multiprocessing
tail -n 3 "$logs"/*.log
python3 benchmarks/gpu_lease.py collect "$out" "$logs" runs/backbones-cpu/ml-1m/bert4rec reports/runs/main/ml-1m
