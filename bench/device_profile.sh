#!/usr/bin/env bash
# One call on the GPU machine: where a decode step's time goes. Builds (sm_90), times graph decode
# with decode_bench, then profiles one eager decode step with Nsight Compute (kernel durations,
# grouped by kernel) and the batch-1 GEMV and attention kernels in detail (warp stalls, memory).
#   bash bench/device_profile.sh [MODEL] [BITS...]       (default: llama-2-7b 4 0)
set -uo pipefail
model=${1:-llama-2-7b}
shift || true
bits_list=${*:-4 0}
OUT=${OUT:-/tmp/hci_out}
mkdir -p "$OUT"
LOG=$OUT/log.txt
say() { echo "== $*" | tee -a "$LOG"; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv,noheader | tee -a "$LOG"
CMAKE=/opt/torch/.venv/bin/cmake
command -v $CMAKE >/dev/null || CMAKE=cmake
BUILD=runtime/build-gpu
NVCC=$(command -v nvcc || true)
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
t0=$SECONDS
if ! { $CMAKE -S runtime -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DHCI_WITH_CUDA=ON \
       -DCMAKE_CUDA_ARCHITECTURES=90 ${NVCC:+-DCMAKE_CUDA_COMPILER=$NVCC} &&
       $CMAKE --build "$BUILD" -j16; } >"$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"; exit 1
fi
say "built in $((SECONDS - t0)) s; ncu: ${NCU:-none}"
B=$BUILD/decode_bench
for bits in $bits_list; do
  for pdl in 0 1; do
    HCINFER_PDL=$pdl timeout 120 $B --model "$model" --bits "$bits" --new 64 --repeats 3 2>&1 |
      sed "s/^/PDL=$pdl /" | tee -a "$LOG"
  done
done
[ -n "$NCU" ] || { say "no ncu"; exit 0; }
summ() {  # ncu raw csv -> per-kernel totals (us), biggest first
  python3 - "$1" <<'EOF'
import csv, sys, collections, re
rows = list(csv.reader(open(sys.argv[1])))
hdr = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
h = rows[hdr]; kn = h.index("Kernel Name"); tv = h.index("gpu__time_duration.sum"); gs = h.index("Grid Size")
tot = collections.OrderedDict(); cnt = collections.Counter(); allt = 0.0
for r in rows[hdr + 2:]:  # (the row after the header holds the units)
    try: t = float(r[tv].replace(",", "")) / 1000.0
    except (ValueError, IndexError): continue
    name = re.sub(r"\(.*", "", r[kn]).replace("void ", "").replace("(anonymous namespace)::", "")
    name += " grid " + r[gs]
    tot[name] = tot.get(name, 0.0) + t; cnt[name] += 1; allt += t
print(f"kernels {sum(cnt.values())}, sum of durations {allt:.1f} us")
for n, t in sorted(tot.items(), key=lambda x: -x[1]):
    print(f"  {t:9.1f} us  {cnt[n]:4d} x  {t / cnt[n]:7.2f} us  {n[:100]}")
EOF
}
for bits in $bits_list; do
  say "ncu: one eager decode step, bits $bits"
  HCINFER_PDL=1 timeout 300 $NCU --profile-from-start off --cache-control none --clock-control none \
    --metrics gpu__time_duration.sum --csv --page raw \
    $B --model "$model" --bits "$bits" --profile-step >"$OUT/ncu_step_w$bits.csv" 2>"$OUT/ncu_step_w$bits.err"
  summ "$OUT/ncu_step_w$bits.csv" 2>&1 | tee -a "$LOG" || tail -5 "$OUT/ncu_step_w$bits.err"
done
say "ncu: detail of the first GEMVs, the attention kernel (bits ${bits_list%% *})"
bits=${bits_list%% *}
HCINFER_PDL=1 timeout 300 $NCU --profile-from-start off --cache-control none --clock-control none \
  -k "regex:qgemv1|gemv|attention_decode" -c 5 \
  --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section Occupancy \
  --section LaunchStats --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
  --metrics smsp__inst_executed.sum,dram__bytes_read.sum,smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_short_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_math_pipe_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_wait_per_issue_active.ratio,smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio,smsp__average_warps_issue_stalled_lg_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_mio_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_not_selected_per_issue_active.ratio,smsp__average_warps_issue_stalled_selected_per_issue_active.ratio,smsp__average_warps_issue_stalled_dispatch_stall_per_issue_active.ratio,smsp__average_warps_issue_stalled_no_instruction_per_issue_active.ratio,smsp__average_warps_issue_stalled_branch_resolving_per_issue_active.ratio,smsp__average_warps_issue_stalled_membar_per_issue_active.ratio,smsp__average_warps_issue_stalled_drain_per_issue_active.ratio,smsp__average_warps_issue_stalled_sleeping_per_issue_active.ratio,smsp__average_warps_issue_stalled_tex_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_imc_miss_per_issue_active.ratio,smsp__average_warps_issue_stalled_misc_per_issue_active.ratio \
  $B --model "$model" --bits "$bits" --profile-step >"$OUT/ncu_detail.txt" 2>&1
grep -E "^  [a-z_]+.*\(|Duration|Memory Throughput|DRAM Throughput|Compute \(SM\)|Registers Per|Achieved Occupancy|Theoretical Occupancy|Warp Cycles Per Issued|Issued Ipc|Stall|Block Limit|Grid Size|No Eligible|Eligible Warps|One or More|stalled|inst_executed|dram__bytes" \
  "$OUT/ncu_detail.txt" | cut -c1-150 | head -220
say "done in $((SECONDS - t0)) s"
if [ "${HETERO:-0}" = 1 ]; then
  say "cpu-async rank 16, 4 model instances, the process's threads after each"
  HCINFER_PDL=1 timeout 240 $B --model "$model" --bits 4 --placement cpu-async --rank 16 --new 64 \
    --repeats 3 --instances 4 --tasks 2>&1 | tee -a "$LOG"
fi
