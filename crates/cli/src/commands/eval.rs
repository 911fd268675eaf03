//! `headstart eval`: score a head on a labelled folder.

use std::path::PathBuf;

use anyhow::Result;
use headstart_predict::evaluate;
use serde_json::json;

use super::predict::HeadArgs;
use crate::common::{print_json, require_dir};
use crate::progress::Bar;

/// Score a trained head on a labelled ImageFolder: accuracy, confusion matrix and per-class
/// precision/recall/F1. Class folders are matched to the head's classes by name; folders of
/// unknown classes are reported and not scored.
///
/// Example: headstart eval --head heads/flowers --tta crops:4 data/flowers
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    head: HeadArgs,
    /// The labelled image folder.
    #[arg(value_name = "DATA_DIR")]
    data_dir: PathBuf,
    /// With train/ + val/ + test/ folders: which held-out side to score.
    #[arg(long, value_enum, default_value = "val")]
    split: HeldOut,
    /// Print a JSON object {"accuracy", "macro_f1", "n", "confusion", "per_class", ...}.
    #[arg(long)]
    json: bool,
}

/// The held-out side of a split dataset.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum HeldOut {
    /// The val/ folder (or test/ when there is no val/).
    Val,
    /// The test/ folder beside train/ and val/, never used in training or validation.
    Test,
}

/// Runs the command.
pub fn run(a: Args) -> Result<()> {
    a.head.run.threads.apply()?;
    require_dir(&a.data_dir, "DATA_DIR")?;
    let predictor = a.head.predictor()?;
    let bar = Bar::new("eval", a.json);
    let split = match a.split {
        HeldOut::Val => headstart_extract::dataset::Split::Val,
        HeldOut::Test => headstart_extract::dataset::Split::Test,
    };
    // Which images trained the head (from the cache and split its run.json records): scoring
    // them is not a held-out score, and the report says so.
    let training = headstart_head::TrainingImages::of_head(&a.head.head).unwrap_or(None);
    let ev = evaluate(
        &predictor,
        &a.data_dir,
        split,
        a.head.batch(&predictor),
        training.as_ref(),
        &bar,
    )?;
    bar.done();
    if a.json {
        let mut v = serde_json::to_value(&ev)?;
        v["predictions"] = json!(ev
            .predictions
            .iter()
            .map(|p| json!({"path": p.path, "label": p.top.as_ref().map(|t| t[0].label.clone())}))
            .collect::<Vec<_>>());
        print_json(&v)?;
    } else {
        print!("{}", ev.report.to_text());
        if predictor.tta.views() > 1 {
            println!(
                "test-time augmentation {}: probabilities averaged over {} views per image",
                ev.tta,
                predictor.tta.views()
            );
        }
        if !ev.in_training.is_empty() {
            println!(
                "\nnote: {} of the {} images scored were in the head's training split: this is not a held-out score (score a folder of images the head has not seen, or its val/ or test/ split)",
                ev.in_training.len(),
                ev.report.n
            );
        } else if !ev.training_checked {
            println!("\nnote: the head's training images could not be checked (its cache is not where run.json says): whether these images are held out is unknown");
        }
        if !ev.unknown_classes.is_empty() {
            println!(
                "\nnot scored (class unknown to the head): {}",
                ev.unknown_classes.join(", ")
            );
        }
        for e in &ev.errors {
            println!(
                "error: {}: {}",
                headstart_core::text::for_terminal(&e.path),
                headstart_core::text::for_terminal(e.error.as_deref().unwrap_or(""))
            );
        }
    }
    Ok(())
}
