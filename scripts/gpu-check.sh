#!/usr/bin/env bash
# The GPU check (docs/gpu.md): run on a machine with an NVIDIA GPU over the pack made by
# scripts/gpu-pack.sh; writes gpu-check.json, gpu-check.md and gpu-check.log into OUT_DIR.
#
#   bash scripts/gpu-check.sh [PACK_DIR [OUT_DIR]]     (defaults: .gpu and $OUT, else gpu-check-out)
#   GPU_CHECK_ARGS="--cpu-only" bash scripts/gpu-check.sh   # try it without a GPU
#
# Needs: python3 with torch, torchvision, transformers, safetensors, numpy (the GPU machine's);
# the NVIDIA driver; CUDA 13's cuBLAS, cuRAND and runtime libraries (a toolkit's lib64 or the
# nvidia-* wheels PyTorch brings; found below). Ends within ~6 minutes on an H200.
set -uo pipefail
cd "$(dirname "$0")/.."
pack=${1:-.gpu}
out=${2:-${OUT:-gpu-check-out}}
mkdir -p "$out"
exec > >(tee "$out/gpu-check.log") 2>&1
echo "gpu-check: $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(hostname), pack $pack, report → $out"

# The binary: headstart.xz (packed) or headstart, with the shim beside it.
bindir=${GPU_CHECK_BIN_DIR:-/tmp/headstart-gpu-bin}
mkdir -p "$bindir"
if [ -f "$pack/bin/headstart.xz" ]; then
  xz -dc "$pack/bin/headstart.xz" > "$bindir/headstart"
else
  cp "$pack/bin/headstart" "$bindir/headstart"
fi
cp "$pack/bin/libheadstart_cuda_shim.so" "$bindir/"
chmod +x "$bindir/headstart"

# CUDA libraries: a toolkit's, else the wheels of the python that has torch.
need=(libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcudart.so.13 libnvrtc.so.13)
dirs=()
for d in ${CUDA_HOME:+$CUDA_HOME/lib64} /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
         $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null | tr ' ' '\n' | sed 's|$|/nvidia/cu13/lib|') \
         $(ls -d $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null)/nvidia/*/lib 2>/dev/null); do
  [ -d "$d" ] && dirs+=("$d")
done
ldp=""
for lib in "${need[@]}"; do
  found=""
  for d in "${dirs[@]}"; do
    if [ -e "$d/$lib" ]; then found=$d; break; fi
  done
  if [ -n "$found" ]; then
    case ":$ldp:" in *":$found:"*) ;; *) ldp=${ldp:+$ldp:}$found ;; esac
    echo "  $lib: $found"
  else
    echo "  $lib: not found (searched ${dirs[*]:-nothing})"
  fi
done
if ! ldconfig -p 2>/dev/null | grep -q 'libcuda.so.1 '; then
  for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64; do
    if [ -e "$d/libcuda.so.1" ]; then ldp=${ldp:+$ldp:}$d; echo "  libcuda.so.1: $d"; break; fi
  done
fi
export LD_LIBRARY_PATH=${ldp}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
if ! "$bindir/headstart" --version >/dev/null 2>&1; then
  echo "gpu-check: the binary does not start here:"; "$bindir/headstart" --version; ldd "$bindir/headstart"
fi
export PYTHONUNBUFFERED=1
nproc_=$(nproc 2>/dev/null || echo 1)
echo "  cores: $nproc_; LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

timeout "${GPU_CHECK_TIMEOUT:-345}" python3 scripts/gpu_check.py --bin "$bindir/headstart" --pack "$pack" --out "$out" ${GPU_CHECK_ARGS:-}
rc=$?
[ $rc -eq 124 ] && echo "gpu-check: stopped at the ${GPU_CHECK_TIMEOUT:-345} s limit; the report holds the steps that finished"
echo "gpu-check: exit $rc; report: $out/gpu-check.md"
exit $rc
