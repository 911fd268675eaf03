//! `headstart`: transfer learning by feature extraction.
//!
//! A frozen ImageNet-pretrained CNN turns each image (and seeded augmented views of it) into a
//! feature vector once; the vectors are cached; a linear head trains on the cache in seconds.

mod commands;
mod common;
mod draw;
mod hints;
mod progress;

use clap::{Parser, Subcommand};

/// Transfer learning by feature extraction: a frozen pretrained CNN → a cached feature set → a
/// linear classifier, in three commands.
///
/// Typical session:
///
///     headstart extract data/flowers --cache cache/flowers-resnet18
///     headstart train-head --cache cache/flowers-resnet18 --out heads/flowers
///     headstart predict --head heads/flowers photo.jpg
///
/// Experiments on the cache (docs/experiments.md):
///
///     headstart sweep --cache cache/flowers-resnet18 --out sweeps/lr --lr 1e-4,1e-3,1e-2 --seeds 1,2,3
///     headstart compare heads/flowers sweeps/lr/best
///     headstart train-head --from heads/flowers/run.json
///
/// Looking at the data (docs/audit.md):
///
///     headstart audit --cache cache/flowers-resnet18 --data data/flowers --out audits/flowers
///     headstart neighbors --cache cache/flowers-resnet18 photo.jpg
///     headstart map --cache cache/flowers-resnet18 --out map.png --html map.html --audit audits/flowers
///
/// Weights are found offline first: --weights PATH, then the Hugging Face cache ($HF_HOME),
/// then the torch hub cache ($TORCH_HOME/hub/checkpoints), then a download from the hub
/// (skipped when HF_HUB_OFFLINE=1). `headstart weights` shows which one is used.
#[derive(Debug, Parser)]
#[command(
    name = "headstart",
    version,
    about,
    long_about,
    max_term_width = 100,
    verbatim_doc_comment
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Devices(commands::devices::Args),
    Weights(commands::weights::Args),
    Classify(commands::classify::Args),
    Extract(commands::extract::Args),
    TrainHead(commands::train_head::Args),
    Sweep(commands::sweep::Args),
    Compare(commands::compare::Args),
    Audit(commands::audit::Args),
    Neighbors(commands::neighbors::Args),
    Map(commands::map::Args),
    Predict(commands::predict::Args),
    Eval(commands::eval::Args),
    Show(commands::show::Args),
    Forward(commands::forward::Args),
    Benchmark(commands::benchmark::Args),
    FetchFlowers(commands::fetch::Args),
    #[command(subcommand)]
    Cache(commands::cache::Command),
    Completions(commands::completions::Args),
}

fn main() {
    common::tune_allocator();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devices(a) => commands::devices::run(a),
        Command::Weights(a) => commands::weights::run(a),
        Command::Classify(a) => commands::classify::run(a),
        Command::Extract(a) => commands::extract::run(a),
        Command::TrainHead(a) => commands::train_head::run(a),
        Command::Sweep(a) => commands::sweep::run(a),
        Command::Compare(a) => commands::compare::run(a),
        Command::Audit(a) => commands::audit::run(a),
        Command::Neighbors(a) => commands::neighbors::run(a),
        Command::Map(a) => commands::map::run(a),
        Command::Predict(a) => commands::predict::run(a),
        Command::Eval(a) => commands::eval::run(a),
        Command::Show(a) => commands::show::run(a),
        Command::Forward(a) => commands::forward::run(a),
        Command::Benchmark(a) => commands::benchmark::run(a),
        Command::Cache(c) => commands::cache::run(c),
        Command::FetchFlowers(a) => commands::fetch::run(a),
        Command::Completions(a) => commands::completions::run(a),
    };
    if let Err(e) = result {
        let code = if e.downcast_ref::<common::UsageError>().is_some() {
            2
        } else {
            1
        };
        // Messages carry names from files (class folders, manifests, heads): no control
        // character reaches the terminal.
        let say = headstart_core::text::for_terminal_lines;
        eprintln!("error: {}", say(&format!("{e:#}")));
        if let Some(w) = e.downcast_ref::<common::WithFix>() {
            eprintln!("fix: {}", say(&w.fix));
        } else if let Some(fix) = hints::fix_for(&e) {
            eprintln!("fix: {}", say(&fix));
        }
        std::process::exit(code);
    }
}
