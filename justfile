# headstart recipes. Every variable can be overridden: `just extract data=… backbone=… weights=…`.

set shell := ["bash", "-euo", "pipefail", "-c"]

data := "data/flowers"
backbone := "resnet18"
weights := ""
views := "5"
seed := "43"
cache := "cache/" + file_name(data) + "-" + backbone
head := "heads/" + file_name(data) + "-" + backbone
solver := "sgd"
images := data
out := "out"

bin := "target/release/headstart"
weights_flag := if weights == "" { "" } else { "--weights " + weights }

# List the recipes.
default:
    @just --list

# Build the release binary (CPU). Add `--features cuda` yourself for a GPU build.
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
extract: build
    {{bin}} extract {{data}} --cache {{cache}} --backbone {{backbone}} {{weights_flag}} --views {{views}} --seed {{seed}}

# Feature cache → linear head, curves and report.
train-head: build
    {{bin}} train-head --cache {{cache}} --out {{head}} --solver {{solver}} --seed {{seed}}

# Head + backbone on images (default: a few photos of the dataset), with a prediction grid.
predict: build
    mkdir -p {{out}}
    {{bin}} predict --head {{head}} {{weights_flag}} --grid {{out}}/predictions.png $(find {{images}} -type f \( -iname '*.jpg' -o -iname '*.png' \) | sort | awk 'NR % 40 == 1' | head -16)

# Score the head on a labelled folder.
eval: build
    {{bin}} eval --head {{head}} {{weights_flag}} {{data}}

# The whole flow on the flower photos: extract → train-head → eval → predict.
demo: build
    @test -d {{data}} || {{bin}} fetch-flowers --out {{data}}
    {{bin}} extract {{data}} --cache {{cache}} --backbone {{backbone}} {{weights_flag}} --views {{views}} --seed {{seed}}
    {{bin}} train-head --cache {{cache}} --out {{head}} --seed {{seed}}
    {{bin}} eval --head {{head}} {{weights_flag}} {{data}}
    mkdir -p {{out}}
    {{bin}} show {{data}} --grid {{out}}/dataset.png
    {{bin}} predict --head {{head}} {{weights_flag}} --grid {{out}}/predictions.png $(find {{data}} -type f -iname '*.jpg' | sort | awk 'NR % 40 == 1' | head -16)
    @echo "curves: {{head}}/curves.png   report: {{head}}/report.txt   grids: {{out}}/dataset.png {{out}}/predictions.png"

# Benchmarks (writes docs/benchmarks.md).
bench: build
    scripts/bench.sh {{data}} {{backbone}} "{{weights}}"
