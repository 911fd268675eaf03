#!/usr/bin/env bash
# Benchmarks → docs/benchmarks.md.
#   scripts/bench.sh [DATA] [LITE0_WEIGHTS] [RESNET18_WEIGHTS]
# Environment: REPS (timed repetitions per figure, default 3; medians with min and max),
# PYTHON (a python with torch + torchvision: bench/reference.py then runs in the same session, so
# the ratios compare one machine in one state; without it the last docs/benchmarks-reference.json
# is used if there is one).
#
# Measures: forward images/s at batch 1, 8, 32 for ResNet-18 and EfficientNet-Lite0; extract end
# to end (eval view only, and 5 views) with peak RSS; train-head (real and synthetic caches);
# predict cold start; the tutorial-equivalent cost. Run it on a quiet machine: on 2 cores a second
# process halves every figure.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data/flowers}
lite0=${2:-../shared/weights/efficientnet-lite0/efficientnet-lite0-57934424.pth}
# Speed does not depend on the weights' values: the fixture's random ResNet-18 times like the real one.
r18=${3:-../shared/fixtures/resnet18/weights.safetensors}
reps=${REPS:-3}
target=${CARGO_TARGET_DIR:-target}
bin=$target/release/headstart
py=${PYTHON:-python3}

cargo build --release -q -p headstart
cargo build --release -q -p headstart-head --example train_speed
cargo build --release -q -p headstart-backbone --example forward_timing --example decode_timing
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
say() { echo "bench: $*" >&2; }

# 1. PyTorch reference first (it needs the machine to itself too).
ref=""
if "$py" -c 'import torch, torchvision' >/dev/null 2>&1; then
  say "PyTorch reference ($py)"
  BENCH_REFERENCE_VIA="just bench (PYTHON=$py)" "$py" bench/reference.py --data "$data" \
    --reps "$reps" --json docs/benchmarks-reference.json --out docs/benchmarks-reference.md >/dev/null
  ref=docs/benchmarks-reference.json
elif [ -f docs/benchmarks-reference.json ]; then
  say "no torch in $py: using the earlier docs/benchmarks-reference.json"
  ref=docs/benchmarks-reference.json
fi

# 2. Forward only.
for arch in resnet18 efficientnet-lite0; do
  w=$r18; [ "$arch" = efficientnet-lite0 ] && w=$lite0
  for b in 1 8 32; do
    say "forward $arch batch $b"
    "$target/release/examples/forward_timing" "$w" "$arch" "$b" --reps "$reps" --json >> "$work/forward.jsonl"
  done
done
# Transformers at batch 32, random weights of the hub models' sizes (no real weights offline).
for arch in dinov2-small clip-vit-b32; do
  say "forward $arch batch 32"
  "$target/release/examples/forward_timing" random "$arch" 32 --reps "$reps" --json >> "$work/forward.jsonl"
done
"$target/release/examples/decode_timing" "$data" > "$work/decode.txt"

# 3. Extract end to end, fresh cache each time; images/s from the run's own report, peak RSS.
for arch in resnet18 efficientnet-lite0; do
  w=$r18; [ "$arch" = efficientnet-lite0 ] && w=$lite0
  for views in 0 5; do
    for i in $(seq "$reps"); do
      say "extract $arch views $views ($i/$reps)"
      rm -rf "$work/cache-$arch-$views"
      /usr/bin/time -f "%M" -o "$work/rss" "$bin" extract "$data" --cache "$work/cache-$arch-$views" \
        --backbone "$arch" --weights "$w" --views "$views" --json --quiet > "$work/out"
      "$py" -c "import json,sys; d=json.load(open('$work/out')); print(json.dumps({'arch':'$arch','views':$views,'ips':d['images_per_second'],'seconds':d['seconds'],'images':d['images_ok'],'rss_kb':int(open('$work/rss').read().split()[-1])}))" >> "$work/extract.jsonl"
    done
  done
done

# 4. The rest, on the Lite0 5-view cache (real weights, so accuracies mean something).
cache=$work/cache-efficientnet-lite0-5
tv() { /usr/bin/time -f "%e %M" "$@" 2> "$work/time" > "$work/out"; tail -n1 "$work/time"; }
read -r re_s _ < <(tv "$bin" extract "$data" --cache "$cache" --backbone efficientnet-lite0 --weights "$lite0" --views 5 --json --quiet)
read -r tr_s tr_kb < <(tv "$bin" train-head --cache "$cache" --out "$work/head" --json)
acc=$("$py" -c "import json;print(round(json.load(open('$work/out'))['val_accuracy'],3))")
read -r lb_s _ < <(tv "$bin" train-head --cache "$cache" --out "$work/head-lbfgs" --solver lbfgs --json)
lacc=$("$py" -c "import json;print(round(json.load(open('$work/out'))['val_accuracy'],3))")
one=$(find "$data" -type f -iname '*.jpg' | sort | head -1)
read -r pr_s pr_kb < <(tv "$bin" predict --head "$work/head" --weights "$lite0" "$one")
syn=$("$target/release/examples/train_speed" 20000 1280 5)

"$py" - "$work" "$ref" "$data" "$reps" "$re_s" "$tr_s" "$tr_kb" "$acc" "$lb_s" "$lacc" "$pr_s" "$pr_kb" "$syn" <<'PY' > docs/benchmarks.md
import json, os, statistics, sys, datetime, platform
work, ref, data, reps, re_s, tr_s, tr_kb, acc, lb_s, lacc, pr_s, pr_kb, syn = sys.argv[1:]
fw = [json.loads(l) for l in open(f"{work}/forward.jsonl")]
ex = [json.loads(l) for l in open(f"{work}/extract.jsonl")]
R = json.load(open(ref)) if ref else {}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
def rng(med, lo, hi): return f"{med:.1f} ({lo:.1f}–{hi:.1f})"
def refcell(key):
    r = R.get(key)
    return (rng(r["median"], r["min"], r["max"]), r["median"]) if r else ("–", None)
out = []
p = out.append
p("# Benchmarks\n")
p(f"Measured by `just bench` (scripts/bench.sh) on {os.cpu_count()} cores ({cpu}), "
  f"{datetime.date.today()}, release build, f32, nothing else running. Figures are images/s: "
  f"median of {reps} runs, (min–max). ResNet-18 runs the fixture's random weights (speed does not "
  f"depend on weight values); EfficientNet-Lite0 its real weights.")
if R:
    m = R.get("meta", {})
    p(f"PyTorch columns: `bench/reference.py` ({'this run' if os.environ.get('PYTHON') else 'docs/benchmarks-reference.json'}, "
      f"{m.get('date', '?')}), torch {m.get('torch', '?')}, {m.get('threads', '?')} threads, same machine; "
      f"full table in [benchmarks-reference.md](benchmarks-reference.md).")
p("\n## Forward pass (batch → pooled features)\n")
p("| model | batch | headstart | PyTorch channels_last | PyTorch NCHW | headstart ÷ PyTorch channels_last |")
p("| --- | --- | --- | --- | --- | --- |")
fwd = {}
for r in fw:
    cl, clm = refcell(f"{r['arch']}/channels_last/batch{r['batch']}")
    nc, _ = refcell(f"{r['arch']}/nchw/batch{r['batch']}")
    _, ncm = refcell(f"{r['arch']}/nchw/batch{r['batch']}")
    # Transformers have only an NCHW row in the reference (channels_last means nothing to a ViT).
    ratio = f"**{r['median'] / clm:.2f}×**" if clm else (f"{r['median'] / ncm:.2f}× (vs NCHW)" if ncm else "–")
    fwd[(r["arch"], r["batch"])] = r["median"]
    p(f"| {r['arch']} | {r['batch']} | {rng(r['median'], r['min'], r['max'])} | {cl} | {nc} | {ratio} |")
p("\n## Extract, end to end (decode + augment + forward + cache writes)\n")
p(f"`headstart extract` on the {ex[0]['images']} photos of `{data}`, fresh cache each run, batch 32. "
  "Images/s counts photos (each photo is 1 + views rows).\n")
p("| model | views | images/s | rows/s | peak RSS | ÷ forward-only rate (batch 32, rows/s) |")
p("| --- | --- | --- | --- | --- | --- |")
for arch in ("resnet18", "efficientnet-lite0"):
    for views in (0, 5):
        rs = [r for r in ex if r["arch"] == arch and r["views"] == views]
        if not rs: continue
        ips = [r["ips"] for r in rs]
        med = statistics.median(ips)
        rows = med * (views + 1)
        rss = max(r["rss_kb"] for r in rs) // 1024
        p(f"| {arch} | {views} | {rng(med, min(ips), max(ips))} | {rows:.1f} | {rss} MiB | "
          f"{rows / fwd[(arch, 32)]:.2f} |")
for w in (0, 1):
    for f in ("channels_last", "nchw"):
        k = f"e2e/resnet18/{f}/workers{w}"
        if k in R:
            r = R[k]
            p(f"| PyTorch resnet18, {f}, DataLoader num_workers={w} | 0 | {rng(r['median'], r['min'], r['max'])} | | | |")
p(f"\nDecoding + eval transform on one thread: {open(f'{work}/decode.txt').read().strip()}\n")
p("## Training and prediction (EfficientNet-Lite0 cache, 600 photos × 6 views)\n")
p("| what | result |")
p("| --- | --- |")
p(f"| rerun of extract (everything cached) | {re_s} s |")
p(f"| train-head, SGD 20 epochs (lr 0.001, momentum 0.9, batch 32) | {tr_s} s, val accuracy {acc}, peak RSS {int(tr_kb) // 1024} MiB |")
p(f"| train-head, L-BFGS with L2 sweep | {lb_s} s, val accuracy {lacc} |")
p(f"| train-head on a synthetic cache | {syn} |")
p(f"| predict cold start, one image (load weights + head, one forward) | {pr_s} s, peak RSS {int(pr_kb) // 1024} MiB |")
lite = [r for r in ex if r["arch"] == "efficientnet-lite0" and r["views"] == 5]
if lite:
    n = lite[0]["images"]
    tut = 20 * n / fwd[("efficientnet-lite0", 32)]
    ours = statistics.median(r["seconds"] for r in lite) + float(tr_s)
    p(f"| tutorial-equivalent (backbone recomputed on 20 epochs × {n} images) | ≈ {tut:.1f} s of forward passes |")
    p(f"| headstart extract (5 views) + train-head | {ours:.1f} s, **≈ {tut / ours:.1f}× faster** |")
print("\n".join(out))
PY
cat docs/benchmarks.md

# 5. Scale: the 1M-image writer and train-head memory at 20k vs 2M rows → docs/benchmarks-scale.md
scripts/bench-scale.sh

# 6. Sweeps: 24 configurations × 3 seeds × 5 folds on the Lite0 cache and a 100k-row synthetic one
# → docs/benchmarks-sweep.md
scripts/bench-sweep.sh "$data" "$lite0"
