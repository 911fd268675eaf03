# headstart recipes. Settings are key=value words after the recipe name, e.g.
#   just demo data=../shared/data/flowers backbone=efficientnet-lite0 weights=path/to/lite0.pth
# keys: data backbone weights views seed cache head solver out images (see scripts/flow.sh).

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# Build the release binary (CPU). For the GPU build: just build-cuda.
build:
    cargo build --release -p headstart

# Build target/release/headstart with CUDA (no GPU or toolkit needed here: a pinned nvcc 13.0 comes
# from PyPI into ~/.cache/headstart; CUDA_COMPUTE_CAP=90 by default). See docs/gpu.md.
build-cuda *cargo_args:
    scripts/build-cuda.sh {{cargo_args}}

# Put `headstart` on PATH (~/.cargo/bin), CPU build.
install:
    cargo install --locked --path crates/cli

# Run the test suite (the command CI runs). Release profile: it reuses what `just build` built.
# A python with numpy + safetensors (installed once by scripts/python-env.sh) runs the test that
# reads a cache from Python; offline without one, that test is skipped and this says so.
test:
    #!/usr/bin/env bash
    set -euo pipefail
    if py=$(scripts/python-env.sh); then
        export HEADSTART_PYTHON=$py
    else
        echo "note: no python with numpy and safetensors: the Python-reader test is SKIPPED" >&2
        export HEADSTART_SKIP_PYTHON=1
    fi
    cargo test --workspace --release

# The CUDA build's checks that need no GPU (what CI runs): build, clippy, the devices tests.
test-cuda:
    scripts/build-cuda.sh
    scripts/build-cuda.sh clippy --release --locked --features cuda -p headstart-backbone -p headstart --all-targets -- -D warnings
    scripts/build-cuda.sh test --release --locked --features cuda -p headstart --test devices

# Pack the CUDA build, 200 sample photos, the Lite0 weights and the fixture configs into .gpu/ for
# the GPU check (run `just build-cuda` first).
gpu-pack *args:
    scripts/gpu-pack.sh {{args}}

# On a machine with an NVIDIA GPU: the GPU check over .gpu/ (features vs CPU and PyTorch, extract,
# train-head, predict, throughput) → gpu-check-out/ (or $OUT). docs/gpu.md.
gpu-check *args:
    scripts/gpu-check.sh {{args}}

# Format and lint checks, as in CI.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Images → feature cache (resumable: rerun after a crash or after adding images).
extract *settings: build
    scripts/flow.sh extract {{settings}}

# Feature cache → linear head, curves and report.
train-head *settings: build
    scripts/flow.sh train-head {{settings}}

# Head + backbone on a sample of photos, with a prediction grid in out/.
predict *settings: build
    scripts/flow.sh predict {{settings}}

# Score the head on a labelled folder.
eval *settings: build
    scripts/flow.sh eval {{settings}}

# The whole flow: (download the flowers if missing) → extract → train-head → eval → predict.
demo *settings: build
    scripts/flow.sh demo {{settings}}

# Benchmarks → docs/benchmarks.md, docs/benchmarks-scale.md and docs/benchmarks-sweep.md (quiet machine, ~30 min). Positional: DATA LITE0_WEIGHTS RESNET18_WEIGHTS.
# REPS=N (default 3) sets the repetitions; PYTHON=/path/to/python with torch runs bench/reference.py in the same run.
bench *args: build
    scripts/bench.sh {{args}}

# Scale benchmarks only (1M-image writer, train-head memory at 20k vs 2M rows) → docs/benchmarks-scale.md
bench-scale: build
    scripts/bench-scale.sh

# Sweep benchmarks only (360-job sweeps on the Lite0 cache and a 100k-row synthetic one; best vs default) → docs/benchmarks-sweep.md
bench-sweep *args: build
    scripts/bench-sweep.sh {{args}}

# PyTorch reference figures for the same work (needs torch + torchvision; skipped otherwise) → docs/benchmarks-reference.md
bench-reference *args:
    #!/usr/bin/env bash
    # Python: $PYTHON, or a python=PATH word, else python3, e.g.
    #   PYTHON=/work/torchvenv/bin/python just bench-reference --quick
    # Other words go to bench/reference.py (--reps N, --json PATH, --out PATH, --quick, --help).
    set -euo pipefail
    py=${PYTHON:-python3}
    rest=()
    for a in {{args}}; do
        case "$a" in python=*) py=${a#python=} ;; *) rest+=("$a") ;; esac
    done
    if ! "$py" -c 'import torch, torchvision' >/dev/null 2>&1; then
        echo "bench-reference: skipped: '$py' cannot import torch and torchvision." >&2
        echo "  Install them:  pip install torch torchvision   (for that python: $py -m pip install torch torchvision)" >&2
        echo "  (CPU-only wheels: add --index-url https://download.pytorch.org/whl/cpu)" >&2
        echo "  or point at a python that has them:  PYTHON=/path/to/venv/bin/python just bench-reference" >&2
        exit 0
    fi
    via="${PYTHON:+PYTHON=$PYTHON }just bench-reference {{args}}"
    export BENCH_REFERENCE_VIA="${via% }"
    exec "$py" bench/reference.py ${rest[@]+"${rest[@]}"}
