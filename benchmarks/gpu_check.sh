#!/usr/bin/env bash
# The GPU check of issue 13 as one command, on one H100/H200: the GPU tests, the attention
# kernels alone (gpu_attention.py), then the step benchmark (gpu_step.py), headline rows first,
# each part capped in time so that one stall cannot take the other's share; together under one
# 10-minute device command (on one H200 all rows need ~9 minutes: with no ORDER the last few
# are cut). Output and the rows' JSON go to the folder given (default: runs/gpu_check).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]
#   ORDER=fit,head TESTS=tests/test_hot_loop_gpu.py bash benchmarks/gpu_check.sh   # a part
#   PROFILE='loki-compiled(blocks' ORDER=fit bash benchmarks/gpu_check.sh   # + a kernel breakdown
#   PROFILE=fit ...   the same for the Lightning path, per micro-batch (idle time included)
#   ATTN_SECONDS=0 ... skips the attention kernels; TEST_SECONDS, PROFILE_SECONDS, BENCH_SECONDS,
#   STEPS and WARMUP set the other parts' caps and lengths
#
# Packages the machine lacks may sit in .whl/ (benchmarks/carry_wheels.sh puts them there):
# wheels are installed, and *.site.tar.xz bundles unpacked, into a private folder put first on
# PYTHONPATH; nothing outside it changes.
set -uo pipefail
out=${1:-runs/gpu_check}
mkdir -p "$out"
python=${PYTHON:-python3}
site=/tmp/loki-site
if compgen -G ".whl/*.whl" >/dev/null; then
  $python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .whl/*.whl || exit 1
fi
for bundle in .whl/*.site.tar.xz; do  # unpacked by Python: no xz binary needed there
  if [ -e "$bundle" ]; then
    $python -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="data")' \
      "$bundle" "$site" || exit 1
  fi
done
if [ -d "$site" ]; then
  # a folder on PYTHONPATH has its .pth files ignored: add the folders they name
  named=$(cat "$site"/*.pth 2>/dev/null | grep -v '^import' | sed "s|^|$site/|" | paste -sd: -)
  export PYTHONPATH=$site${named:+:$named}${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 WANDB_MODE=offline
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,utilization.gpu \
  --format=csv | tee "$out/nvidia_smi.csv"
# the sync test first: if the cap cuts the list, the kernel comparisons are what is lost
tests=${TESTS-tests/test_hot_loop_gpu.py tests/test_host_copy.py tests/test_loss.py tests/test_flex_alibi.py
tests/test_attention.py}
if [ -n "$tests" ]; then
  # shellcheck disable=SC2086  # a list of test files
  timeout "${TEST_SECONDS:-170}" $python -m pytest -q -s -m gpu $tests 2>&1 \
    | tee "$out/pytest_gpu.txt"
fi
if [ -n "${PROFILE:-}" ]; then  # a variant whose step to break down by kernel (gpu_profile.py)
  timeout "${PROFILE_SECONDS:-150}" $python benchmarks/gpu_profile.py --variant "$PROFILE" 2>&1 \
    | tee "$out/gpu_profile.txt"
fi
if [ "${ATTN_SECONDS:-90}" != 0 ]; then  # ALiBi attention fwd+bwd per backend, one layer's shape
  timeout "${ATTN_SECONDS:-90}" $python benchmarks/gpu_attention.py --json "$out/gpu_attention.json" \
    2>&1 | tee "$out/gpu_attention.txt"
fi
headline="loki-compiled(blocks,fit,fit(flex-flash),llama-sdpa,loki-fp8-tensorwise"
headline="$headline,fit(flex-flash,keep-gathered),fit-fp8(tensorwise,fp8-gather)"
choices="loki-compiled(model,fit(model),fit(keep-gathered),fit(autotune),loki-fp8-rowwise"
choices="$choices,fit-fp8(tensorwise)"
choices="$choices,fit-fp8(rowwise)"
rest="loki-sdpa,loki-flex,head,loki-flash,llama-flash"
timeout "${BENCH_SECONDS:-480}" $python benchmarks/gpu_step.py \
  --only "${ORDER:-$headline,$choices,$rest}" --steps "${STEPS:-6}" --warmup "${WARMUP:-2}" \
  --json "$out/gpu_step.json" 2>&1 | tee "$out/gpu_step.txt"
