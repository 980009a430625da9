#!/usr/bin/env bash
# SASS of one kernel on this machine, which has CUDA 13's nvcc but no GPU and no cuobjdump for
# CUDA 13 cubins: the PTX comes from CUDA 13, its `.version` is lowered to 7.8, and CUDA 11.8's
# ptxas and cuobjdump (Debian's nvidia-cuda-toolkit, non-free) assemble and disassemble it for
# sm_90. ptxas 11.8 schedules a little differently from 13's, but the instruction selection (the
# count per loop, LOP3 vs AND+OR, address arithmetic, register moves) is what this is for.
#   bash bench/local_sass.sh FILE.cu KERNEL_SUBSTRING [OUT]      e.g. runtime/src/gpu/gemv.cu qgemv4_kernelILi2ELi4ELb0E
# The 11.8 tools: SASS_TOOLKIT (default /tmp/cudatk, from `apt-get download nvidia-cuda-toolkit`
# with the non-free component enabled, then `dpkg -x nvidia-cuda-toolkit_*.deb /tmp/cudatk`).
set -euo pipefail
src=${1:?usage: local_sass.sh FILE.cu KERNEL_SUBSTRING [OUT]}
kernel=${2:?usage: local_sass.sh FILE.cu KERNEL_SUBSTRING [OUT]}
out=${3:-/tmp/local_sass}
tk=${SASS_TOOLKIT:-/tmp/cudatk}/usr/bin
[ -x "$tk/ptxas" ] && [ -x "$tk/cuobjdump" ] || {
  echo "local_sass: no CUDA 11.8 ptxas/cuobjdump under $tk (see the comment at the top)" >&2
  exit 1
}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
# PTX for sm_90 first; where it uses instructions ptxas 11.8 does not know (cp.async.bulk...),
# PTX for sm_80 (the code's pre-Hopper paths), still assembled for sm_90
for arch in 90 80; do
  nvcc -std=c++17 -O3 -arch=sm_$arch -ptx -I"$root/runtime/include" -I"$root/runtime/src" \
    -I"$root/runtime/src/gpu" -o "$out/k.ptx" "$src"
  sed -e 's/^\.version .*/.version 7.8/' -e 's/^\.target sm_80/.target sm_90/' "$out/k.ptx" >"$out/k78.ptx"
  if "$tk/ptxas" -arch=sm_90 -O3 -v -o "$out/k.cubin" "$out/k78.ptx" 2>"$out/ptxas.txt"; then
    [ $arch = 80 ] && echo "local_sass: PTX of the sm_80 paths (ptxas 11.8 refused the sm_90 PTX)"
    break
  fi
  [ $arch = 80 ] && { grep -m5 error "$out/ptxas.txt" >&2; exit 1; }
done
"$tk/cuobjdump" -sass "$out/k.cubin" >"$out/all.sass"
start=$(grep -n "Function :.*$kernel" "$out/all.sass" | head -1 | cut -d: -f1)
[ -n "$start" ] || { echo "local_sass: no kernel matching $kernel" >&2; exit 1; }
awk -v L="$start" 'NR >= L' "$out/all.sass" | awk '/Function :/ && NR > 1 {exit} {print}' |
  grep -o '/\*[0-9a-f]\{4\}\*/ .*;' | sed 's/ \+/ /g' >"$out/kernel.sass"
echo "$(wc -l <"$out/kernel.sass") instructions in $out/kernel.sass; by opcode:"
awk '{op = ($2 ~ /^@/) ? $3 : $2; sub(/\..*/, "", op); sub(/;$/, "", op); print op}' \
  "$out/kernel.sass" | sort | uniq -c | sort -rn | head -15
