#!/usr/bin/env bash
# The device check of issue 12, prepared to run in one call on a lent GPU machine (the device
# tool's `run`): the paper-size benchmark table (EGL++ engines × kernel gradients × float32 /
# bfloat16 with values cross-checked, identity-6 estimators, training on the device, peak memory,
# projected --preset paper hours), a short paper-size study smoke run, and the timings written to
# $OUT. Runs from a checkout with PYTHONPATH (the GPU image has jax, flax and the rest; nothing is
# installed). Suggested: run(command="bash benchmarks/gpu_check.sh", timeout_s=540).
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/gpu_check}"
mkdir -p "$OUT"
python3 -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())" \
    2>&1 | tee "$OUT/versions.txt"
timeout 420 python3 benchmarks/bench_pose.py --gpu --images 32 --chunk 8 --repeats 2 2>&1 \
    | tee "$OUT/bench_pose_gpu.txt"
timeout 90 python3 benchmarks/bench_render.py --sizes 256 2>&1 | tee "$OUT/bench_render.txt" || true
