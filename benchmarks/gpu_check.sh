#!/usr/bin/env bash
# What one lease of a GPU machine checks, in one call. Prepared on 2026-12-05, when no machine
# was lent, and not yet run on a GPU. From the repository root on the GPU machine, with the
# MNIST files in $DATA and results written under $OUT:
#
#     DATA=.mnist OUT=/tmp/out bash benchmarks/gpu_check.sh
#
# 1. The tests that need a GPU (CUDA runs against CPU runs), then the rest of the suite's
#    device-independent tests of the learned optimizer.
# 2. One LearnedOptimizer step against Adam on the GPU (benchmarks/step_cost.py).
# 3. Where the shipped MNIST optimizers break down, on the GPU (benchmarks/generalization.py).
set -u
DATA=${DATA:-.mnist}
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
mkdir -p ../shared/data && ln -sfn "$(realpath "$DATA")" ../shared/data/mnist  # where the tests look
timeout 240 python3 -m pytest -q -p no:cacheprovider -x tests/test_devices.py tests/test_learned_optimizer.py \
    tests/test_optimizer_contract.py tests/test_lstm.py 2>&1 | tail -15 | tee "$OUT/tests.txt"
timeout 120 python3 benchmarks/step_cost.py --device cuda 2>&1 | tee "$OUT/step_cost.txt"
timeout 240 python3 benchmarks/generalization.py --data-dir "$DATA" --device cuda --threads 4 2>&1 \
    | tee "$OUT/generalization.txt"
