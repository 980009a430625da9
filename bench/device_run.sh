#!/usr/bin/env bash
# One call on the GPU machine: build, then `check` (GPU tests, kernel bandwidth table, accuracy vs
# the CPU on `small`, a quick throughput run) or `bench` (the throughput experiment of CONFIG).
# Needs .offline (Deno bundle) and .device (small checkpoint, heldout text, trimmed deno.json).
#   bash bench/device_run.sh check|bench|all [CONFIG]   (all = check, then CONFIG instead of the quick run)
set -uo pipefail
phase=${1:-check}
config=${2:-experiments/configs/throughput_h100.json}
OUT=${OUT:-/tmp/hci_out}
mkdir -p "$OUT"
LOG=$OUT/log.txt
say() { echo "== $*" | tee -a "$LOG"; }
say "nvcc: $(nvcc --version | tail -1)"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,pcie.link.gen.max,pcie.link.width.max --format=csv 2>&1 | tee -a "$LOG"
CMAKE=/opt/torch/.venv/bin/cmake
# our own build folder (a warm machine may hold another configuration in runtime/build)
BUILD=runtime/build-gpu
NVCC=$(command -v nvcc || true)
export HCINFER_LIB=$PWD/$BUILD/libhcinfer.so
command -v $CMAKE >/dev/null || CMAKE=cmake
t0=$SECONDS
if ! { $CMAKE -S runtime -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DHCI_WITH_CUDA=ON \
       ${NVCC:+-DCMAKE_CUDA_COMPILER=$NVCC} &&
       $CMAKE --build "$BUILD" -j16; } >"$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"; exit 1
fi
say "built in $((SECONDS - t0)) s: $(grep 'hcinfer:' "$OUT/build.log" | head -2)"
source .offline/activate.sh
export HCINFER_SOURCE_REVISION=${HCINFER_SOURCE_REVISION:-unknown}
DENO_FLAGS="--no-check --config .device/gpu/deno.json --no-lock --cached-only -A"
if [ "$phase" = check ] || [ "$phase" = all ]; then
  say "test_gpu_kernels"; timeout 240 $BUILD/test_gpu_kernels 2>&1 | tee -a "$LOG" | grep -v "^ok " | tail -40
  say "test_gpu_model"; timeout 240 $BUILD/test_gpu_model 2>&1 | tee -a "$LOG" | grep -v "^ok " | tail -40
  say "gemv bench"; timeout 120 $BUILD/test_gpu_kernels --bench 2>&1 | tee -a "$LOG" | grep -E "HBM|(fp16|W4 g128) +(1|16) +0 " | head -30
  # PDL on or off for the final run: whichever decodes fp16 batch 1 faster here
  best_pdl=0; best=0
  for pdl in 0 1; do
    say "A/B HCINFER_PDL=$pdl"
    HCINFER_PROFILE=1 HCINFER_PDL=$pdl timeout 120 deno run $DENO_FLAGS cli/bench.ts throughput \
      --config experiments/configs/throughput_ab.json --out "/tmp/ab_pdl$pdl" 2>&1 |
      grep -E "^profile|^\| synthetic" | sed 's/ \{2,\}/ /g' | cut -c1-400 | tee -a "$LOG" > /tmp/ab_$pdl.txt
    tps=$(grep -m1 "| fp16 |" /tmp/ab_$pdl.txt | awk -F'|' '{print $7}' | tr -d ' ')
    if awk -v a="${tps:-0}" -v b="$best" 'BEGIN{exit !(a>b)}'; then best=$tps; best_pdl=$pdl; fi
  done
  export HCINFER_PDL=$best_pdl
  say "using HCINFER_PDL=$best_pdl (fp16 batch 1: $best tok/s)"
  say "deno gpu tests"; HCINFER_SMALL_MODEL=.device/gpu/models/small timeout 120 deno test $DENO_FLAGS ffi/gpu_test.ts 2>&1 | tail -15 | tee -a "$LOG"
  say "accuracy"; timeout 300 deno run $DENO_FLAGS cli/bench.ts accuracy --model .device/gpu/models/small \
    --data .device/gpu/data/books_heldout.txt --out "$OUT/accuracy" 2>&1 | tail -30 | tee -a "$LOG"
  [ "$phase" = check ] && config=experiments/configs/throughput_quick.json
fi
say "throughput $config"
timeout 500 deno run $DENO_FLAGS cli/bench.ts throughput --config "$config" --out "$OUT/throughput" 2>&1 | tail -40 | tee -a "$LOG"
if [ "$phase" = all ]; then
  say "throughput experiments/configs/throughput_models.json"
  timeout 300 deno run $DENO_FLAGS cli/bench.ts throughput --config experiments/configs/throughput_models.json \
    --out "$OUT/throughput" 2>&1 | grep -E "^\| synthetic:llama-(3|2-13)" | sed 's/ \{2,\}/ /g' | cut -c1-200 | tee -a "$LOG"
fi
say "done in $((SECONDS - t0)) s"
