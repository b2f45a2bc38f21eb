#!/bin/sh
# Every GPU measurement the open issues ask for, as ONE device call (never run on a GPU yet; estimated at under 10 minutes on an H100 or H200).
#
# Before the call, here: `make gpu-prep` (puts d3rlpy 2.8.1's wheels, the dependencies the GPU image lacks and the
# shared d3rlpy_speed.py into the ignored folder .gpu/). Then, on the GPU machine, from the repo root, carrying .gpu:
#     sh benchmarks/gpu_check.sh          # results under $OUT (else /tmp/gpu-check)
# SMOKE=1 runs the same steps on CPU at toy sizes (no capture, no timing worth reading): it checks this script,
# the wheels and the peer script before a GPU's minutes are spent on them.
#
# 1. cuda_graphs_check.py: training with every update replayed as a CUDA graph against eager training (agreement,
#    eager and graphed updates/s) for every algorithm;
# 2. compare_d3rlpy.py --cuda-graphs: ours eager and graphed against d3rlpy's fit on the same GPU (the 5x goal);
# 3. bench_algos.py -k graphed: the pytest-benchmark figures of the graphed updates (Hopper and MPE shapes).
set -u
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
if [ "${SMOKE:-0}" = 1 ]; then
    DEV=cpu; GRAPHS="--updates 3 --n 2 --reps 1 --algos td3bc,omar"; CMP="--n td3bc=20 --reps 1 --max-reps 1 --algos td3bc"
else
    DEV=cuda; GRAPHS="--updates 100 --n 200 --reps 3"; CMP="--cuda-graphs --reps 3 --max-reps 3 --n td3bc=1000,cql=300,bear=300,dbr=300"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/gpu.txt"

echo "== 1. CUDA graphs against eager training"
# shellcheck disable=SC2086
timeout 240 "$PY" benchmarks/cuda_graphs_check.py --device $DEV $GRAPHS --json "$OUT/graphs.jsonl" 2>&1 \
    | tee "$OUT/graphs.txt"

echo "== 2. ours (eager, graphed) against d3rlpy 2.8.1"
if [ -d .gpu ] && ls .gpu/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/gpu-site .gpu/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/gpu-site"
fi
if "$PY" -c "import d3rlpy" 2>/dev/null && [ -f .gpu/d3rlpy_speed.py ]; then
    # shellcheck disable=SC2086
    timeout 300 "$PY" benchmarks/compare_d3rlpy.py --device $DEV --python "$PY" --peer-script .gpu/d3rlpy_speed.py \
        --max-wait 0 $CMP --json "$OUT/d3rlpy.jsonl" 2>&1 | tee "$OUT/d3rlpy.txt"
else
    echo "skipped: no d3rlpy (run make gpu-prep here and carry .gpu)" | tee "$OUT/d3rlpy.txt"
fi

echo "== 3. bench_algos.py, graphed variants"
if [ "$DEV" = cuda ]; then
    OFFLINE_BENCH_DEVICE=cuda OFFLINE_BENCH_BENCH_UPDATES=20 timeout 150 "$PY" -m pytest -q -p no:cacheprovider \
        -m benchmark --benchmark-enable --benchmark-columns=median --benchmark-json "$OUT/bench_graphed.json" \
        benchmarks/bench_algos.py -k graphed 2>&1 | tail -40 | tee "$OUT/bench_graphed.txt"
else
    echo "skipped on CPU (graphed benchmarks need CUDA)"
fi
