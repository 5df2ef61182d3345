#!/usr/bin/env bash
# Every check that needs a GPU, in one command (about 4-7 minutes on one H100/H200):
#   bash bench/gpu_check.sh DATA_DIR [TRAIN_BATCHES]
# 1. the CUDA tests (CUDA-graph replay of passes and of Square's whole steps), log in
#    $OUT/cuda_tests.log;
# 2. the GPU benchmark, bench/gpu.sh DATA_DIR TRAIN_BATCHES (default 5), into $OUT/gpu.json.
# A failing test is reported and the benchmark still runs; the exit status is the tests'.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT:-bench/results}
mkdir -p "$OUT_DIR"
PY=${PY:-python}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 180 "$PY" -m pytest -q -p no:cacheprovider tests/test_attacks_graphs.py \
  tests/test_attacks_square_graphs.py -rs 2>&1 \
  | tee "$OUT_DIR/cuda_tests.log"
tests=${PIPESTATUS[0]}
PY=$PY bash bench/gpu.sh "${1:-data/cifar-10-batches-bin}" "${2:-5}"
exit "$tests"
