#!/usr/bin/env bash
# `just build-cuda`: target/release/headstart with the CUDA executor compiled in, on any machine
# (no GPU and no CUDA toolkit needed to build; see docs/gpu.md).
#
#   1. the CUDA compiler: scripts/cuda-toolchain.sh (a system CUDA 13.0, else pinned PyPI wheels
#      installed once outside the work tree);
#   2. the loader shim: scripts/cuda-shim.py → $target/cuda-shim/lib (linked instead of the NVIDIA
#      libraries and copied beside the binary, so the binary starts without them and says what is
#      missing);
#   3. cargo build --release -p headstart --features cuda, kernels for CUDA_COMPUTE_CAP (default
#      90: H100/H200; 80 A100, 86 RTX 30xx, 89 L4/RTX 40xx, 100 B200, 120 RTX 50xx).
#
#   scripts/build-cuda.sh                     # the build above
#   scripts/build-cuda.sh test --release --features cuda -p headstart --test devices
#                                             # any cargo command, with the same environment
# CARGO_TARGET_DIR is honoured (CI points it at a folder that outlives the clone, so candle's
# kernels, most of the nvcc time, are compiled once per machine).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/cuda-toolchain.sh)"
target=${CARGO_TARGET_DIR:-target}
mkdir -p "$target/release"
target=$(cd "$target" && pwd)
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}

cudarc=$(cargo metadata --format-version 1 --locked --all-features 2>/dev/null | python3 -c '
import json, sys
m = json.load(sys.stdin)
print(next(p["manifest_path"] for p in m["packages"] if p["name"] == "cudarc").rsplit("/", 1)[0])')
libcudart=$(find "$CUDA_TOOLCHAIN_ROOT" -maxdepth 3 -name 'libcudart.so.13*' | sort | head -1)
[ -n "$libcudart" ] || { echo "build-cuda: no libcudart.so.13 under $CUDA_TOOLCHAIN_ROOT" >&2; exit 1; }
shim=$target/cuda-shim
python3 scripts/cuda-shim.py "$cudarc" "$libcudart" "$shim/lib" >&2
# Beside every binary cargo writes (RUNPATH $ORIGIN), before cargo runs any of them.
cp "$shim/lib/libheadstart_cuda_shim.so" "$target/release/"
# cudarc and candle-kernels look for -lcuda, -lcublas, ... under $CUDA_HOME/lib: the shim's scripts.
export CUDA_HOME=$shim
echo "build-cuda: CUDA $CUDA_TOOLCHAIN_VERSION ($NVCC), compute capability $CUDA_COMPUTE_CAP, target $target" >&2
start=$SECONDS
if [ $# -gt 0 ]; then
  cargo "$@"
  echo "build-cuda: cargo $* in $((SECONDS - start)) s" >&2
else
  cargo build --release --locked -p headstart --features cuda
  echo "build-cuda: $target/release/headstart (+ libheadstart_cuda_shim.so beside it) in $((SECONDS - start)) s" >&2
fi
