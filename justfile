# headstart recipes. Settings are key=value words after the recipe name, e.g.
#   just demo data=../shared/data/flowers backbone=efficientnet-lite0 weights=path/to/lite0.pth
# keys: data backbone weights views seed cache head solver out images (see scripts/flow.sh).

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# Build the release binary (CPU). For a GPU build: cargo build --release --features cuda.
build:
    cargo build --release -p headstart

# Run the test suite (the command CI runs).
test:
    cargo test --workspace

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

# Benchmarks: writes docs/benchmarks.md. Positional: DATA BACKBONE WEIGHTS.
bench *args: build
    scripts/bench.sh {{args}}
