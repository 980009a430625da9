#!/usr/bin/env bash
# One call on the GPU machine (issue 4): warp-state statistics of the first layer's four W4 GEMVs
# of Llama-2-7B, the lean kernel (HCINFER_QGEMV_SIMT=3) against its tensor-core scheme (=4), one
# eager decode step (decode_bench --profile-step) under Nsight Compute. Writes $OUT/ncu-modeN.txt.
#   bash bench/device_ncu_w4.sh
set -uo pipefail
OUT=${OUT:-/tmp/hci_out}; mkdir -p "$OUT"
CMAKE=/opt/torch/.venv/bin/cmake; NVCC=$(command -v nvcc || true)
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
t0=$SECONDS
$CMAKE -S runtime -B runtime/build-ncu -DCMAKE_BUILD_TYPE=Release -DHCI_WITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 ${NVCC:+-DCMAKE_CUDA_COMPILER=$NVCC} >/dev/null &&
$CMAKE --build runtime/build-ncu -j16 --target decode_bench >"$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; exit 1; }
echo "built in $((SECONDS - t0)) s; ncu ${NCU:-none}"
for mode in 3 4; do
  HCINFER_QGEMV_SIMT=$mode timeout 240 $NCU --profile-from-start off -k regex:qgemv4_kernel --launch-count 4 \
    --section WarpStateStats --section SchedulerStats --section SpeedOfLight --section LaunchStats \
    --cache-control none --clock-control none \
    runtime/build-ncu/decode_bench --model llama-2-7b --bits 4 --new 4 --repeats 1 --profile-step > "$OUT/ncu-mode$mode.txt" 2>&1
  echo "== mode $mode"; grep -E "qgemv4_kernel|Duration|Memory Throughput|DRAM Throughput|Issued Ipc|Warp Cycles Per Issued|Stall|Eligible Warps|No Eligible|Registers Per" "$OUT/ncu-mode$mode.txt" | sed 's/  */ /g' | cut -c1-160 | head -60
done
echo "total $((SECONDS - t0)) s"
