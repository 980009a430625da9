#!/usr/bin/env bash
# One call on the GPU machine: the kernel timeline of a batch-1 decode step (per launch of the
# lean W4 GEMV and decode attention: when its blocks became resident, PDL release, input staging,
# main loop, tail; kernel_timeline.h), from a build with -DHCI_KERNEL_STAMPS=ON.
#   bash bench/device_timeline.sh [MODEL] ["ENV=V ..." ...]   (one timeline per variant; none: default)
# Writes $OUT/timeline-N.txt (N: the variant's index) and prints the tokens/s lines.
set -uo pipefail
model=${1:-llama-2-7b}
shift || true
OUT=${OUT:-/tmp/hci_out}
mkdir -p "$OUT"
CMAKE=/opt/torch/.venv/bin/cmake
command -v $CMAKE >/dev/null || CMAKE=cmake
BUILD=runtime/build-stamps
NVCC=$(command -v nvcc || true)
t0=$SECONDS
if ! { $CMAKE -S runtime -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DHCI_WITH_CUDA=ON \
       -DHCI_KERNEL_STAMPS=ON -DCMAKE_CUDA_ARCHITECTURES=90 ${NVCC:+-DCMAKE_CUDA_COMPILER=$NVCC} &&
       $CMAKE --build "$BUILD" -j16 --target decode_bench; } >"$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"; exit 1
fi
echo "built in $((SECONDS - t0)) s"
rm -f "$OUT/build.log"
[ $# -eq 0 ] && set -- "-"
i=0
for v in "$@"; do
  envs=()
  [ "$v" != "-" ] && read -r -a envs <<<"$v"
  env HCINFER_KERNEL_STAMPS=1 "${envs[@]}" timeout 150 "$BUILD/decode_bench" --model "$model" \
    --bits 4 --new 64 --repeats 3 2>"$OUT/timeline-$i.txt" | sed "s/^/[$v] /"
  i=$((i + 1))
done
