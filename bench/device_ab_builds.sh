#!/usr/bin/env bash
# One call on the GPU machine: A/B of batch-1 graph decode between builds of different sources,
# runs interleaved so that clock and thermal drift fall on every build alike.
#   bash bench/device_ab_builds.sh ROUNDS LABEL=SRC_DIR[:CMAKE_CUDA_FLAGS] ... -- "ENV=V ..." ...
# SRC_DIR is a folder holding runtime/ (the checkout: .); the variants after -- are environment
# settings run with every build ("-" for none). decode_bench: llama-2-7b W4 g128, 64 new tokens,
# plus $DECODE_ARGS (e.g. "--placement cpu-async --rank 8").
set -uo pipefail
rounds=$1
shift
OUT=${OUT:-/tmp/hci_out}
mkdir -p "$OUT"
LOG=$OUT/log.txt
CMAKE=/opt/torch/.venv/bin/cmake
command -v $CMAKE >/dev/null || CMAKE=cmake
NVCC=$(command -v nvcc || true)
labels=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  label=${1%%=*}
  spec=${1#*=}
  src=${spec%%:*}
  flags=""
  [ "$spec" != "$src" ] && flags=${spec#*:}
  build="$src/runtime/build-ab-$label"
  t0=$SECONDS
  if ! { $CMAKE -S "$src/runtime" -B "$build" -DCMAKE_BUILD_TYPE=Release -DHCI_WITH_CUDA=ON \
         -DCMAKE_CUDA_ARCHITECTURES=90 "-DCMAKE_CUDA_FLAGS=$flags" ${NVCC:+-DCMAKE_CUDA_COMPILER=$NVCC} &&
         $CMAKE --build "$build" -j16 --target decode_bench; } >"$OUT/build-$label.log" 2>&1; then
    tail -30 "$OUT/build-$label.log"
    exit 1
  fi
  echo "built $label ($src, flags '$flags') in $((SECONDS - t0)) s" | tee -a "$LOG"
  grep -i "spill" "$OUT/build-$label.log" | grep -i qgemv4 | head -3 | tee -a "$LOG"
  rm -f "$OUT/build-$label.log"
  declare "bin_$label=$build/decode_bench"
  labels+=("$label")
  shift
done
shift || true
variants=("$@")
[ ${#variants[@]} -eq 0 ] && variants=("-")
for r in $(seq 1 "$rounds"); do
  for v in "${variants[@]}"; do
    for label in "${labels[@]}"; do
      bin_var="bin_$label"
      envs=()
      [ "$v" != "-" ] && read -r -a envs <<<"$v"
      line=$(env "${envs[@]}" timeout 150 "${!bin_var}" --model llama-2-7b --bits 4 --new 64 \
             --repeats 5 ${DECODE_ARGS:-} 2>"$OUT/err.txt" | grep "tok/s")
      [ -z "$line" ] && line="FAILED: $(tail -2 "$OUT/err.txt")"
      echo "r$r $label [$v]: $line" | tee -a "$LOG"
    done
  done
done
rm -f "$OUT/err.txt"
