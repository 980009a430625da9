#!/usr/bin/env bash
# One call on the GPU machine for heterogeneous compensation (issue 5): build (sm_90 only, to
# save device time), the GPU model tests (CPU placements vs GPU placement on a generated model),
# the Deno GPU tests on `small`, then the `hetero_throughput` experiment of CONFIG.
# Needs .offline (Deno bundle) and .device/gpu (small checkpoint, trimmed deno.json).
#   bash bench/device_hetero.sh [CONFIG] [tests|bench|all]
set -uo pipefail
config=${1:-experiments/configs/hetero_throughput_h100.json}
phase=${2:-all}
OUT=${OUT:-/tmp/hci_out}
mkdir -p "$OUT"
LOG=$OUT/log.txt
say() { echo "== $*" | tee -a "$LOG"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$LOG"
lscpu | grep -E "^Model name|^CPU\(s\)|^L3" | tee -a "$LOG"
CMAKE=/opt/torch/.venv/bin/cmake
command -v $CMAKE >/dev/null || CMAKE=cmake
BUILD=runtime/build-gpu
NVCC=$(command -v nvcc || true)
export HCINFER_LIB=$PWD/$BUILD/libhcinfer.so
t0=$SECONDS
if ! { $CMAKE -S runtime -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DHCI_WITH_CUDA=ON \
       -DCMAKE_CUDA_ARCHITECTURES=90 ${NVCC:+-DCMAKE_CUDA_COMPILER=$NVCC} &&
       $CMAKE --build "$BUILD" -j16; } >"$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"; exit 1
fi
say "built in $((SECONDS - t0)) s"
source .offline/activate.sh
export HCINFER_SOURCE_REVISION=${HCINFER_SOURCE_REVISION:-unknown}
DENO_FLAGS="--no-check --config .device/gpu/deno.json --no-lock --cached-only -A"
if [ "$phase" = tests ] || [ "$phase" = all ]; then
  say "test_comp_server"; timeout 60 $BUILD/test_comp_server 2>&1 | tail -3 | tee -a "$LOG"
  [ -n "${HCI_SKIP_LATENCY:-}" ] || timeout 120 $BUILD/test_comp_server --bench 2>&1 | tee -a "$LOG"
  say "test_gpu_model"; timeout 300 $BUILD/test_gpu_model 2>&1 | tee -a "$LOG" | grep -v "^ok " | tail -40
  say "deno gpu tests"; HCINFER_SMALL_MODEL=.device/gpu/models/small timeout 200 deno test $DENO_FLAGS \
    ffi/gpu_test.ts ffi/gpu_hetero_test.ts 2>&1 | tail -25 | tee -a "$LOG"
fi
if [ "$phase" = bench ] || [ "$phase" = all ]; then
  say "hetero_throughput $config"
  timeout 480 deno run $DENO_FLAGS cli/bench.ts hetero --config "$config" --out "$OUT/hetero" 2>&1 |
    tail -60 | tee -a "$LOG"
fi
say "done in $((SECONDS - t0)) s"
