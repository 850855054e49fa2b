#!/usr/bin/env bash
# Everything one lease of a GPU machine runs, in one call, prepared for trial 18 of
# docs/mnist.md and not yet run on a GPU (the GPU rows of BENCHMARKS.md come from an earlier
# session, with the commands written beside them). From the repository root on the GPU machine,
# with the MNIST files in $DATA and results written under $OUT:
#
#     DATA=.mnist OUT=/tmp/out bash benchmarks/gpu_lease.sh
#
# 1. Six meta-training arms side by side on the one GPU (meta-graphs held a segment at a time,
#    --recompute-every, so that all six fit in 80 GB, less than the lent H200's), each ended
#    by SIGTERM after $ARM_SECONDS (the run keeps its best so far and can be resumed), with
#    the test suite beside them; their run directories come back whole as $OUT/runs.tar.gz, so that a good one can be
#    exported with its command and machine.
# 2. Then, alone on the GPU, the speed of a meta-training trajectory (benchmarks/mnist.py) with
#    float32 and bfloat16 products, eager and compiled.
#
# SMOKE=1 shrinks everything to a few seconds on the CPU, to check the script itself.
set -u
DATA=${DATA:-.mnist}
OUT=${OUT:-/tmp/gpu-lease}
DEVICE=${DEVICE:-cuda}
ARM_SECONDS=${ARM_SECONDS:-400}
TRAJECTORIES=${TRAJECTORIES:-100}
VALIDATION=${VALIDATION:-64}
BIG=${BIG:-64}
SMALL=${SMALL:-16}
RUNS=${RUNS:-runs/gpu}
TEST_ARGS=${TEST_ARGS:--n 4 tests}
BENCH_INSTANCES=${BENCH_INSTANCES:-16 64 128}
COMPILE_INSTANCES=${COMPILE_INSTANCES:-64}
if [ "${SMOKE:-0}" = 1 ]; then
    DEVICE=cpu ARM_SECONDS=60 TRAJECTORIES=2 VALIDATION=2 BIG=2 SMALL=1
    TEST_ARGS="tests/test_idx.py" BENCH_INSTANCES=1 COMPILE_INSTANCES=1
fi
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$RUNS"

# The tests look for MNIST at ../shared/data/mnist beside the repository.
if [ ! -e ../shared/data/mnist ]; then
    case "$DATA" in /*) target=$DATA ;; *) target=$PWD/$DATA ;; esac
    mkdir -p ../shared/data && ln -s "$target" ../shared/data/mnist
fi

{
    date -u
    git log -1 --format='commit %H' 2>/dev/null || true
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
    python3 -c 'import torch, platform; print("python", platform.python_version(), "torch", torch.__version__,
        "cuda", torch.cuda.is_available() and torch.cuda.get_device_name(0))'
    nproc
} > "$RUNS/machine.txt" 2>&1
cat "$RUNS/machine.txt"

common=(--task mnist --data-dir "$DATA" --preprocessing log_sign --momentum-inputs 0.5 0.9 0.99
        --update-form gradient_mix --output-init zeros --loss-weights linear
        --validation-problems "$VALIDATION" --quiet --device "$DEVICE" --threads 2)
# Trial 18's fine-tuning of mnist-mix4-base on whole 100-step trajectories (mnist-mix4 on the CPU,
# with 4 instances), with more instances and other seeds.
finetune=(--meta-lr 0.001 --unroll 100 --trajectories "$TRAJECTORIES" --validate-every 10
          --init-from mnist-mix4-base)

arm() {
    local name=$1
    shift
    (
        start=$(date +%s)
        timeout -k 60 "$ARM_SECONDS" python3 -m optimizer3 meta-train "${common[@]}" "$@" \
            --run-dir "$RUNS/$name" > "$RUNS/$name.log" 2>&1
        echo "$name: exit $? after $(( $(date +%s) - start )) s" >> "$RUNS/$name.log"
    ) &
}

arm FT4s4 "${finetune[@]}" --problems 4 --seed 4 --recompute-every 10
arm FT16s0 "${finetune[@]}" --problems "$SMALL" --seed 0 --recompute-every 10
arm FT16s4 "${finetune[@]}" --problems "$SMALL" --seed 4 --recompute-every 10
arm FT64s0 "${finetune[@]}" --problems "$BIG" --seed 0 --recompute-every 5
arm FT64s4 "${finetune[@]}" --problems "$BIG" --seed 4 --recompute-every 5
# Trial 9's GM10s3 from a random LSTM, with 64 instances per trajectory.
arm S64s3 --meta-lr 0.003 --problems "$BIG" --trajectories "$TRAJECTORIES" --validate-every 20 --seed 3 \
    --recompute-every 5
(
    start=$(date +%s)
    # shellcheck disable=SC2086
    timeout -k 30 "$ARM_SECONDS" python3 -m pytest -q -p no:cacheprovider $TEST_ARGS > "$RUNS/tests.log" 2>&1
    echo "tests: exit $? after $(( $(date +%s) - start )) s" >> "$RUNS/tests.log"
) &
wait
tail -n 3 "$RUNS"/*.log
tar czf "$OUT/runs.tar.gz" "$RUNS"

bench() {
    # shellcheck disable=SC2086
    timeout -k 10 150 python3 benchmarks/mnist.py --data-dir "$DATA" --device "$DEVICE" --only-base "$@" 2>&1
}
{
    # shellcheck disable=SC2086
    bench --matmul-dtype float32 --instances $BENCH_INSTANCES
    # shellcheck disable=SC2086
    bench --matmul-dtype bfloat16 --instances $BENCH_INSTANCES
    # shellcheck disable=SC2086
    bench --compile --matmul-dtype bfloat16 --instances $COMPILE_INSTANCES
    # shellcheck disable=SC2086
    bench --compile --matmul-dtype float32 --instances $COMPILE_INSTANCES
} | tee "$OUT/bench.txt"
