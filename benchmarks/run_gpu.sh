#!/usr/bin/env bash
# One prepared GPU benchmark call: about 6.5 minutes on one H200 (estimated 2026-12-08 from the 2026-12-04 call,
# which took 5.5), each step with its own timeout, 7.9 minutes in all at most. Needs python with torch (CUDA),
# numpy and scipy; not textual, plotext or sqlite-utils.
#
#   benchmarks/run_gpu.sh                          # writes benchmarks/results/smash-*.json and a log
#   RESULTS_DIR=/somewhere benchmarks/run_gpu.sh   # (or $OUT, where the device runner collects files)
#   SMOKE=1 benchmarks/run_gpu.sh                  # the same steps on the CPU, tiny: checks the script
#
# Writes, for the GPU it finds (<gpu> = its name in lowercase, <stamp> = UTC date and time):
#   smash-limit-<gpu>-<stamp>.json   static WRN-40-4 reference (shared/tools/bench_limit.py), batches 50, 256
#   smash-<gpu>-<stamp>.json         paper preset, CIFAR-shaped random data: the static reference again in the
#                                    same process, SMASH training at batch 50 and 256 at the engine's CUDA widths
#                                    (rounded to 32, train.CUDA_MULTIPLE) after building the plans of 3,000 draws
#                                    (--prewarm: the cache of a long run), start and full space, 3 windows of 30
#                                    steps after 20 warm-up steps; then at exact widths (full space, batch 50,
#                                    --exact-too), and with per-configuration CUDA graphs (--graphs-too, opt-in in
#                                    the engine); phase breakdown with kernels per step, scoring 5,000 images
#                                    at eval batch 500 and 1000, bf16-vs-fp32 rank correlation on 10
#                                    architectures, cProfile + torch.profiler of 3 steps
#   conv-plan-probe-<device>-<stamp>.json  one convolution's host cost: seen, new, cuDNN off; host memory per
#                                    plan (conv_plan_probe.py)
#   smash-<gpu>-<stamp>.log          everything printed
set -u
cd "$(dirname "$0")/.."
RESULTS_DIR=${RESULTS_DIR:-${OUT:-benchmarks/results}}
mkdir -p "$RESULTS_DIR"
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null; then PY=.venv/bin/python
else PY=$(command -v python3 || command -v python); fi

if [ -n "${SMOKE:-}" ]; then
    DEV=cpu GPU=smoke-cpu
    LIMIT_ARGS=(--device cpu --batches 2 --steps 1 --warmup 0)
    SMASH_ARGS=(--device cpu --threads 1 --preset quick --batches 2,4 --steps 2 --warmup 1 --windows 2 --breakdown 1
                --profile 1 --score-archs 1 --score-images 40 --score-batch 20,40 --rank-corr 3 --baseline-steps 1
                --prewarm 5 --exact-too --graphs-too)
    export SMASH_CONV_MULTIPLE=16  # the CUDA path's rounded widths, so --exact-too has something to compare
else
    DEV=cuda
    GPU=$($PY -c "import re, torch; print(re.sub(r'[^a-z0-9]+', '-', torch.cuda.get_device_name().lower()).strip('-'))" \
          2>/dev/null) || { echo "no CUDA device visible to $PY (SMOKE=1 runs the script on the CPU)"; exit 1; }
    LIMIT_ARGS=(--device cuda --batches 50,256)
    SMASH_ARGS=(--device cuda --preset paper --batches 50,256 --steps 30 --warmup 20 --windows 3 --breakdown 10
                --profile 3 --score-archs 10 --score-images 5000 --score-batch 500,1000 --rank-corr 10
                --prewarm 3000 --exact-too --graphs-too)
fi
STAMP=$(date -u +%Y%m%dT%H%M)
LOG="$RESULTS_DIR/smash-$GPU-$STAMP.log"
LIMIT=""
for p in ../shared/tools/bench_limit.py shared/tools/bench_limit.py; do
    if [ -f "$p" ]; then LIMIT=$p; break; fi
done

{
    echo "== $(date -u) on $(hostname); python $PY; git $(git rev-parse HEAD 2>/dev/null || echo unknown)"
    [ "$DEV" = cuda ] && { nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true; }
    $PY -c "import torch, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'numpy', numpy.__version__)"

    if [ -n "$LIMIT" ]; then
        echo "== static reference: $LIMIT"
        timeout 100 $PY "$LIMIT" "${LIMIT_ARGS[@]}" --out "$RESULTS_DIR/smash-limit-$GPU-$STAMP.json" \
            || echo "bench_limit failed or timed out (rc $?)"
        BASELINE=(--baseline --bench-limit "$LIMIT")
    else
        echo "== bench_limit.py not found (../shared/tools/ or shared/tools/): static reference skipped"
        BASELINE=()
    fi

    echo "== SMASH"
    timeout 330 $PY benchmarks/bench_smash.py "${SMASH_ARGS[@]}" "${BASELINE[@]}" \
        --out "$RESULTS_DIR/smash-$GPU-$STAMP.json" || echo "bench_smash failed or timed out (rc $?)"
    echo "== convolution host cost"
    if [ -n "${SMOKE:-}" ]; then PROBE=(--device cpu --calls 2 --memory-configs 5); else PROBE=(); fi
    timeout 45 $PY benchmarks/conv_plan_probe.py "${PROBE[@]}" --out "$RESULTS_DIR" \
        || echo "conv_plan_probe failed or timed out (rc $?)"
    echo "== done $(date -u)"
} 2>&1 | tee "$LOG"
