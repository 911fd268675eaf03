#!/usr/bin/env bash
# Sweep benchmarks → docs/benchmarks-sweep.md (part of `just bench`; alone: `just bench-sweep`).
#   scripts/bench-sweep.sh [DATA] [LITE0_WEIGHTS]
#   1. A sweep of 24 configurations × 3 seeds × 5 folds (360 jobs) on a real Lite0 cache of the
#      600 shared photos with 5 views (3,600 rows) and on a synthetic 100,000-row cache (512-d):
#      wall time, configurations per second, peak RSS; once with --threads 1, once on all cores.
#   2. On the Lite0 cache: the sweep's best against the default recipe, on the validation side,
#      with and without test-time augmentation on the cached views (--val-tta) — the figures the
#      README quotes.
# Environment: REPS (default 3; medians), SYN_ROWS (default 100000). Needs a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data/flowers}
lite0=${2:-../shared/weights/efficientnet-lite0/efficientnet-lite0-57934424.pth}
reps=${REPS:-3}
syn_rows=${SYN_ROWS:-100000}
target=${CARGO_TARGET_DIR:-target}
bin=$target/release/headstart
cargo build --release -q -p headstart
cargo build --release -q -p headstart-cache --example synthetic_cache
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
say() { echo "bench-sweep: $*" >&2; }

say "Lite0 cache of $data, 5 views"
"$bin" extract "$data" --cache "$work/lite0" --backbone efficientnet-lite0 --weights "$lite0" \
  --views 5 --quiet > /dev/null
images=$(( syn_rows / 6 ))
say "synthetic cache: $images images × 6 rows, 512-d"
"$target/release/examples/synthetic_cache" "$work/syn" --images "$images" --views 5 --dim 512 \
  --dtype f32 --seed 11 > /dev/null

# 24 configurations: lr × epochs × weight decay × class weight.
grid_lite0=(--lr 0.0003,0.001,0.003 --epochs 10,20 --weight-decay 0,0.0001 --class-weight none,balanced)
grid_syn=(--lr 0.001,0.01,0.1 --epochs 1,3 --weight-decay 0,0.0001 --class-weight none,balanced)
common=(--seeds 1,2,3 --folds 5 --no-refit --json --quiet)

sweep() { # name cache threads grid…
  local name=$1 cache=$2 threads=$3; shift 3
  for r in $(seq "$reps"); do
    say "sweep $name --threads $threads (run $r/$reps)"
    rm -rf "$work/sweep"
    /usr/bin/time -f "%e %M" -o "$work/time" "$bin" sweep --cache "$cache" --out "$work/sweep" \
      --threads "$threads" "${common[@]}" "$@" > "$work/board.json"
    read -r s kb < "$work/time"
    python3 -c "import json; b=json.load(open('$work/board.json')); print(json.dumps({'name':'$name','threads':$threads,'seconds':$s,'rss_kb':$kb,'configurations':len(b['configurations']),'jobs':len(b['configurations'])*len(b['seeds'])*b['folds'],'images':b['images']}))" >> "$work/sweeps.jsonl"
  done
}
cores=$(nproc)
sweep lite0 "$work/lite0" 1 "${grid_lite0[@]}"
sweep lite0 "$work/lite0" "$cores" "${grid_lite0[@]}"
sweep synthetic "$work/syn" "$cores" "${grid_syn[@]}"
rows_lite0=$(python3 -c "import json; print(json.load(open('$work/lite0/manifest.json'))['rows'])")
rows_syn=$(python3 -c "import json; print(json.load(open('$work/syn/manifest.json'))['rows'])")

# 2. Best vs default on the Lite0 cache, with TTA on the cached views.
say "sweep with refit and --val-tta on the Lite0 cache"
"$bin" sweep --cache "$work/lite0" --out "$work/best-sweep" "${grid_lite0[@]}" --seeds 1,2,3 \
  --folds 5 --val-tta --json --quiet > "$work/best-board.json"
"$bin" train-head --cache "$work/lite0" --out "$work/default" --val-tta --json > "$work/default.json" 2> /dev/null
"$bin" compare "$work/default" "$work/best-sweep/best" --json > "$work/compare.json"

python3 - "$work" "$rows_lite0" "$rows_syn" "$reps" > docs/benchmarks-sweep.md <<'PY'
import json, sys, datetime, os, statistics
work, rows_lite0, rows_syn, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
runs = [json.loads(l) for l in open(f"{work}/sweeps.jsonl")]
print("# Sweep benchmarks\n")
print(f"Measured {datetime.date.today()} on {os.cpu_count()} cores by `scripts/bench-sweep.sh` "
      f"(part of `just bench`); medians of {reps} runs, min–max in brackets. Peak RSS from "
      "`/usr/bin/time -f %M`.\n")
print("Grid: 24 configurations (3 learning rates × 2 epoch counts × 2 weight decays × 2 class "
      "weightings) × 3 seeds × 5 folds = 360 jobs, SGD.\n")
print("| cache | rows | --threads | wall time | configurations / s | jobs / s | peak RSS |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for name, threads in sorted({(r["name"], r["threads"]) for r in runs}, key=lambda k: (k[0] != "lite0", k[1])):
    rs = [r for r in runs if r["name"] == name and r["threads"] == threads]
    s = [r["seconds"] for r in rs]
    med = statistics.median(s)
    rss = statistics.median(r["rss_kb"] for r in rs) / 1024
    rows = rows_lite0 if name == "lite0" else rows_syn
    label = "Lite0, 600 photos, 5 views" if name == "lite0" else "synthetic 512-d"
    print(f"| {label} | {rows:,} | {threads} | {med:.1f} s [{min(s):.1f}–{max(s):.1f}] | "
          f"{rs[0]['configurations'] / med:.2f} | {rs[0]['jobs'] / med:.1f} | {rss:,.0f} MiB |")
b = json.load(open(f"{work}/best-board.json"))
d = json.load(open(f"{work}/default.json"))
c = json.load(open(f"{work}/compare.json"))
best = b["configurations"][b["best"]]
label = ", ".join(f"{k}={v}" for k, v in best["settings"].items())
h0, h1 = c["heads"]
print("\n## The sweep's best against the default recipe (Lite0, 600 photos, 5 views)\n")
print(f"Best of the grid by 5-fold cross-validated accuracy on the training side: `{label}` "
      f"(CV accuracy {best['accuracy']['mean']:.4f} ± {best['accuracy']['std']:.4f}). Both heads "
      f"scored on the same {h0['n']} validation images:\n")
print("| head | val accuracy (95 % CI) | with TTA over the 6 cached views | macro-F1 (95 % CI) |")
print("| --- | --- | --- | --- |")
for name, h in [("default (SGD lr 0.001, 20 epochs)", h0), ("sweep's best, refitted", h1)]:
    a, f = h["accuracy"], h["macro_f1"]
    tta = h.get("accuracy_tta", {}).get("value")
    print(f"| {name} | {a['value']:.4f} [{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}] | "
          f"{'-' if tta is None else f'{tta:.4f}'} | {f['value']:.4f} [{f['ci95'][0]:.3f}, {f['ci95'][1]:.3f}] |")
p = c.get("mcnemar_p")
if p is not None:
    pr = c["pairs"][0]
    print(f"\nMcNemar (exact): only the default right on {pr['only_a_right']}, only the best on "
          f"{pr['only_b_right']}: p = {p:.3f}.")
PY
say "wrote docs/benchmarks-sweep.md"
