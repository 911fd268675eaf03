#!/usr/bin/env bash
# Packs what the GPU check needs into .gpu/ (ignored by git; carried to the GPU machine):
#   .gpu/bin/headstart.xz + libheadstart_cuda_shim.so   the CUDA build (just build-cuda), xz'd
#   .gpu/photos/<class>/*.jpg                            PHOTOS photos per class (default 40: 200)
#   .gpu/weights/efficientnet-lite0-57934424.pth         the real Lite0 weights
#   .gpu/fixtures/{dinov2,clip}/{config.json,model.safetensors}  the shared fixture configs
# Usage: scripts/gpu-pack.sh [SHARED_DIR]   (default ../shared). Size: about 45 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${1:-../shared}
per_class=${PHOTOS:-40}
target=${CARGO_TARGET_DIR:-target}
bin=$target/release/headstart
shim=$target/release/libheadstart_cuda_shim.so
[ -x "$bin" ] && [ -f "$shim" ] || { echo "gpu-pack: no CUDA build at $bin (+ $shim): run \`just build-cuda\` first" >&2; exit 1; }
"$bin" devices --json | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["build"]["cuda"] else 1)' \
  || { echo "gpu-pack: $bin is a CPU-only build: run \`just build-cuda\`" >&2; exit 1; }
rm -rf .gpu
mkdir -p .gpu/bin .gpu/photos .gpu/weights .gpu/fixtures
strip -o .gpu/bin/headstart "$bin"
xz -T0 -6 .gpu/bin/headstart
cp "$shim" .gpu/bin/
for cls in "$shared"/data/flowers/*/; do
  name=$(basename "$cls")
  mkdir -p ".gpu/photos/$name"
  find "$cls" -maxdepth 1 -type f -name '*.jpg' | sort | head -n "$per_class" | xargs -I{} cp {} ".gpu/photos/$name/"
done
cp "$shared"/weights/efficientnet-lite0/efficientnet-lite0-57934424.pth .gpu/weights/
for m in dinov2 clip; do
  mkdir -p ".gpu/fixtures/$m"
  cp "$shared/fixtures/$m/config.json" "$shared/fixtures/$m/model.safetensors" ".gpu/fixtures/$m/"
done
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
echo "gpu-pack: .gpu/ $(du -sh .gpu | cut -f1) ($(find .gpu/photos -name '*.jpg' | wc -l) photos); carry it: run(command=\"bash scripts/gpu-check.sh\", carry=[\".gpu\"])" >&2
