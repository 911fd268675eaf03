#!/usr/bin/env bash
# Finds or installs the CUDA compiler the GPU build needs, and prints `export` lines for it.
#
#   eval "$(scripts/cuda-toolchain.sh)"      # NVCC, CUDA_TOOLCHAIN_ROOT, CUDA_TOOLCHAIN_VERSION
#
# Order: $NVCC if set; else a system toolkit (nvcc on PATH, $CUDA_HOME/bin/nvcc, /usr/local/cuda)
# whose version is 13.0 (see below); else a pinned toolchain from PyPI installed once into
#   ${HEADSTART_CUDA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/headstart}/cuda-13.0.88
# (outside the work tree; reused on the next run, checked by a stamp file).
#
# Why these versions: the GPU machines run driver 580, which is CUDA 13.0. PTX from a newer nvcc
# (.version 9.1+) does not load on it, so every wheel is pinned to CUDA 13.0 update 1, their own
# dependencies included (`pip install nvidia-cuda-nvcc==13.0.88` alone pulls nvvm and crt 13.5,
# whose PTX the 13.0 ptxas rejects). Only the compiler, its headers and the runtime headers are
# needed: the libraries (cuBLAS, cuRAND, NVRTC, the runtime, the driver) are linked through
# headstart's loader shim (scripts/cuda-shim.sh) and found at run time on the GPU machine.
# HEADSTART_CUDA_ACCEPT_ANY=1 accepts a system toolkit of another version.
set -euo pipefail

want=13.0
pins=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
)

nvcc_version() { "$1" --version 2>/dev/null | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p' | head -1; }

emit() { # nvcc-path
  local nvcc=$1 root
  root=$(cd "$(dirname "$nvcc")/.." && pwd)
  echo "export NVCC='$nvcc'"
  echo "export CUDA_TOOLCHAIN_ROOT='$root'"
  echo "export CUDA_TOOLCHAIN_VERSION='$(nvcc_version "$nvcc")'"
  echo "export PATH='$root/bin':\"\$PATH\""
}

suitable() { # nvcc-path
  local v
  [ -x "$1" ] || return 1
  v=$(nvcc_version "$1")
  [ -n "$v" ] || return 1
  if [ "$v" = "$want" ] || [ "${HEADSTART_CUDA_ACCEPT_ANY:-0}" = 1 ]; then return 0; fi
  echo "cuda-toolchain: $1 is CUDA $v, not $want (the GPU machines' driver 580 loads PTX up to 13.0); not used (HEADSTART_CUDA_ACCEPT_ANY=1 to use it anyway)" >&2
  return 1
}

if [ -n "${NVCC:-}" ]; then
  suitable "$NVCC" || { echo "cuda-toolchain: NVCC=$NVCC is not a usable nvcc $want" >&2; exit 1; }
  emit "$NVCC"; exit 0
fi
for c in "$(command -v nvcc 2>/dev/null || true)" "${CUDA_HOME:+$CUDA_HOME/bin/nvcc}" /usr/local/cuda/bin/nvcc; do
  [ -n "$c" ] || continue
  if suitable "$c"; then echo "cuda-toolchain: using the system toolkit at $c" >&2; emit "$c"; exit 0; fi
done

cache=${HEADSTART_CUDA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/headstart}
dir=$cache/cuda-13.0.88
stamp=$dir/.installed
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "${pins[*]}" ]; then
  py=${PYTHON:-python3}
  command -v "$py" >/dev/null || { echo "cuda-toolchain: needs python3 with pip to install the CUDA compiler from PyPI (or install CUDA $want and put nvcc on PATH)" >&2; exit 1; }
  echo "cuda-toolchain: installing CUDA $want's compiler from PyPI into $dir (once; about 150 MB)" >&2
  rm -rf "$dir.partial"
  mkdir -p "$cache"
  "$py" -m pip install --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --target "$dir.partial" "${pins[@]}" >&2
  rm -rf "$dir"
  mv "$dir.partial" "$dir"
  echo "${pins[*]}" >"$stamp"
fi
nvcc=$dir/nvidia/cu13/bin/nvcc
suitable "$nvcc" || { echo "cuda-toolchain: $nvcc from the pinned wheels does not run; remove $dir and retry" >&2; exit 1; }
emit "$nvcc"
