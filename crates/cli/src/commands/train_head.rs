//! `headstart train-head`: a linear classifier on cached features.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use headstart_cache::atomic::{publish_dir, write_atomic};
use headstart_cache::lock::DirLock;
use headstart_cache::FeatureCache;
use headstart_head::history::{to_csv, EpochRecord};
use headstart_head::lbfgs::train_lbfgs;
use headstart_head::split::{split_cache, stratified};
use headstart_head::train::{score, train_sgd};
use headstart_head::{
    ClassWeight, HeadCheckpoint, HeadMetadata, LbfgsParams, Report, Rows, SgdParams, ViewSelection,
};
use serde_json::json;

use crate::common::{output_dir, print_json, require_dir, usage};
use crate::draw::plot_curves;

/// Optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Solver {
    /// Mini-batch SGD with momentum (the PyTorch tutorial's recipe).
    Sgd,
    /// Full-batch L-BFGS to convergence with an L2 penalty (the CLIP linear-probe protocol).
    Lbfgs,
}

/// Which cached views train the head.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Views {
    /// The eval view and every augmented view of each training image.
    All,
    /// Only the eval view.
    Eval,
}

/// Class weighting of the loss.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ClassWeightArg {
    /// Every row counts the same.
    None,
    /// Weight rows by n / (classes · count(class)).
    Balanced,
}

/// Train a linear classifier on a feature cache.
///
/// The split is by image, never by view: a seeded, stratified 80/20 split (or the dataset's own
/// train/ and val/ folders). Training uses every view of the training images; validation uses
/// the eval view of the validation images.
///
/// Writes into --out: head.safetensors, history.json/.csv, curves.png, report.json/.txt and
/// run.json (everything needed to reproduce the head bit for bit).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Feature cache written by `headstart extract`.
    #[arg(long, value_name = "CACHE_DIR")]
    cache: PathBuf,
    /// Output directory for the head and its reports.
    #[arg(long, value_name = "HEAD_DIR")]
    out: PathBuf,
    /// Optimiser.
    #[arg(long, value_enum, default_value_t = Solver::Sgd)]
    solver: Solver,
    /// Epochs (SGD).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    epochs: u32,
    /// Learning rate (SGD).
    #[arg(long, default_value_t = 0.001)]
    lr: f64,
    /// Momentum (SGD).
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    /// Nesterov momentum (SGD).
    #[arg(long)]
    nesterov: bool,
    /// L2 weight decay (SGD).
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Rows per step (SGD).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    /// L2 penalty λ (L-BFGS; objective = mean cross-entropy + λ/2·‖W‖²). Without it, λ is swept
    /// on a validation slice of the training split and the best is refitted.
    #[arg(long)]
    l2: Option<f64>,
    /// Fraction of images held out for validation (ignored when the dataset has train/val folders).
    #[arg(long, default_value_t = 0.2)]
    val_fraction: f64,
    /// Seed of the split, the initialisation and the shuffles.
    #[arg(long, default_value_t = 43)]
    seed: u64,
    /// Which cached views of the training images to train on.
    #[arg(long, value_enum, default_value_t = Views::All)]
    views: Views,
    /// Class weighting of the loss (SGD).
    #[arg(long, value_enum, default_value_t = ClassWeightArg::None)]
    class_weight: ClassWeightArg,
    /// Print a JSON summary on stdout (the per-epoch table goes to stderr).
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub fn run(a: Args) -> Result<()> {
    let started = Instant::now();
    require_dir(&a.cache, "--cache")?;
    if !(0.0..1.0).contains(&a.val_fraction) {
        return Err(usage(format!(
            "--val-fraction {} must be in [0, 1)",
            a.val_fraction
        )));
    }
    let sgd = SgdParams {
        lr: a.lr,
        momentum: a.momentum,
        nesterov: a.nesterov,
        weight_decay: a.weight_decay,
        batch_size: a.batch_size as usize,
        epochs: a.epochs as usize,
        seed: a.seed,
        class_weight: match a.class_weight {
            ClassWeightArg::None => ClassWeight::None,
            ClassWeightArg::Balanced => ClassWeight::Balanced,
        },
    }
    .check()
    .map_err(|e| usage(e.to_string()))?;
    let lbfgs = LbfgsParams {
        l2: a.l2,
        ..Default::default()
    }
    .check()
    .map_err(|e| usage(e.to_string()))?;
    output_dir(&a.out, "--out")?;
    refuse_foreign_files(&a.out)?;
    let (_lock, warning) = DirLock::acquire(&a.out)?;
    if let Some(w) = warning {
        eprintln!("warning: {w}");
    }

    let cache = FeatureCache::open(&a.cache)?;
    let manifest_sha256 = cache.manifest_sha256()?;
    let rows = cache
        .load()
        .context("reading the cache (every shard's checksum is verified)")?;
    let m = &cache.manifest;
    let classes = m.classes.clone();
    if classes.len() < 2 {
        return Err(anyhow::anyhow!(
            "{}: the cache has only one class ({}); a classifier needs at least two class folders in DATA_DIR",
            a.cache.display(),
            classes.first().map(String::as_str).unwrap_or("none")
        ));
    }
    let split = split_cache(m, a.val_fraction, a.seed)?;
    let view_sel = match a.views {
        Views::All => ViewSelection::All,
        Views::Eval => ViewSelection::Eval,
    };
    let train = Rows::select(&rows, &split.train, view_sel);
    let val = Rows::select(&rows, &split.val, ViewSelection::Eval);
    if train.is_empty() {
        return Err(anyhow::anyhow!(
            "no training rows: the cache has {} usable images",
            m.usable_images().count()
        ));
    }
    let show_table = !a.json;
    let sgd_only_set = a.epochs != 20
        || a.lr != 0.001
        || a.momentum != 0.9
        || a.nesterov
        || a.weight_decay != 0.0
        || a.batch_size != 32
        || matches!(a.class_weight, ClassWeightArg::Balanced);
    if a.solver == Solver::Lbfgs && sgd_only_set {
        eprintln!("warning: --epochs, --lr, --momentum, --nesterov, --weight-decay, --batch-size and --class-weight apply to --solver sgd only; ignored");
    }
    if a.solver == Solver::Sgd && a.l2.is_some() {
        eprintln!(
            "warning: --l2 applies to --solver lbfgs only (for SGD use --weight-decay); ignored"
        );
    }
    let solver_name = match a.solver {
        Solver::Sgd => "sgd",
        Solver::Lbfgs => "lbfgs",
    };
    eprintln!(
        "train-head: {} training images ({} rows), {} validation images, {} classes, solver {}",
        split.train.len(),
        train.len(),
        split.val.len(),
        classes.len(),
        solver_name
    );
    let (head, history, solver_info) = match a.solver {
        Solver::Sgd => {
            if show_table {
                eprintln!(
                    "{:>5}  {:>10}  {:>9}  {:>8}  {:>7}",
                    "epoch", "train loss", "train acc", "val loss", "val acc"
                );
            }
            let mut on_epoch = |r: &EpochRecord| {
                if show_table {
                    let f =
                        |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into());
                    eprintln!(
                        "{:>5}  {:>10.4}  {:>9.4}  {:>8}  {:>7}",
                        r.epoch,
                        r.train_loss,
                        r.train_accuracy,
                        f(r.val_loss),
                        f(r.val_accuracy)
                    );
                }
            };
            let (head, history) = train_sgd(&train, &val, classes.len(), &sgd, &mut on_epoch)?;
            (head, history, json!({"solver": "sgd", "params": &*sgd}))
        }
        Solver::Lbfgs => {
            // The sweep's validation slice is carved from the training images only.
            let pairs: Vec<(usize, usize)> = split
                .train
                .iter()
                .map(|&i| (i, m.images[i].label))
                .collect();
            let inner = stratified(&pairs, 0.2, a.seed ^ 0x5EEB);
            let sweep_train = Rows::select(&rows, &inner.train, view_sel);
            let sweep_val = Rows::select(&rows, &inner.val, ViewSelection::Eval);
            let (head, rep) = train_lbfgs(&train, &sweep_train, &sweep_val, classes.len(), &lbfgs)?;
            if show_table {
                for (l2, acc, loss) in &rep.sweep {
                    eprintln!("  λ = {l2:.1e}: sweep validation accuracy {acc:.4}, cross-entropy {loss:.4}");
                }
                eprintln!(
                    "  chose λ = {:.1e}; final fit {} iterations, converged: {}",
                    rep.l2, rep.iterations, rep.converged
                );
            }
            let (tl, ta, _) = score(&head, &train)?;
            let (vl, va) = if val.is_empty() {
                (None, None)
            } else {
                let (l, acc, _) = score(&head, &val)?;
                (Some(l), Some(acc))
            };
            let rec = EpochRecord {
                epoch: 1,
                train_loss: tl,
                train_accuracy: ta,
                val_loss: vl,
                val_accuracy: va,
            };
            if show_table {
                eprintln!(
                    "train loss {tl:.4}  train acc {ta:.4}  val acc {}",
                    va.map(|v| format!("{v:.4}")).unwrap_or("-".into())
                );
            }
            (
                head,
                vec![rec],
                json!({"solver": "lbfgs", "params": &*lbfgs, "result": rep}),
            )
        }
    };

    let (_, _, pred) = score(&head, &val)?;
    let truth: Vec<usize> = val.y.iter().map(|&y| y as usize).collect();
    let report = Report::new(&classes, &truth, &pred);
    let last = history.last().cloned().expect("at least one epoch");
    let training = json!({
        "solver": solver_info,
        "views": format!("{:?}", a.views).to_lowercase(),
        "val_fraction": a.val_fraction,
        "seed": a.seed,
        "split": {"kind": split.kind, "train_images": split.train.len(), "val_images": split.val.len()},
        "train_rows": train.len(),
        "cache_manifest_sha256": manifest_sha256,
    });
    let val_metrics = if val.is_empty() {
        json!(null)
    } else {
        json!({"accuracy": report.accuracy, "macro_f1": report.macro_f1, "n": report.n, "loss": last.val_loss})
    };
    let ck = HeadCheckpoint {
        head,
        meta: HeadMetadata {
            classes: classes.clone(),
            backbone: m.settings.backbone.clone(),
            weights_sha256: m.settings.weights_sha256.clone(),
            feature_dim: m.settings.feature_dim,
            training: training.clone(),
            val_metrics,
        },
    };
    // Every file of the head directory is written into a staging directory and swapped in at
    // once: a reader (or a crash at any moment) sees the old complete head or the new one.
    let out = &a.out;
    let seconds = started.elapsed().as_secs_f64();
    let run = json!({
        "command": std::env::args().collect::<Vec<_>>(),
        "tool": "headstart",
        "version": env!("CARGO_PKG_VERSION"),
        "git_commit": env!("HEADSTART_GIT_COMMIT"),
        "cache": a.cache,
        "cache_manifest_sha256": training["cache_manifest_sha256"],
        "settings": {
            "solver": solver_name,
            "epochs": a.epochs, "lr": a.lr, "momentum": a.momentum, "nesterov": a.nesterov,
            "weight_decay": a.weight_decay, "batch_size": a.batch_size, "l2": a.l2,
            "val_fraction": a.val_fraction, "seed": a.seed,
            "views": format!("{:?}", a.views).to_lowercase(),
            "class_weight": format!("{:?}", a.class_weight).to_lowercase(),
        },
        "training": training,
        "seconds": seconds,
    });
    let title = format!(
        "{}-class linear head on {} features",
        classes.len(),
        m.settings.backbone.name
    );
    publish_dir(out, |dir| -> Result<()> {
        let write = |name: &str, bytes: &[u8]| write_atomic(&dir.join(name), bytes);
        ck.save(dir)?;
        write("history.json", &serde_json::to_vec_pretty(&history)?)?;
        write("history.csv", to_csv(&history).as_bytes())?;
        plot_curves(&history, &dir.join("curves.png"), &title)?;
        write("report.json", &serde_json::to_vec_pretty(&report)?)?;
        write("report.txt", report.to_text().as_bytes())?;
        write("run.json", &serde_json::to_vec_pretty(&run)?)?;
        Ok(())
    })?;
    if a.json {
        print_json(&json!({
            "val_accuracy": last.val_accuracy,
            "train_accuracy": last.train_accuracy,
            "epochs": history.len(),
            "solver": solver_name,
            "seconds": seconds,
            "head": out.join("head.safetensors"),
            "macro_f1": report.macro_f1,
        }))?;
    } else {
        println!(
            "val accuracy {}  macro-F1 {:.4}  ({:.1} s) → {}",
            last.val_accuracy
                .map(|v| format!("{v:.4}"))
                .unwrap_or("-".into()),
            report.macro_f1,
            seconds,
            out.display()
        );
        if !val.is_empty() {
            println!("{}", report.to_text());
        }
    }
    Ok(())
}

/// The files of a head directory (it is replaced as a whole by each train-head).
const HEAD_FILES: [&str; 7] = [
    "head.safetensors",
    "history.json",
    "history.csv",
    "curves.png",
    "report.json",
    "report.txt",
    "run.json",
];

/// `--out` is replaced as a whole: refuse a folder that holds anything but a head.
fn refuse_foreign_files(out: &std::path::Path) -> Result<()> {
    let mut foreign: Vec<String> = std::fs::read_dir(out)
        .with_context(|| format!("--out {}: cannot list the folder", out.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !HEAD_FILES.contains(&n.as_str())
                && n != headstart_cache::lock::LOCK_FILE
                && n != ".DS_Store"
                && !(n.starts_with('.') && n.contains(".tmp-"))
        })
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    foreign.sort();
    Err(usage(format!(
        "--out {}: holds files that are not part of a head ({}); the head folder is replaced as a whole, so pick an empty folder, a new path or an existing head folder",
        out.display(),
        foreign.join(", ")
    )))
}
