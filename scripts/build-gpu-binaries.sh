#!/usr/bin/env bash
# Builds the wgpu variants of `mitoscope` that scripts/gpu-check.sh compares on a GPU machine,
# stripped and gzipped, into .gpu-bin/ (ignored by git; carried to the device as one path). A
# stripped wgpu binary is ~71 MB, over the device's 64 MiB carry limit; gzipped ~20 MB. Each variant
# is a separate burn + wgpu build (~10 min on 2 cores the first time). The GPU machine has no
# Rust toolchain and reaches no network: everything it runs is built here.
#
#   bash scripts/build-gpu-binaries.sh            # plain, fusion, autotune
#   bash scripts/build-gpu-binaries.sh plain      # one variant
set -euo pipefail
cd "$(dirname "$0")/.."
variants=("${@:-plain fusion autotune}")
mkdir -p .gpu-bin
for v in ${variants[*]}; do
  case "$v" in
    plain) features=wgpu ;;
    fusion) features=wgpu,wgpu-fusion ;;
    autotune) features=wgpu,wgpu-autotune ;;
    both) features=wgpu,wgpu-fusion,wgpu-autotune ;;
    *) echo "unknown variant '$v' (plain, fusion, autotune, both)" >&2; exit 2 ;;
  esac
  # One target folder per feature set, so variants do not rebuild each other.
  CARGO_TARGET_DIR="target/gpu-$v" cargo build --release -p mitoscope --features "$features"
  cp "target/gpu-$v/release/mitoscope" ".gpu-bin/mitoscope-$v"
  strip ".gpu-bin/mitoscope-$v"
  gzip -f -9 ".gpu-bin/mitoscope-$v"
  ls -l ".gpu-bin/mitoscope-$v.gz"
done
du -sh .gpu-bin
