#!/usr/bin/env bash
# Tuning call on the GPU machine: build, kernel tests, GEMV table, and the decode benchmark
# under the engine's tuning switches (HCINFER_PDL, HCINFER_FUSE, HCINFER_QGEMV_SIMT) with a
# per-stage profile (HCINFER_PROFILE=1). Prints short tables; logs in $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/hci_out}
mkdir -p "$OUT"
LOG=$OUT/log.txt
CMAKE=/opt/torch/.venv/bin/cmake
# our own build folder (a warm machine may hold another configuration in runtime/build)
BUILD=runtime/build-gpu
NVCC=$(command -v nvcc || true)
export HCINFER_LIB=$PWD/$BUILD/libhcinfer.so
t0=$SECONDS
{ $CMAKE -S runtime -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DHCI_WITH_CUDA=ON \
       ${NVCC:+-DCMAKE_CUDA_COMPILER=$NVCC} && $CMAKE --build "$BUILD" -j16; } >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
echo "built in $((SECONDS - t0)) s"
timeout 200 $BUILD/test_gpu_kernels 2>&1 | tee -a "$LOG" | grep -v "^ok " | tail -20
timeout 200 $BUILD/test_gpu_model 2>&1 | tee -a "$LOG" | grep -E "FAIL|failed|passed" | tail -8
timeout 120 $BUILD/test_gpu_kernels --bench 2>&1 | tee -a "$LOG" | grep -E "HBM|(fp16|W4 g128) +(1|16) +0 " | head -30
source .offline/activate.sh
F="--no-check --config .device/gpu/deno.json --no-lock --cached-only -A"
run() {
  echo "== $*"
  env "$@" deno run $F cli/bench.ts throughput --config experiments/configs/throughput_ab.json \
    --out "/tmp/ab_$RANDOM" 2>&1 | grep -E "^profile|^\| synthetic" | cut -c1-140 | tee -a "$LOG"
}
run HCINFER_PROFILE=1
run HCINFER_PDL=0
run HCINFER_FUSE=0
run HCINFER_QGEMV_SIMT=1
echo "done in $((SECONDS - t0)) s"
