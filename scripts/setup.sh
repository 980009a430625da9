#!/usr/bin/env bash
# One-time (and idempotent) set-up for a fresh x86-64 Linux machine with Node.js and npm:
#   1. system packages: CMake, a C++17 compiler, OpenBLAS and LAPACKE headers; for figures,
#      notebooks and Slurm sweeps (and their tests): Chromium and the DejaVu fonts (static SVG/PDF
#      figures), Jupyter's nbconvert (notebooks on the Deno kernel), Slurm's slurmctld, slurmd,
#      client and munge (a local single-node cluster) (apt-get when root, otherwise the exact
#      command is printed and the script stops);
#   2. Deno, pinned, unpacked from its npm package into .tools/bin (no package.json in the project);
#   3. the runtime library, built by CMake into runtime/build.
# Usage: bash scripts/setup.sh [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."
DENO_VERSION=2.9.6
APT_PACKAGES=(cmake g++ make pkg-config libopenblas-dev liblapacke-dev xz-utils)
# figures (headless Chromium through npm puppeteer-core; pinned font), notebooks, Slurm
APT_PACKAGES+=(chromium fonts-dejavu-core)
APT_PACKAGES+=(jupyter-nbconvert python3-nbclient jupyter-client)
APT_PACKAGES+=(slurmctld slurmd slurm-client munge)

if [[ ${1:-} == --help || ${1:-} == -h ]]; then
  cat <<EOF
Usage: bash scripts/setup.sh [--no-build]   (also: deno task setup)

Installs what is missing, idempotently: apt packages (as root; otherwise prints the apt-get
command): ${APT_PACKAGES[*]};
Deno $DENO_VERSION from npm into .tools/bin; the npm packages of deno.json into Deno's cache;
then builds runtime/build/libhcinfer.so (CMake, Release) unless --no-build.
EOF
  exit 0
fi

say() { echo "setup: $*" >&2; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  elif [[ ! -f /usr/include/lapacke.h && ! -f /usr/include/x86_64-linux-gnu/lapacke.h ]] || ! command -v cmake >/dev/null; then
    say "missing system packages: ${missing[*]}"
    say "run: sudo apt-get install -y ${missing[*]}"
    exit 1
  else
    say "warning: missing ${missing[*]} (figures, notebooks and Slurm sweeps and their tests" \
      "need them); run: sudo apt-get install -y ${missing[*]}"
  fi
fi

deno=.tools/bin/deno
if [[ ! -x $deno ]] || [[ "$($deno --version 2>/dev/null | head -1)" != "deno $DENO_VERSION"* ]]; then
  if command -v deno >/dev/null && [[ "$(deno --version | head -1)" == "deno $DENO_VERSION"* ]]; then
    mkdir -p .tools/bin && ln -sf "$(command -v deno)" "$deno"
  else
    say "installing deno $DENO_VERSION from npm into .tools/bin"
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "@deno/linux-x64-glibc@$DENO_VERSION" >/dev/null && tar xzf ./*.tgz)
    mkdir -p .tools/bin
    mv "$tmp/package/deno" "$deno"
    chmod +x "$deno"
    rm -rf "$tmp"
  fi
fi

# npm packages of deno.json (pinned there and in deno.lock) into Deno's cache, so that tests and
# tasks need no network later
say "caching the npm packages of deno.json"
"$deno" install --quiet >/dev/null ||
  say "warning: could not cache npm packages (offline?); deno fetches them on first use"

if [[ ${1:-} != --no-build ]]; then
  say "building runtime/ (CMake, Release)"
  cmake -S runtime -B runtime/build -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build runtime/build -j"$(nproc)" >/dev/null
  say "built $(ls runtime/build/libhcinfer.so)"
fi
