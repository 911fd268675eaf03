#!/usr/bin/env bash
# The main flow behind `just extract|train-head|predict|eval|demo`.
# Usage: scripts/flow.sh STEP [key=value ...]
#   keys: data backbone weights views seed cache head solver out images
# Defaults: data=data/flowers backbone=resnet18 views=5 seed=43 solver=sgd out=out,
#           cache=cache/<data name>-<backbone>, head=heads/<data name>-<backbone>.
set -euo pipefail
cd "$(dirname "$0")/.."
step=${1:?usage: scripts/flow.sh extract|train-head|predict|eval|demo [key=value ...]}
shift
data=data/flowers backbone=resnet18 weights="" views=5 seed=43 solver=sgd out=out cache="" head="" images=""
for kv in "$@"; do
  case "$kv" in
    data=*|backbone=*|weights=*|views=*|seed=*|cache=*|head=*|solver=*|out=*|images=*) declare "$kv" ;;
    *) echo "unknown setting '$kv' (expected key=value with key in: data backbone weights views seed cache head solver out images)" >&2; exit 2 ;;
  esac
done
name=$(basename "$data")
cache=${cache:-cache/$name-$backbone}
head=${head:-heads/$name-$backbone}
images=${images:-$data}
# Where cargo put the binary (CARGO_TARGET_DIR is honoured, as cargo does).
bin=${CARGO_TARGET_DIR:-target}/release/headstart
wflag=(); [ -n "$weights" ] && wflag=(--weights "$weights")

sample() { find "$1" -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) | sort | awk 'NR % 40 == 1' | head -16; }

extract() {
  if [ ! -d "$data" ]; then
    if [ "$data" = data/flowers ]; then
      if ! $bin fetch-flowers --out "$data"; then
        echo "fix: offline, point the recipe at an ImageFolder on disk (and weights), e.g." >&2
        echo "       just $step data=../shared/data/flowers backbone=efficientnet-lite0 weights=../shared/weights/efficientnet-lite0/efficientnet-lite0-57934424.pth" >&2
        exit 1
      fi
    else echo "data=$data: no such folder (an ImageFolder: one sub-folder of photos per class)" >&2; exit 1; fi
  fi
  $bin extract "$data" --cache "$cache" --backbone "$backbone" "${wflag[@]}" --views "$views" --seed "$seed"
}
train() { $bin train-head --cache "$cache" --out "$head" --solver "$solver" --seed "$seed"; }
evaluate() { $bin eval --head "$head" "${wflag[@]}" "$data"; }
predict() {
  mkdir -p "$out"
  mapfile -t files < <(sample "$images")
  $bin predict --head "$head" "${wflag[@]}" --grid "$out/predictions.png" "${files[@]}"
}

case "$step" in
  extract) extract ;;
  train-head) train ;;
  eval) evaluate ;;
  predict) predict ;;
  demo)
    extract
    train
    echo "eval over the whole folder (training photos included; the held-out accuracy is in $head/report.txt):"
    evaluate
    mkdir -p "$out"
    $bin show "$data" --grid "$out/dataset.png"
    predict
    echo
    echo "curves: $head/curves.png   report: $head/report.txt   grids: $out/dataset.png $out/predictions.png"
    ;;
  *) echo "unknown step '$step'" >&2; exit 2 ;;
esac
