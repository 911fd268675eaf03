#!/usr/bin/env bash
# Scale benchmarks → docs/benchmarks-scale.md (part of `just bench`; alone: `just bench-scale`).
#   1. Writer: a synthetic 1,000,000-image cache through the writer API (no backbone): total bytes
#      written, and the time to commit the first and the last 10 shards.
#   2. Training memory: train-head (SGD) peak RSS on synthetic 20,000-row and 2,000,000-row caches
#      (512-d f32, 5 views + eval view per image), with the default --memory-budget (the large one
#      is then streamed from its shards), and the large one forced into memory for comparison.
# Environment: IMAGES (writer benchmark size, default 1000000), EPOCHS (default 2), BIG_ROWS
# (default 2000000). Needs ~8 GB of free disk in $TMPDIR and a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
images=${IMAGES:-1000000}
epochs=${EPOCHS:-2}
big_rows=${BIG_ROWS:-2000000}
target=${CARGO_TARGET_DIR:-target}
bin=$target/release/headstart
cargo build --release -q -p headstart
cargo build --release -q -p headstart-cache --example synthetic_cache
syn=$target/release/examples/synthetic_cache
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
say() { echo "bench-scale: $*" >&2; }

say "writer: $images images"
"$syn" "$work/writer" --images "$images" --views 0 --dim 512 --dtype f16 > "$work/writer.json"
rm -rf "$work/writer"

train() { # name cache extra-args…
  local name=$1 cache=$2; shift 2
  say "train-head $name"
  /usr/bin/time -f "%e %M" -o "$work/time" "$bin" train-head --cache "$cache" --out "$work/head-$name" \
    --epochs "$epochs" --json "$@" > "$work/out" 2> "$work/err" || { cat "$work/err" >&2; exit 1; }
  read -r s kb < "$work/time"
  python3 -c "import json,sys; d=json.load(open('$work/out')); r=json.load(open('$work/head-$name/run.json')); print(json.dumps({'name':'$name','seconds':$s,'rss_kb':$kb,'val_accuracy':d.get('val_accuracy'),'train_rows':r['split']['train_rows'],'streamed':r.get('rows_streamed')}))" >> "$work/train.jsonl"
}
small_images=$(( 20000 / 6 + 1 ))
big_images=$(( big_rows / 6 + 1 ))
say "synthetic caches: $small_images and $big_images images × 6 rows"
"$syn" "$work/small" --images "$small_images" --views 5 --dim 512 --dtype f32 > "$work/small.json"
"$syn" "$work/big" --images "$big_images" --views 5 --dim 512 --dtype f32 > "$work/big.json"
train small "$work/small"
train big "$work/big"
train big-in-memory "$work/big" --memory-budget 65536

python3 - "$work" "$epochs" > docs/benchmarks-scale.md <<'PY'
import json, sys, datetime, platform, os
work, epochs = sys.argv[1], sys.argv[2]
w = json.load(open(f"{work}/writer.json"))
small = json.load(open(f"{work}/small.json")); big = json.load(open(f"{work}/big.json"))
t = {d["name"]: d for d in map(json.loads, open(f"{work}/train.jsonl"))}
mb = lambda b: f"{b / 1e6:,.0f} MB"
gb = lambda b: f"{b / 1e9:,.2f} GB"
print("# Scale benchmarks\n")
print(f"Measured {datetime.date.today()} on {platform.machine()}, {os.cpu_count()} cores, by "
      "`scripts/bench-scale.sh` (part of `just bench`). One run each; see docs/scale-out.md.\n")
print("## Writing a 1,000,000-image cache (writer API, no backbone)\n")
print(f"{w['images']:,} images × 1 row of {w['dim']} {w['dtype']} features, shard size 4096 → "
      f"{w['shards']} shards, in {w['seconds']:.1f} s.\n")
print("| | |\n| --- | --- |")
print(f"| bytes written (all files, temp files included) | {gb(w['bytes_written'])} |")
print(f"| of which shards / journal / manifest.json (final sizes) | {gb(w['shard_bytes'])} / {mb(w['journal_bytes'])} / {mb(w['manifest_bytes'])} |")
print(f"| commit, mean of the first 10 shards | {w['first10_commit_ms']:.1f} ms |")
print(f"| commit, mean of the last 10 shards | {w['last10_commit_ms']:.1f} ms |")
print(f"| last / first | **{w['last_over_first']:.2f}** (target ≤ 2) |")
print(f"| writing manifest.json at the end | {w['finish_ms'] / 1e3:.1f} s |")
print(f"| format 1 (whole manifest rewritten per shard), manifest bytes alone, estimated | {gb(w['v1_manifest_rewrite_bytes_estimate'])} |")
print("\n## Training memory (SGD, 512-d f32 rows, eval view + 5 views per image)\n")
print(f"{epochs} epochs each; peak RSS from `/usr/bin/time -f %M`.\n")
print("| cache | rows (train) | rows read from | peak RSS | wall time | val accuracy |")
print("| --- | --- | --- | --- | --- | --- |")
for name, c in [("small", small), ("big", big), ("big-in-memory", big)]:
    d = t[name]
    where = "shards (streamed)" if d["streamed"] else "memory"
    label = f"{c['rows']:,} rows" + (" (--memory-budget 65536)" if name == "big-in-memory" else "")
    print(f"| {label} | {d['train_rows']:,} | {where} | {d['rss_kb'] / 1024:,.0f} MiB | {d['seconds']:.1f} s | {d['val_accuracy']:.3f} |")
growth = t["big"]["rss_kb"] / t["small"]["rss_kb"] - 1
print(f"\nPeak RSS from {small['rows']:,} to {big['rows']:,} rows with the default budget: "
      f"**{growth * 100:+.1f} %** (target < 10 %).")
PY
say "wrote docs/benchmarks-scale.md"
