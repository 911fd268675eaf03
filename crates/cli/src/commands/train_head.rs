//! `headstart train-head`: a linear classifier on cached features.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use headstart_cache::CacheIndex;
use headstart_head::{
    train_head, ClassWeight, HeadContents, HeadDir, LbfgsParams, RunRecord, SgdParams, Solver,
    TrainConfig, TrainEvent, TrainLimits, TrainReport, ViewSelection,
};
use serde_json::json;

use crate::common::{print_json, require_dir, require_file, usage};
use crate::draw::plot_curves;

/// Optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SolverArg {
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
/// Writes into --out: head.safetensors, history.json/.csv, curves.png, report.json/.txt,
/// validation.json (the prediction for every validation image) and run.json (everything needed
/// to reproduce the head bit for bit).
///
/// Reproduce a head: `headstart train-head --from heads/flowers/run.json` trains it again from
/// the settings and cache that run.json records and checks that head.safetensors comes out
/// byte-identical (naming the cache or binary when it does not); add --out NEW to keep the copy.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Feature cache written by `headstart extract` (with --from: the cache run.json records).
    #[arg(long, value_name = "CACHE_DIR", required_unless_present = "from")]
    cache: Option<PathBuf>,
    /// Output directory for the head and its reports (with --from: optional, where to keep the
    /// reproduced head).
    #[arg(long, value_name = "HEAD_DIR", required_unless_present = "from")]
    out: Option<PathBuf>,
    /// Reproduce the head whose run.json this is (or its head folder): same settings, same
    /// cache, and a check that head.safetensors is byte-identical. The training flags are taken
    /// from it, not from the command line.
    #[arg(long, value_name = "RUN_JSON", conflicts_with_all = [
        "solver", "epochs", "lr", "momentum", "nesterov", "weight_decay", "batch_size", "l2",
        "max_iter", "val_fraction", "seed", "views", "class_weight", "val_tta",
    ])]
    from: Option<PathBuf>,
    /// Optimiser.
    #[arg(long, value_enum, default_value_t = SolverArg::Sgd)]
    solver: SolverArg,
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
    /// Most L-BFGS iterations per fit (each a pass over the rows).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    max_iter: u32,
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
    /// Also report validation accuracy with test-time augmentation on the cache: each
    /// validation image's probabilities averaged over all its cached views (needs a cache
    /// extracted with --views N; the head is the same).
    #[arg(long)]
    val_tta: bool,
    /// Memory the training rows may take, in MiB. Beyond it, SGD reads rows from the shards
    /// batch by batch (same head, memory bounded whatever the cache's size; needs the cache on a
    /// disk or page cache with fast random reads) and L-BFGS refuses.
    #[arg(long, value_name = "MIB", default_value_t = 2048, value_parser = clap::value_parser!(u64).range(1..=(1u64 << 30)))]
    memory_budget: u64,
    /// Print a JSON summary on stdout (the per-epoch table goes to stderr).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    threads: crate::common::Threads,
}

impl Args {
    /// The typed training configuration these flags describe.
    fn config(&self) -> TrainConfig {
        let solver = match self.solver {
            SolverArg::Sgd => Solver::Sgd(SgdParams {
                lr: self.lr,
                momentum: self.momentum,
                nesterov: self.nesterov,
                weight_decay: self.weight_decay,
                batch_size: self.batch_size as usize,
                epochs: self.epochs as usize,
                seed: self.seed,
                class_weight: match self.class_weight {
                    ClassWeightArg::None => ClassWeight::None,
                    ClassWeightArg::Balanced => ClassWeight::Balanced,
                },
            }),
            SolverArg::Lbfgs => Solver::Lbfgs(LbfgsParams {
                l2: self.l2,
                max_iter: self.max_iter as usize,
                ..Default::default()
            }),
        };
        TrainConfig {
            solver,
            views: match self.views {
                Views::All => ViewSelection::All,
                Views::Eval => ViewSelection::Eval,
            },
            val_fraction: self.val_fraction,
            seed: self.seed,
            val_tta: self.val_tta,
            ..Default::default()
        }
    }

    /// Flags that the chosen solver ignores, for a warning.
    fn ignored_flags(&self) -> Option<&'static str> {
        let sgd_only_set = self.epochs != 20
            || self.lr != 0.001
            || self.momentum != 0.9
            || self.nesterov
            || self.weight_decay != 0.0
            || self.batch_size != 32
            || matches!(self.class_weight, ClassWeightArg::Balanced);
        match self.solver {
            SolverArg::Lbfgs if sgd_only_set => Some("--epochs, --lr, --momentum, --nesterov, --weight-decay, --batch-size and --class-weight apply to --solver sgd only; ignored"),
            SolverArg::Sgd if self.l2.is_some() || self.max_iter != 500 => Some(
                "--l2 and --max-iter apply to --solver lbfgs only (for SGD use --weight-decay and --epochs); ignored",
            ),
            _ => None,
        }
    }
}

/// Runs the command: parses the flags into a [`TrainConfig`], trains with the library call
/// [`train_head`], prints the table and publishes the head directory.
pub fn run(a: Args) -> Result<()> {
    a.threads.apply()?;
    if let Some(from) = &a.from {
        return reproduce(&a, from);
    }
    let started = Instant::now();
    let (cache_arg, out_arg) = (
        a.cache.clone().expect("clap requires --cache"),
        a.out.clone().expect("clap requires --out"),
    );
    require_dir(&cache_arg, "--cache")?;
    let config = a.config().check().map_err(|e| match e {
        headstart_head::Error::InvalidParams { param, problem } => {
            usage(format!("{} {problem}", crate::hints::flag(param)))
        }
        other => usage(other.to_string()),
    })?;
    // Resolved, checked and locked now, before training (the library names the folder; the
    // flag is ours).
    let out_dir = open_head_dir(&out_arg)?;
    if let Some(w) = a.ignored_flags() {
        eprintln!("warning: {w}");
    }
    let cache = CacheIndex::open(&cache_arg)?;
    if a.val_tta && cache.settings().augment.views == 0 {
        eprintln!("warning: --val-tta: the cache has no augmented views (it was extracted with --views 0), so there is nothing to average; scoring the eval view only");
    }
    let trained = train_with_table(&cache, &config, a.memory_budget, !a.json)?;
    let title = format!(
        "{}-class linear head on {} features",
        cache.classes().len(),
        cache.manifest.settings.backbone.name
    );
    publish(&out_dir, &cache, &cache_arg, &trained, &title, started)?;
    let out = out_dir.path();
    let seconds = started.elapsed().as_secs_f64();
    let history = &trained.history;
    let report = &trained.report;
    let last = history.last().expect("at least one epoch");
    let val_tta = trained.val_metrics.as_ref().and_then(|m| m.accuracy_tta);
    if a.json {
        print_json(&json!({
            "val_accuracy": last.val_accuracy,
            "val_accuracy_tta": val_tta,
            "train_accuracy": last.train_accuracy,
            "epochs": history.len(),
            "solver": config.solver.name(),
            "seconds": seconds,
            "head": out.join("head.safetensors"),
            "macro_f1": report.macro_f1,
        }))?;
    } else {
        println!(
            "val accuracy {}{}  macro-F1 {:.4}  ({:.1} s) → {}",
            last.val_accuracy
                .map(|v| format!("{v:.4}"))
                .unwrap_or("-".into()),
            val_tta.map_or(String::new(), |v| format!(
                " (with TTA over {} cached views: {v:.4})",
                cache.settings().augment.views + 1
            )),
            report.macro_f1,
            seconds,
            out.display()
        );
        if trained.split.val_images > 0 {
            println!("{}", report.to_text());
        }
    }
    Ok(())
}

/// Opens `--out` for a head (resolved, checked, locked).
pub fn open_head_dir(out: &std::path::Path) -> Result<HeadDir> {
    let dir = HeadDir::open(out).map_err(|e| match e {
        headstart_head::Error::HeadDir { .. } => usage(format!("--out {e}")),
        other => other.into(),
    })?;
    if let Some(w) = &dir.warning {
        eprintln!("warning: {w}");
    }
    Ok(dir)
}

/// Trains with [`train_head`], printing the per-epoch table (or L-BFGS's sweep) on stderr
/// when `show_table`.
pub fn train_with_table(
    cache: &CacheIndex,
    config: &headstart_head::ValidTrainConfig,
    memory_budget_mib: u64,
    show_table: bool,
) -> Result<TrainReport> {
    let solver_name = config.solver.name();
    let classes = cache.manifest.classes.len();
    let lbfgs = matches!(config.solver, Solver::Lbfgs(_));
    let mut on_event = |e: TrainEvent<'_>| match e {
        TrainEvent::Started(s) => {
            eprintln!(
                "train-head: {} training images ({} rows), {} validation images, {classes} classes, solver {solver_name}",
                s.train_images, s.train_rows, s.val_images
            );
            if show_table && !lbfgs {
                eprintln!(
                    "{:>5}  {:>10}  {:>9}  {:>8}  {:>7}",
                    "epoch", "train loss", "train acc", "val loss", "val acc"
                );
            }
        }
        TrainEvent::Epoch(r) if show_table && !lbfgs => {
            let f = |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into());
            eprintln!(
                "{:>5}  {:>10.4}  {:>9.4}  {:>8}  {:>7}",
                r.epoch,
                r.train_loss,
                r.train_accuracy,
                f(r.val_loss),
                f(r.val_accuracy)
            );
        }
        TrainEvent::Epoch(_) => {}
    };
    let limits = TrainLimits {
        memory_budget: memory_budget_mib << 20,
    };
    let trained = train_head(cache, config, &limits, &mut on_event)?;
    if let (Some(rep), true) = (&trained.lbfgs, show_table) {
        for (l2, acc, loss) in &rep.sweep {
            eprintln!(
                "  λ = {l2:.1e}: sweep validation accuracy {acc:.4}, cross-entropy {loss:.4}"
            );
        }
        eprintln!(
            "  chose λ = {:.1e}; final fit {} iterations, converged: {}",
            rep.l2, rep.iterations, rep.converged
        );
        if !rep.converged {
            eprintln!(
                "warning: L-BFGS stopped after {} iterations before its gradient tolerance: the head may be under-fitted (raise --max-iter, or give a larger --l2)",
                rep.iterations
            );
        }
        let last = trained.history.last().expect("one record");
        eprintln!(
            "train loss {:.4}  train acc {:.4}  val acc {}",
            last.train_loss,
            last.train_accuracy,
            last.val_accuracy
                .map(|v| format!("{v:.4}"))
                .unwrap_or("-".into())
        );
    }
    Ok(trained)
}

/// Publishes a trained head into `out` as one unit: every file is written into a staging
/// folder and swapped in at once, so a reader (or a crash at any moment) sees the old complete
/// head or the new one.
pub fn publish(
    out: &HeadDir,
    cache: &CacheIndex,
    cache_arg: &std::path::Path,
    trained: &TrainReport,
    title: &str,
    started: Instant,
) -> Result<()> {
    let ck = trained.checkpoint(cache);
    let run = RunRecord {
        command: std::env::args().collect(),
        tool: "headstart".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        git_commit: env!("HEADSTART_GIT_COMMIT").into(),
        // Absolute, so that eval, predict and --from find it from anywhere.
        cache: std::fs::canonicalize(cache_arg).unwrap_or_else(|_| cache_arg.to_path_buf()),
        cache_manifest_sha256: trained.cache_manifest_sha256.clone(),
        config: trained.config.clone(),
        split: trained.split.clone(),
        lbfgs: trained.lbfgs.clone(),
        rows_streamed: trained.rows_streamed,
        seconds: started.elapsed().as_secs_f64(),
    };
    let curves = match &trained.lbfgs {
        Some(rep) => crate::draw::plot_lbfgs(rep, title)?,
        None => plot_curves(&trained.history, title)?,
    };
    out.publish(&HeadContents {
        checkpoint: &ck,
        history: &trained.history,
        report: &trained.report,
        run: &run,
        curves_png: &curves,
        validation: &trained.validation,
    })?;
    Ok(())
}

/// `--from RUN_JSON`: trains the recorded head again and checks the bytes.
fn reproduce(a: &Args, from: &std::path::Path) -> Result<()> {
    let started = Instant::now();
    let (head_dir, run_json) = if from.is_dir() {
        (from.to_path_buf(), from.join("run.json"))
    } else {
        (
            from.parent()
                .unwrap_or(std::path::Path::new("."))
                .to_path_buf(),
            from.to_path_buf(),
        )
    };
    require_file(&run_json, "--from")?;
    let record = headstart_head::head_dir::read_run_record_file(&run_json)?;
    let original = head_dir.join("head.safetensors");
    require_file(&original, "--from: the head beside run.json,")?;
    let original_bytes = headstart_cache::safe_fs::read_regular(&original, 1 << 32)
        .map_err(|e| anyhow::anyhow!("{}: {e}", original.display()))?;
    let cache_arg = a.cache.clone().unwrap_or_else(|| record.cache.clone());
    if !cache_arg.is_dir() {
        return Err(usage(format!(
            "{}: the cache that {} records is not there; pass --cache CACHE_DIR to name where it is now",
            cache_arg.display(),
            run_json.display()
        )));
    }
    let config = record.config.clone().check().map_err(|e| {
        usage(format!(
            "{}: the recorded settings are refused: {e}",
            run_json.display()
        ))
    })?;
    let out_dir = match &a.out {
        Some(out) => {
            let same = std::fs::canonicalize(out).ok() == std::fs::canonicalize(&head_dir).ok();
            if same {
                return Err(usage(format!(
                    "--out {} is the head being reproduced; pick another folder",
                    out.display()
                )));
            }
            Some(open_head_dir(out)?)
        }
        None => None,
    };
    let cache = CacheIndex::open(&cache_arg)?;
    // What could make the bytes differ, named before training.
    let mut differences = Vec::new();
    if cache.manifest_sha256 != record.cache_manifest_sha256 {
        differences.push(format!(
            "the cache {} is not the one the head was trained on: its manifest sha256 is {}, run.json records {}",
            cache_arg.display(),
            cache.manifest_sha256,
            record.cache_manifest_sha256
        ));
    }
    let (version, commit) = (env!("CARGO_PKG_VERSION"), env!("HEADSTART_GIT_COMMIT"));
    if record.version != version || record.git_commit != commit {
        differences.push(format!(
            "this binary is headstart {version} ({commit}); the head was made by {} {} ({})",
            record.tool, record.version, record.git_commit
        ));
    }
    for d in &differences {
        eprintln!("note: {d}");
    }
    // The rows where the head's run had them (streamed or in memory: the validation loss is
    // summed in chunks when streamed, so the recorded bytes depend on it).
    let budget_mib = if record.rows_streamed { 0 } else { 1u64 << 30 };
    let trained = train_with_table(&cache, &config, budget_mib, false)?;
    let bytes = trained.checkpoint(&cache).to_bytes()?;
    let sha = |b: &[u8]| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b));
    let identical = bytes == original_bytes;
    if let Some(out) = &out_dir {
        let title = format!("reproduction of {}", head_dir.display());
        publish(out, &cache, &cache_arg, &trained, &title, started)?;
    }
    if a.json {
        print_json(&json!({
            "identical": identical,
            "head": original,
            "head_sha256": sha(&original_bytes),
            "reproduced_sha256": sha(&bytes),
            "differences": differences,
            "out": out_dir.as_ref().map(|d| d.path().join("head.safetensors")),
            "seconds": started.elapsed().as_secs_f64(),
        }))?;
    }
    if identical {
        if !a.json {
            println!(
                "reproduced {}: byte-identical (sha256 {}){}",
                original.display(),
                sha(&bytes),
                out_dir
                    .as_ref()
                    .map_or(String::new(), |d| format!(" → {}", d.path().display()))
            );
        }
        Ok(())
    } else {
        let why = if differences.is_empty() {
            "same cache and same binary, so this is a bug: please report it with both heads"
                .to_string()
        } else {
            differences.join("; ")
        };
        Err(anyhow::anyhow!(
            "the reproduced head differs from {} (sha256 {} vs {}): {why}",
            original.display(),
            sha(&bytes),
            sha(&original_bytes)
        ))
    }
}
