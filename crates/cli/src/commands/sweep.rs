//! `headstart sweep`: a grid of train-head settings, scored by cross-validation on the cache.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use headstart_cache::CacheIndex;
use headstart_head::sweep::{
    best_dir, run_sweep, Leaderboard, Refit, SweepConfig, SweepDir, SweepEvent, SweepGrid,
};
use headstart_head::{ClassWeight, ViewSelection};

use crate::common::{print_json, require_dir, usage, Threads};
use crate::progress::Bar;

/// Try many train-head settings at once and see which differences are real. Every
/// configuration of the grid (the cartesian product of the comma-separated lists; SGD settings
/// go with `sgd`, `--l2` with `lbfgs`) is scored by stratified K-fold cross-validation by image on
/// the training side of train-head's split, once per seed. The validation side (and any test/
/// folder) is never touched while scoring; the best configuration is then refitted on the whole
/// training side and published as an ordinary head in OUT/best/, scored on the validation side.
///
/// Writes OUT/leaderboard.json and .csv, OUT/sweep.png (accuracy ± its 95 % interval per
/// configuration) and prints the table best first. Resumable: rerun the same command after a
/// crash and only what was not scored runs; other settings into the same OUT are refused.
///
/// Example: headstart sweep --cache cache/flowers --out sweeps/lr --lr 1e-4,1e-3,1e-2 --seeds 1,2,3
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The feature cache.
    #[arg(long, value_name = "CACHE_DIR")]
    cache: PathBuf,
    /// The sweep's folder (created; an interrupted sweep there is resumed).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Solvers: sgd, lbfgs.
    #[arg(long, value_delimiter = ',', default_value = "sgd")]
    solver: Vec<String>,
    /// SGD learning rates.
    #[arg(long, value_delimiter = ',', default_value = "0.001")]
    lr: Vec<f64>,
    /// SGD epochs.
    #[arg(long, value_delimiter = ',', default_value = "20")]
    epochs: Vec<usize>,
    /// SGD momentum.
    #[arg(long, value_delimiter = ',', default_value = "0.9")]
    momentum: Vec<f64>,
    /// SGD Nesterov momentum: false, true.
    #[arg(long, value_delimiter = ',', default_value = "false")]
    nesterov: Vec<bool>,
    /// SGD weight decay.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    weight_decay: Vec<f64>,
    /// SGD batch sizes.
    #[arg(long, value_delimiter = ',', default_value = "32")]
    batch_size: Vec<usize>,
    /// SGD class weighting: none, balanced.
    #[arg(long, value_delimiter = ',', default_value = "none", value_parser = parse_class_weight)]
    class_weight: Vec<ClassWeight>,
    /// L-BFGS penalties λ; `swept` lets each fit pick λ on a slice of its training images.
    #[arg(long, value_delimiter = ',', default_value = "swept", value_parser = parse_l2)]
    l2: Vec<Option<f64>>,
    /// L-BFGS iteration limits.
    #[arg(long, value_delimiter = ',', default_value = "500")]
    max_iter: Vec<usize>,
    /// Views of the training images that train: all, eval.
    #[arg(long, value_delimiter = ',', default_value = "all", value_parser = parse_views)]
    views: Vec<ViewSelection>,
    /// Seeds; each deals the folds anew and seeds the heads (repeated K-fold: every
    /// configuration gets folds × seeds scores). Values must not repeat.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    seeds: Vec<u64>,
    /// K of the cross-validation.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(2..=100))]
    folds: u32,
    /// train-head's validation fraction (without val/ folders): the side kept out of the sweep.
    #[arg(long, default_value_t = 0.2)]
    val_fraction: f64,
    /// train-head's split seed (its --seed), also the folds' seed.
    #[arg(long, default_value_t = 43)]
    split_seed: u64,
    /// MiB the rows may take in memory; beyond, they are read from the shards (as train-head),
    /// and L-BFGS runs only as many fits at once as the budget holds.
    #[arg(long, default_value_t = 2048, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=(1u64 << 30)))]
    memory_budget: u64,
    /// Score only: no refit of the best configuration into OUT/best/.
    #[arg(long)]
    no_refit: bool,
    /// Also score each fold with test-time augmentation on the cache: every cached view of a
    /// held-out image averaged (needs a cache extracted with --views N).
    #[arg(long)]
    val_tta: bool,
    #[command(flatten)]
    threads: Threads,
    /// Print leaderboard.json on stdout.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

fn parse_class_weight(s: &str) -> std::result::Result<ClassWeight, String> {
    match s {
        "none" => Ok(ClassWeight::None),
        "balanced" => Ok(ClassWeight::Balanced),
        _ => Err(format!("`{s}`: none or balanced")),
    }
}

fn parse_l2(s: &str) -> std::result::Result<Option<f64>, String> {
    match s {
        "swept" | "auto" => Ok(None),
        v => v
            .parse::<f64>()
            .map(Some)
            .map_err(|_| format!("`{v}`: a number, or `swept`")),
    }
}

fn parse_views(s: &str) -> std::result::Result<ViewSelection, String> {
    match s {
        "all" => Ok(ViewSelection::All),
        "eval" => Ok(ViewSelection::Eval),
        _ => Err(format!("`{s}`: all or eval")),
    }
}

/// Runs the command.
pub fn run(a: Args) -> Result<()> {
    a.threads.apply()?;
    let started = Instant::now();
    require_dir(&a.cache, "--cache")?;
    let cfg = SweepConfig {
        grid: SweepGrid {
            solvers: a.solver.clone(),
            lr: a.lr.clone(),
            epochs: a.epochs.clone(),
            momentum: a.momentum.clone(),
            nesterov: a.nesterov.clone(),
            weight_decay: a.weight_decay.clone(),
            batch_size: a.batch_size.clone(),
            class_weight: a.class_weight.clone(),
            l2: a.l2.clone(),
            max_iter: a.max_iter.clone(),
            views: a.views.clone(),
        },
        seeds: a.seeds.clone(),
        folds: a.folds as usize,
        val_fraction: a.val_fraction,
        split_seed: a.split_seed,
        val_tta: a.val_tta,
    };
    let settings = cfg.check().map_err(|e| match e {
        headstart_head::Error::InvalidParams { param, problem } => {
            usage(format!("{} {problem}", crate::hints::flag(param)))
        }
        other => other.into(),
    })?;
    std::fs::create_dir_all(&a.out)
        .map_err(|e| usage(format!("--out {}: cannot create it ({e})", a.out.display())))?;
    // Held to the end: scoring, refit and the last leaderboard write are one sweep's.
    let sweep_dir = SweepDir::open(&a.out)?;
    let cache = CacheIndex::open(&a.cache)?;
    if a.val_tta && cache.settings().augment.views == 0 {
        eprintln!("warning: --val-tta: the cache has no augmented views (it was extracted with --views 0), so there is nothing to average; scoring the eval view only");
    }
    let bar = Bar::new("sweep", a.quiet || a.json);
    let show = !a.quiet && !a.json;
    let board = run_sweep(
        &cache,
        &cfg,
        &sweep_dir,
        a.memory_budget << 20,
        &|e| match e {
            SweepEvent::Started { jobs, done, images } => {
                if show {
                    eprintln!(
                        "sweep: {} configurations × {} seeds × {} folds = {jobs} jobs on {images} training-side images{}",
                        settings.len(),
                        cfg.seeds.len(),
                        cfg.folds,
                        if done > 0 { format!(" ({done} already scored)") } else { String::new() }
                    );
                }
                bar.set_len(jobs as u64);
                bar.inc(done as u64);
            }
            SweepEvent::Scored(_) => bar.inc(1),
        },
    )?;
    bar.done();
    write_csv(&a.out.join("leaderboard.csv"), &board)?;
    let png = crate::draw::plot_sweep(&board, "sweep: cross-validated accuracy, 95 % interval")?;
    headstart_cache::atomic::write_atomic(&a.out.join("sweep.png"), &png)?;
    // Refit the best on the whole training side, scored on the validation side.
    let mut board = board;
    let all_failed = board.configurations[board.best].failed.is_some();
    if all_failed {
        eprintln!(
            "warning: every configuration diverged: nothing to refit (try smaller learning rates)"
        );
    }
    if !a.no_refit && !all_failed {
        let best = &board.configurations[board.best];
        let config = best.settings.train_config(cfg.seeds[0], &cfg).check()?;
        let out = super::train_head::open_head_dir(&best_dir(&a.out))?;
        let trained = super::train_head::train_with_table(&cache, &config, a.memory_budget, false)?;
        let title = format!("sweep's best: {}", best.settings.label());
        super::train_head::publish(&out, &cache, &a.cache, &trained, &title, started)?;
        let has_val = trained.split.val_images > 0;
        board.refit = Some(Refit {
            head: out.path().to_path_buf(),
            val_accuracy: has_val.then_some(trained.report.accuracy),
            val_macro_f1: has_val.then_some(trained.report.macro_f1),
            val_accuracy_tta: trained.val_metrics.as_ref().and_then(|m| m.accuracy_tta),
        });
        board.write(&a.out)?;
    }
    if a.json {
        return print_json(&board);
    }
    println!(
        "{:>4}  {:>22}  {:>8}  {:>8}  {:>7}  settings",
        "rank", "accuracy (95 % CI)", "± std", "macro-F1", "TTA"
    );
    for (rank, &i) in board.ranking().iter().enumerate() {
        let c = &board.configurations[i];
        println!(
            "{:>4}  {:.4} [{:.4}, {:.4}]  {:>8.4}  {:>8.4}  {:>7}  {}{}",
            rank + 1,
            c.accuracy.mean,
            c.accuracy.ci95[0],
            c.accuracy.ci95[1],
            c.accuracy.std,
            c.macro_f1.mean,
            c.accuracy_tta
                .as_ref()
                .map_or("-".into(), |t| format!("{:.4}", t.mean)),
            c.settings.label(),
            if c.failed.is_some() {
                "   (diverged: scored 0)"
            } else if i == board.best {
                "   ← best"
            } else {
                ""
            }
        );
    }
    match &board.refit {
        Some(r) => match (r.val_accuracy, r.val_macro_f1) {
            (Some(acc), Some(f1)) => println!(
                "best refitted on the whole training side: validation accuracy {acc:.4}{}, macro-F1 {f1:.4} → {}",
                r.val_accuracy_tta
                    .map_or(String::new(), |t| format!(" (TTA {t:.4})")),
                r.head.display()
            ),
            _ => println!(
                "best refitted on the whole training side (no validation images to score it on) → {}",
                r.head.display()
            ),
        },
        None if all_failed => println!("(no head written: every configuration diverged)"),
        None => println!("(--no-refit: no head written)"),
    }
    println!(
        "leaderboard → {} (.csv, sweep.png), {:.1} s",
        a.out.join("leaderboard.json").display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn write_csv(path: &std::path::Path, b: &Leaderboard) -> Result<()> {
    let mut s = String::from(
        "rank,configuration,solver,views,lr,epochs,momentum,nesterov,weight_decay,batch_size,class_weight,l2,max_iter,accuracy_mean,accuracy_std,accuracy_ci95_lo,accuracy_ci95_hi,macro_f1_mean,macro_f1_std,accuracy_tta_mean,n_scores,seconds\n",
    );
    let o = |v: Option<String>| v.unwrap_or_default();
    for (rank, &i) in b.ranking().iter().enumerate() {
        let c = &b.configurations[i];
        let t = &c.settings;
        s += &format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{},{},{:.3}\n",
            rank + 1,
            i,
            t.solver,
            match t.views {
                ViewSelection::All => "all",
                ViewSelection::Eval => "eval",
            },
            o(t.lr.map(|v| v.to_string())),
            o(t.epochs.map(|v| v.to_string())),
            o(t.momentum.map(|v| v.to_string())),
            o(t.nesterov.map(|v| v.to_string())),
            o(t.weight_decay.map(|v| v.to_string())),
            o(t.batch_size.map(|v| v.to_string())),
            o(t.class_weight.map(|v| match v {
                ClassWeight::None => "none".into(),
                ClassWeight::Balanced => "balanced".into(),
            })),
            o(t.l2.map(|v| v.map_or("swept".into(), |x| x.to_string()))),
            o(t.max_iter.map(|v| v.to_string())),
            c.accuracy.mean,
            c.accuracy.std,
            c.accuracy.ci95[0],
            c.accuracy.ci95[1],
            c.macro_f1.mean,
            c.macro_f1.std,
            o(c.accuracy_tta.as_ref().map(|x| format!("{:.6}", x.mean))),
            c.accuracy.scores.len(),
            c.seconds
        );
    }
    Ok(headstart_cache::atomic::write_atomic(path, s.as_bytes())?)
}
