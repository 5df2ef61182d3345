#!/usr/bin/env bash
# The GPU benchmark in one command (at most ~8 minutes on one H100/H200):
#   bash bench/gpu.sh [DATA_DIR] [TRAIN_BATCHES]
# DATA_DIR holds CIFAR-10's binary batches (data_batch_1.bin ... test_batch.bin; default
# data/cifar-10-batches-bin inside the repo), TRAIN_BATCHES how many data_batch_*.bin to use
# (default 1). Writes $OUT/gpu.json (or bench/results/gpu.json without $OUT) and a log.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR=${1:-data/cifar-10-batches-bin}
TRAIN_BATCHES=${2:-1}
OUT_DIR=${OUT:-bench/results}
mkdir -p "$OUT_DIR"
PY=${PY:-python}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 470 "$PY" bench/bench_gpu.py --data-dir "$DATA_DIR" --train-batches "$TRAIN_BATCHES" \
  --out "$OUT_DIR/gpu.json" --budget-s 420 "${@:3}" 2>&1 | tee "$OUT_DIR/gpu.log"
