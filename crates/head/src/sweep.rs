//! Sweeps: a grid of training settings, each configuration scored by stratified K-fold
//! cross-validation by image on the training side, repeated over seeds — scikit-learn's
//! `GridSearchCV` on the cached features.
//!
//! - The split is train-head's (the dataset's `train/` and `val/`, or the seeded stratified one):
//!   folds are cut from its training side only; its validation side and any `test/` images are
//!   never looked at while scoring. Folds are by image, so an image's views never straddle them.
//! - Every (configuration, seed, fold) is one job. Jobs run in parallel and are independent and
//!   deterministic, so the scores do not depend on the number of threads.
//! - The rows are read once and shared by every job (in memory, or left in the shards as
//!   train-head streams them); a job sees its fold as a list of row indices.
//! - A job's score is written to `DIR/results/` as soon as it is known (atomically): a killed
//!   sweep, rerun with the same arguments, skips what was scored and ends with the same
//!   leaderboard. Other arguments into the same folder are refused with the differences.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use headstart_cache::CacheIndex;
use serde::{Deserialize, Serialize};

use crate::config::{Solver, TrainConfig, ValidSolver};
use crate::data::{Rows, ViewSelection};
use crate::lbfgs::{train_lbfgs, LbfgsParams};
use crate::linear::LinearHead;
use crate::metrics::Report;
use crate::rng::Shuffler;
use crate::sgd::{ClassWeight, SgdParams};
use crate::source::{load_rows, RowSource, Selection};
use crate::split::{split_cache, stratified};
use crate::train::train_sgd;
use crate::{Error, Result};

/// The lists a sweep takes the cartesian product of. SGD settings combine with SGD, the L2
/// penalty with L-BFGS; views go with both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepGrid {
    /// `sgd`, `lbfgs`.
    pub solvers: Vec<String>,
    /// SGD learning rates.
    pub lr: Vec<f64>,
    /// SGD epochs.
    pub epochs: Vec<usize>,
    /// SGD momentum.
    pub momentum: Vec<f64>,
    /// SGD Nesterov momentum.
    pub nesterov: Vec<bool>,
    /// SGD weight decay.
    pub weight_decay: Vec<f64>,
    /// SGD batch sizes.
    pub batch_size: Vec<usize>,
    /// SGD class weighting.
    pub class_weight: Vec<ClassWeight>,
    /// L-BFGS penalties (`None`: L-BFGS's own inner sweep on a slice of the fold's training
    /// images).
    pub l2: Vec<Option<f64>>,
    /// L-BFGS iteration limits.
    #[serde(default = "default_max_iter")]
    pub max_iter: Vec<usize>,
    /// Views of the training images that train.
    pub views: Vec<ViewSelection>,
}

impl Default for SweepGrid {
    /// One configuration: train-head's defaults.
    fn default() -> Self {
        let s = SgdParams::default();
        Self {
            solvers: vec!["sgd".into()],
            lr: vec![s.lr],
            epochs: vec![s.epochs],
            momentum: vec![s.momentum],
            nesterov: vec![s.nesterov],
            weight_decay: vec![s.weight_decay],
            batch_size: vec![s.batch_size],
            class_weight: vec![s.class_weight],
            l2: vec![None],
            max_iter: default_max_iter(),
            views: vec![ViewSelection::All],
        }
    }
}

fn default_max_iter() -> Vec<usize> {
    vec![LbfgsParams::default().max_iter]
}

/// Everything a sweep depends on besides the cache (recorded in `DIR/sweep.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepConfig {
    /// The grid.
    pub grid: SweepGrid,
    /// Repeats: each seed deals the folds anew ([`fold_seed`]) and seeds SGD's initialisation
    /// and shuffles, so every configuration is scored folds × seeds times.
    pub seeds: Vec<u64>,
    /// K of the K-fold cross-validation.
    pub folds: usize,
    /// train-head's split: the validation fraction (without `val/` folders) …
    pub val_fraction: f64,
    /// … and its seed (the folds use it too).
    pub split_seed: u64,
    /// Also score each fold with test-time augmentation on the cache (every cached view of an
    /// image averaged), when the cache has augmented views.
    #[serde(default)]
    pub val_tta: bool,
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            grid: SweepGrid::default(),
            seeds: vec![1],
            folds: 5,
            val_fraction: 0.2,
            split_seed: 43,
            val_tta: false,
        }
    }
}

/// One configuration's settings, flat (what `leaderboard.json` and `.csv` show).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// `sgd` or `lbfgs`.
    pub solver: String,
    /// Views of the training images.
    pub views: ViewSelection,
    /// SGD learning rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// SGD epochs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    /// SGD momentum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f64>,
    /// SGD Nesterov.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nesterov: Option<bool>,
    /// SGD weight decay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    /// SGD batch size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// SGD class weighting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_weight: Option<ClassWeight>,
    /// L-BFGS penalty (`null` in JSON: swept inside each fit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l2: Option<Option<f64>>,
    /// L-BFGS iteration limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_iter: Option<usize>,
}

impl Settings {
    /// The train-head configuration for these settings and `seed`, with the sweep's split.
    pub fn train_config(&self, seed: u64, cfg: &SweepConfig) -> TrainConfig {
        let solver = if self.solver == "lbfgs" {
            Solver::Lbfgs(LbfgsParams {
                l2: self.l2.flatten(),
                max_iter: self.max_iter.unwrap_or(LbfgsParams::default().max_iter),
                ..Default::default()
            })
        } else {
            let d = SgdParams::default();
            Solver::Sgd(SgdParams {
                lr: self.lr.unwrap_or(d.lr),
                momentum: self.momentum.unwrap_or(d.momentum),
                nesterov: self.nesterov.unwrap_or(d.nesterov),
                weight_decay: self.weight_decay.unwrap_or(d.weight_decay),
                batch_size: self.batch_size.unwrap_or(d.batch_size),
                epochs: self.epochs.unwrap_or(d.epochs),
                seed,
                class_weight: self.class_weight.unwrap_or(d.class_weight),
            })
        };
        TrainConfig {
            solver,
            views: self.views,
            val_fraction: cfg.val_fraction,
            seed: cfg.split_seed,
            val_tta: cfg.val_tta,
            ..Default::default()
        }
    }

    /// A short label (`sgd lr=0.001 epochs=20 …`).
    pub fn label(&self) -> String {
        let mut s = self.solver.clone();
        let mut add = |k: &str, v: String| s += &format!(" {k}={v}");
        if let Some(v) = self.lr {
            add("lr", format!("{v}"));
        }
        if let Some(v) = self.epochs {
            add("epochs", v.to_string());
        }
        if let Some(v) = self.momentum {
            add("momentum", format!("{v}"));
        }
        if let Some(true) = self.nesterov {
            add("nesterov", "true".into());
        }
        if let Some(v) = self.weight_decay {
            add("wd", format!("{v}"));
        }
        if let Some(v) = self.batch_size {
            add("batch", v.to_string());
        }
        if let Some(ClassWeight::Balanced) = self.class_weight {
            add("class-weight", "balanced".into());
        }
        if let Some(l2) = self.l2 {
            add("l2", l2.map_or("swept".into(), |v| format!("{v}")));
        }
        if let Some(v) = self.max_iter {
            if v != LbfgsParams::default().max_iter {
                add("max-iter", v.to_string());
            }
        }
        add(
            "views",
            match self.views {
                ViewSelection::All => "all".into(),
                ViewSelection::Eval => "eval".into(),
            },
        );
        s
    }
}

impl SweepConfig {
    /// Checks the lists and counts; every configuration's settings are checked too (as
    /// train-head checks them), so a bad value is named before any job runs.
    pub fn check(&self) -> Result<Vec<Settings>> {
        let bad =
            |param: &'static str, problem: String| Err(Error::InvalidParams { param, problem });
        if self.folds < 2 {
            return bad("folds", format!("{} must be at least 2", self.folds));
        }
        if self.seeds.is_empty() {
            return bad("seeds", "needs at least one seed".into());
        }
        let g = &self.grid;
        for (param, empty) in [
            ("solver", g.solvers.is_empty()),
            ("lr", g.lr.is_empty()),
            ("epochs", g.epochs.is_empty()),
            ("momentum", g.momentum.is_empty()),
            ("nesterov", g.nesterov.is_empty()),
            ("weight_decay", g.weight_decay.is_empty()),
            ("batch_size", g.batch_size.is_empty()),
            ("class_weight", g.class_weight.is_empty()),
            ("l2", g.l2.is_empty()),
            ("max_iter", g.max_iter.is_empty()),
            ("views", g.views.is_empty()),
        ] {
            if empty {
                return bad(param, "needs at least one value".into());
            }
        }
        fn repeated<T: Serialize>(v: &[T]) -> Option<String> {
            let keys: Vec<String> = v
                .iter()
                .map(|x| serde_json::to_string(x).unwrap_or_default())
                .collect();
            keys.iter()
                .enumerate()
                .find(|(i, k)| keys[..*i].contains(k))
                .map(|(_, k)| k.clone())
        }
        for (param, dup) in [
            ("seeds", repeated(&self.seeds)),
            ("solver", repeated(&g.solvers)),
            ("lr", repeated(&g.lr)),
            ("epochs", repeated(&g.epochs)),
            ("momentum", repeated(&g.momentum)),
            ("nesterov", repeated(&g.nesterov)),
            ("weight_decay", repeated(&g.weight_decay)),
            ("batch_size", repeated(&g.batch_size)),
            ("class_weight", repeated(&g.class_weight)),
            ("l2", repeated(&g.l2)),
            ("max_iter", repeated(&g.max_iter)),
            ("views", repeated(&g.views)),
        ] {
            if let Some(v) = dup {
                return bad(param, format!("lists {v} twice"));
            }
        }
        let mut out = Vec::new();
        for solver in &g.solvers {
            for &views in &g.views {
                match solver.as_str() {
                    "sgd" => {
                        for &lr in &g.lr {
                            for &epochs in &g.epochs {
                                for &momentum in &g.momentum {
                                    for &nesterov in &g.nesterov {
                                        for &weight_decay in &g.weight_decay {
                                            for &batch_size in &g.batch_size {
                                                for &class_weight in &g.class_weight {
                                                    out.push(Settings {
                                                        solver: "sgd".into(),
                                                        views,
                                                        lr: Some(lr),
                                                        epochs: Some(epochs),
                                                        momentum: Some(momentum),
                                                        nesterov: Some(nesterov),
                                                        weight_decay: Some(weight_decay),
                                                        batch_size: Some(batch_size),
                                                        class_weight: Some(class_weight),
                                                        l2: None,
                                                        max_iter: None,
                                                    });
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    "lbfgs" => {
                        for &l2 in &g.l2 {
                            for &max_iter in &g.max_iter {
                                out.push(Settings {
                                    solver: "lbfgs".into(),
                                    views,
                                    lr: None,
                                    epochs: None,
                                    momentum: None,
                                    nesterov: None,
                                    weight_decay: None,
                                    batch_size: None,
                                    class_weight: None,
                                    l2: Some(l2),
                                    max_iter: Some(max_iter),
                                });
                            }
                        }
                    }
                    other => {
                        return bad("solver", format!("`{other}` is not a solver (sgd, lbfgs)"))
                    }
                }
            }
        }
        if out.len() > MAX_CONFIGURATIONS {
            return Err(Error::Data(format!(
                "the grid has {} configurations, more than {MAX_CONFIGURATIONS}; narrow the lists",
                out.len()
            )));
        }
        // Each configuration as train-head would check it.
        for s in &out {
            s.train_config(self.seeds[0], self).check()?;
        }
        Ok(out)
    }
}

/// The most configurations one sweep runs.
pub const MAX_CONFIGURATIONS: usize = 10_000;

/// One job's outcome (a file in `DIR/results/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobScore {
    /// Index of the configuration.
    pub configuration: usize,
    /// The seed.
    pub seed: u64,
    /// The fold scored.
    pub fold: usize,
    /// Accuracy on the fold's images (eval view).
    pub accuracy: f64,
    /// Macro-F1 on them.
    pub macro_f1: f64,
    /// Accuracy with the probabilities averaged over every cached view of each image (when the
    /// cache has augmented views).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_tta: Option<f64>,
    /// Wall time of the job.
    pub seconds: f64,
    /// Why the job has no real score (training diverged): its scores are recorded as 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

/// Mean, spread and 95 % confidence interval of some scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (n − 1).
    pub std: f64,
    /// Student-t 95 % interval of the mean.
    pub ci95: [f64; 2],
    /// Every score, seed-major then fold.
    pub scores: Vec<f64>,
}

impl Summary {
    /// The summary of `scores`.
    pub fn of(scores: Vec<f64>) -> Self {
        let n = scores.len() as f64;
        let mean = scores.iter().sum::<f64>() / n.max(1.0);
        let std = if scores.len() > 1 {
            (scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        let half = if scores.len() > 1 {
            t975(scores.len() - 1) * std / n.sqrt()
        } else {
            0.0
        };
        Self {
            mean,
            std,
            ci95: [mean - half, mean + half],
            scores,
        }
    }
}

/// The 97.5 % quantile of Student's t with `df` degrees of freedom.
pub fn t975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        1..=30 => T[df - 1],
        31..=60 => 2.042 - (df - 30) as f64 * (2.042 - 2.000) / 30.0,
        61..=120 => 2.000 - (df - 60) as f64 * (2.000 - 1.980) / 60.0,
        _ => 1.960,
    }
}

/// One configuration's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigurationResult {
    /// Its settings.
    pub settings: Settings,
    /// Accuracy over folds × seeds.
    pub accuracy: Summary,
    /// Macro-F1 over folds × seeds.
    pub macro_f1: Summary,
    /// Accuracy with every cached view of an image averaged (when there are augmented views).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_tta: Option<Summary>,
    /// Seconds its jobs took, summed.
    pub seconds: f64,
    /// Why some of its jobs have no real score (training diverged); such configurations rank
    /// last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

/// `leaderboard.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Leaderboard {
    /// Every configuration, in grid order.
    pub configurations: Vec<ConfigurationResult>,
    /// Index of the best (highest mean accuracy; ties: macro-F1, then the first).
    pub best: usize,
    /// K.
    pub folds: usize,
    /// The seeds.
    pub seeds: Vec<u64>,
    /// Training-side images the folds were cut from.
    pub images: usize,
    /// The best configuration refitted on the whole training side, scored on the validation
    /// side (absent until refitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refit: Option<Refit>,
}

/// The sweep's best configuration refitted as an ordinary head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refit {
    /// The head directory.
    pub head: PathBuf,
    /// Its validation accuracy (`null` without validation images).
    pub val_accuracy: Option<f64>,
    /// Its validation macro-F1 (`null` without validation images).
    pub val_macro_f1: Option<f64>,
    /// Its validation accuracy with test-time augmentation on the cache (`val_tta`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_accuracy_tta: Option<f64>,
}

impl Leaderboard {
    /// Writes `dir/leaderboard.json` (atomically).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| Error::Data(e.to_string()))?;
        Ok(headstart_cache::atomic::write_atomic(
            &dir.join("leaderboard.json"),
            &bytes,
        )?)
    }
}

impl Leaderboard {
    /// Configuration indices, best first.
    pub fn ranking(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.configurations.len()).collect();
        order.sort_by(|&a, &b| {
            let (x, y) = (&self.configurations[a], &self.configurations[b]);
            x.failed
                .is_some()
                .cmp(&y.failed.is_some())
                .then(y.accuracy.mean.total_cmp(&x.accuracy.mean))
                .then(y.macro_f1.mean.total_cmp(&x.macro_f1.mean))
                .then(a.cmp(&b))
        });
        order
    }
}

/// What a sweep run reports as it goes.
#[derive(Debug, Clone, Copy)]
pub enum SweepEvent<'a> {
    /// The jobs are known: how many in all, how many were scored by an earlier run.
    Started {
        /// Jobs in the sweep.
        jobs: usize,
        /// Of those, already in `results/`.
        done: usize,
        /// Training-side images.
        images: usize,
    },
    /// A job finished.
    Scored(&'a JobScore),
}

/// The folder's record of the sweep (`DIR/sweep.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SweepRecord {
    format: String,
    config: SweepConfig,
    cache_manifest_sha256: String,
}

const SWEEP_FORMAT: &str = "headstart-sweep";

/// Stratified K-fold of the training side by image: per class, a seeded shuffle deals the
/// images to the folds in turn. Returns each image's fold (`usize::MAX` off the training side).
pub fn folds_by_image(
    train: &[usize],
    labels: &[u32],
    images: usize,
    k: usize,
    seed: u64,
) -> Vec<usize> {
    let mut by_class: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for &i in train {
        by_class.entry(labels[i]).or_default().push(i);
    }
    let mut fold = vec![usize::MAX; images];
    // Classes continue the deal where the previous one stopped, so folds stay balanced in size.
    let mut next = 0usize;
    for (label, mut imgs) in by_class {
        imgs.sort_unstable();
        Shuffler::new(seed, 0xF01D_0000 + label as u64).shuffle(&mut imgs);
        for i in imgs {
            fold[i] = next % k;
            next += 1;
        }
    }
    fold
}

/// The rows of one fold's job, as indices into the shared rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoldRows {
    /// Rows that train: the selected views of every training-side image outside the fold.
    pub train: Vec<u32>,
    /// Rows scored: the eval view of each image in the fold.
    pub scored: Vec<u32>,
    /// Every cached view of each image in the fold (test-time augmentation on the cache).
    pub all_views: Vec<u32>,
}

/// Splits `rows` for fold `fold` by image (`fold_of[image]`): an image's views all land on
/// the same side, so no view of a scored image ever trains.
pub fn fold_rows(
    rows: &dyn RowSource,
    fold_of: &[usize],
    fold: usize,
    views: ViewSelection,
) -> FoldRows {
    let (mut train, mut scored, mut all_views) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..rows.len() {
        let img = rows.image(i).expect("sweep rows keep their image");
        let view = rows.view(i).unwrap_or(0);
        if fold_of[img] == fold {
            all_views.push(i as u32);
            if view == 0 {
                scored.push(i as u32);
            }
        } else if views == ViewSelection::All || view == 0 {
            train.push(i as u32);
        }
    }
    FoldRows {
        train,
        scored,
        all_views,
    }
}

/// Rows of a shared source picked by index: what one job trains or scores on.
pub(crate) struct Subset<'a> {
    pub(crate) base: &'a dyn RowSource,
    pub(crate) idx: Vec<u32>,
}

impl RowSource for Subset<'_> {
    fn len(&self) -> usize {
        self.idx.len()
    }
    fn dim(&self) -> usize {
        self.base.dim()
    }
    fn label(&self, i: usize) -> u32 {
        self.base.label(self.idx[i] as usize)
    }
    fn image(&self, i: usize) -> Option<usize> {
        self.base.image(self.idx[i] as usize)
    }
    fn view(&self, i: usize) -> Option<u32> {
        self.base.view(self.idx[i] as usize)
    }
    fn gather(&self, idx: &[u32], out: &mut Vec<f32>) -> Result<()> {
        let mapped: Vec<u32> = idx.iter().map(|&i| self.idx[i as usize]).collect();
        self.base.gather(&mapped, out)
    }
    fn in_memory(&self) -> Option<&Rows> {
        None
    }
}

impl Subset<'_> {
    /// The rows copied into memory (L-BFGS needs them there).
    fn materialise(&self) -> Result<Rows> {
        let mut x = Vec::with_capacity(self.len() * self.dim());
        self.base.gather(&self.idx, &mut x)?;
        Ok(Rows {
            dim: self.dim(),
            x,
            y: (0..self.len()).map(|i| self.label(i)).collect(),
            image: (0..self.len())
                .map(|i| self.image(i).unwrap_or(0))
                .collect(),
            view: (0..self.len()).map(|i| self.view(i).unwrap_or(0)).collect(),
        })
    }
}

/// A sweep's folder, created if missing and locked for as long as this lives (a second sweep
/// there is refused, naming the first): the scoring, the refit and the leaderboard's last write
/// all happen under the lock.
#[derive(Debug)]
pub struct SweepDir {
    dir: PathBuf,
    _lock: headstart_cache::lock::DirLock,
}

impl SweepDir {
    /// Opens (creates) and locks `dir`; it must be a real folder, not a link.
    pub fn open(dir: &Path) -> Result<Self> {
        headstart_cache::safe_fs::ensure_real_dir(dir).map_err(|e| Error::io(dir, e))?;
        let (lock, _) = headstart_cache::lock::DirLock::acquire(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

/// The folds of repeat `seed`: each seed deals the images to the folds anew (scikit-learn's
/// `RepeatedStratifiedKFold`), so repeating over seeds varies the folds as well as the heads.
pub fn fold_seed(split_seed: u64, seed: u64) -> u64 {
    headstart_core::rng::SplitMix64::new(split_seed, 0xF01D_5EED ^ seed).next_u64()
}

/// Runs the sweep `cfg` on `cache` in `dir` and returns the leaderboard (also written as
/// `leaderboard.json`). `memory_budget` is train-head's: beyond it the rows are left in the
/// shards; L-BFGS, which copies its fold's rows into one matrix, runs only as many fits at once
/// as the budget holds, and refuses a training side that does not fit at all.
pub fn run_sweep(
    cache: &CacheIndex,
    cfg: &SweepConfig,
    dir: &SweepDir,
    memory_budget: u64,
    on_event: &(dyn Fn(SweepEvent<'_>) + Sync),
) -> Result<Leaderboard> {
    let settings = cfg.check()?;
    let dir = dir.path();
    let results = dir.join("results");
    let record = check_record(dir, cfg, &cache.manifest_sha256)?;

    let classes = cache.classes().to_vec();
    let split = split_cache(&cache.images, &classes, cfg.val_fraction, cfg.split_seed)?;
    if split.train.len() < cfg.folds {
        return Err(Error::Data(format!(
            "the training side has {} images, fewer than the {} folds; use fewer folds",
            split.train.len(),
            cfg.folds
        )));
    }
    let fold_of: BTreeMap<u64, Vec<usize>> = cfg
        .seeds
        .iter()
        .map(|&seed| {
            (
                seed,
                folds_by_image(
                    &split.train,
                    &cache.images.label,
                    cache.images.len(),
                    cfg.folds,
                    fold_seed(cfg.split_seed, seed),
                ),
            )
        })
        .collect();
    // Every view of every training-side image, read once, shared by every job.
    let selection = Selection {
        train: &split.train,
        val: &[],
        views: ViewSelection::All,
        with_images: true,
    };
    let lbfgs = settings.iter().any(|s| s.solver == "lbfgs");
    let all_bytes = selection.bytes(cache);
    let rows = load_rows(cache, &selection, memory_budget, lbfgs.then_some("L-BFGS"))?;
    // L-BFGS copies a fold's training rows (about (K − 1)/K of them): as many at once as fit
    // beside the shared rows.
    let fold_bytes = (all_bytes / cfg.folds as u64 * (cfg.folds as u64 - 1)).max(1);
    let lbfgs_slots = Slots::new(
        (memory_budget.saturating_sub(if rows.streamed { 0 } else { all_bytes }) / fold_bytes)
            .max(1) as usize,
    );
    let all = &*rows.train;
    record.write_if_new()?;
    headstart_cache::safe_fs::ensure_real_dir(&results).map_err(|e| Error::io(&results, e))?;
    let views_per_image = cache.settings().augment.views as usize + 1;

    let jobs: Vec<(usize, u64, usize)> = (0..settings.len())
        .flat_map(|c| {
            cfg.seeds
                .iter()
                .flat_map(move |&s| (0..cfg.folds).map(move |f| (c, s, f)))
        })
        .collect();
    let path_of = |(c, s, f): (usize, u64, usize)| results.join(format!("c{c:05}-s{s}-f{f}.json"));
    // A result that cannot be read, or that is not this job's, is simply run again.
    let read_done = |j: (usize, u64, usize)| -> Option<JobScore> {
        let b = headstart_cache::safe_fs::read_regular(&path_of(j), 1 << 20).ok()?;
        let s: JobScore = serde_json::from_slice(&b).ok()?;
        let finite = [s.accuracy, s.macro_f1]
            .iter()
            .all(|v| (0.0..=1.0).contains(v));
        ((s.configuration, s.seed, s.fold) == j && finite).then_some(s)
    };
    let done: Vec<Option<JobScore>> = jobs.iter().map(|&j| read_done(j)).collect();
    on_event(SweepEvent::Started {
        jobs: jobs.len(),
        done: done.iter().flatten().count(),
        images: split.train.len(),
    });

    use rayon::prelude::*;
    let scored: Vec<Result<JobScore>> = jobs
        .par_iter()
        .zip(done.into_par_iter())
        .map(|(&(c, seed, fold), done)| {
            if let Some(s) = done {
                return Ok(s);
            }
            let t0 = std::time::Instant::now();
            let s = &settings[c];
            let FoldRows {
                train: train_idx,
                scored: val_idx,
                all_views: tta_idx,
            } = fold_rows(all, &fold_of[&seed], fold, s.views);
            let train = Subset {
                base: all,
                idx: train_idx,
            };
            let val = Subset {
                base: all,
                idx: val_idx,
            };
            let config = s.train_config(seed, cfg).check()?;
            let fitted = match config.solver() {
                ValidSolver::Sgd(p) => {
                    let none = Subset {
                        base: all,
                        idx: Vec::new(),
                    };
                    train_sgd(&train, &none, classes.len(), p, &mut |_| {}).map(|r| r.0)
                }
                ValidSolver::Lbfgs(p) => {
                    let _slot = lbfgs_slots.take();
                    let tr = train.materialise()?;
                    // The inner L2 sweep (when λ is not given) uses a slice of the fold's
                    // training images, by image as train-head does.
                    let mut pairs: Vec<(usize, usize)> = tr
                        .image
                        .iter()
                        .zip(&tr.y)
                        .map(|(&i, &y)| (i, y as usize))
                        .collect();
                    pairs.sort_unstable();
                    pairs.dedup();
                    // train-head's rule (the split seed), so the refit picks λ as the jobs do.
                    let inner = stratified(
                        &pairs,
                        config.sweep_val_fraction,
                        config.seed ^ crate::training::SWEEP_SPLIT_STREAM,
                    );
                    let sweep_train = tr.filter(&inner.train, s.views);
                    let sweep_val = tr.filter(&inner.val, ViewSelection::Eval);
                    train_lbfgs(&tr, &sweep_train, &sweep_val, classes.len(), p).map(|r| r.0)
                }
            };
            let score = match fitted {
                Ok(head) => {
                    let (accuracy, macro_f1) = score_fold(&head, &val, &classes)?;
                    let accuracy_tta = if cfg.val_tta && views_per_image > 1 {
                        let fold_views = Subset {
                            base: all,
                            idx: tta_idx,
                        };
                        Some(tta_accuracy(&head, &fold_views)?)
                    } else {
                        None
                    };
                    JobScore {
                        configuration: c,
                        seed,
                        fold,
                        accuracy,
                        macro_f1,
                        accuracy_tta,
                        seconds: t0.elapsed().as_secs_f64(),
                        failed: None,
                    }
                }
                // A configuration that diverges is a result of the sweep, not its end.
                Err(e @ Error::Diverged { .. }) => JobScore {
                    configuration: c,
                    seed,
                    fold,
                    accuracy: 0.0,
                    macro_f1: 0.0,
                    accuracy_tta: (cfg.val_tta && views_per_image > 1).then_some(0.0),
                    seconds: t0.elapsed().as_secs_f64(),
                    failed: Some(e.to_string()),
                },
                Err(e) => return Err(e),
            };
            let bytes = serde_json::to_vec(&score).map_err(|e| Error::Data(e.to_string()))?;
            headstart_cache::atomic::write_atomic(&path_of((c, seed, fold)), &bytes)?;
            on_event(SweepEvent::Scored(&score));
            Ok(score)
        })
        .collect();
    let scored = scored.into_iter().collect::<Result<Vec<_>>>()?;

    let mut configurations = Vec::with_capacity(settings.len());
    for (c, s) in settings.into_iter().enumerate() {
        let mine: Vec<&JobScore> = scored.iter().filter(|j| j.configuration == c).collect();
        let tta: Vec<f64> = mine.iter().filter_map(|j| j.accuracy_tta).collect();
        configurations.push(ConfigurationResult {
            settings: s,
            accuracy: Summary::of(mine.iter().map(|j| j.accuracy).collect()),
            macro_f1: Summary::of(mine.iter().map(|j| j.macro_f1).collect()),
            accuracy_tta: (tta.len() == mine.len() && !tta.is_empty()).then(|| Summary::of(tta)),
            seconds: mine.iter().map(|j| j.seconds).sum(),
            failed: mine.iter().find_map(|j| j.failed.clone()),
        });
    }
    let mut board = Leaderboard {
        configurations,
        best: 0,
        folds: cfg.folds,
        seeds: cfg.seeds.clone(),
        images: split.train.len(),
        refit: None,
    };
    board.best = board.ranking()[0];
    board.write(dir)?;
    Ok(board)
}

/// Accuracy and macro-F1 of `head` on `rows` (eval views).
fn score_fold(head: &LinearHead, rows: &dyn RowSource, classes: &[String]) -> Result<(f64, f64)> {
    let (_, _, pred) = crate::train::score_source(head, rows)?;
    let truth: Vec<usize> = (0..rows.len()).map(|i| rows.label(i) as usize).collect();
    let r = Report::new(classes, &truth, &pred);
    Ok((r.accuracy, r.macro_f1))
}

/// Accuracy when each image's class is the argmax of its probabilities averaged over all its
/// cached views.
pub(crate) fn tta_accuracy(head: &LinearHead, rows: &dyn RowSource) -> Result<f64> {
    let by_image = crate::train::mean_probabilities_by_image(head, rows)?;
    if by_image.is_empty() {
        return Ok(0.0);
    }
    let correct = by_image
        .values()
        .filter(|(y, p)| crate::train::argmax(p) == *y as usize)
        .count();
    Ok(correct as f64 / by_image.len() as f64)
}

/// `DIR/sweep.json` checked against this sweep, to be written once the sweep is known to run.
struct PendingRecord {
    path: PathBuf,
    bytes: Option<Vec<u8>>,
}

impl PendingRecord {
    fn write_if_new(&self) -> Result<()> {
        match &self.bytes {
            Some(b) => Ok(headstart_cache::atomic::write_atomic(&self.path, b)?),
            None => Ok(()),
        }
    }
}

/// Checks that the `DIR/sweep.json` there (if any) is this sweep's, naming every setting that
/// differs; a new folder's record is written later ([`PendingRecord::write_if_new`]), after the
/// split and the rows are known to be fine.
fn check_record(dir: &Path, cfg: &SweepConfig, manifest_sha256: &str) -> Result<PendingRecord> {
    let path = dir.join("sweep.json");
    let mine = SweepRecord {
        format: SWEEP_FORMAT.into(),
        config: cfg.clone(),
        cache_manifest_sha256: manifest_sha256.into(),
    };
    match headstart_cache::safe_fs::read_regular(&path, 16 << 20) {
        Ok(bytes) => {
            let theirs: SweepRecord =
                serde_json::from_slice(&bytes).map_err(|e| Error::BadHead {
                    path: path.clone(),
                    reason: format!("not a sweep record: {e}"),
                })?;
            let mut diffs = Vec::new();
            let j = |v: &dyn erased::Json| v.json();
            let (a, b) = (&theirs.config, &mine.config);
            let (ga, gb) = (&a.grid, &b.grid);
            for (name, x, y) in [
                ("solver", j(&ga.solvers), j(&gb.solvers)),
                ("lr", j(&ga.lr), j(&gb.lr)),
                ("epochs", j(&ga.epochs), j(&gb.epochs)),
                ("momentum", j(&ga.momentum), j(&gb.momentum)),
                ("nesterov", j(&ga.nesterov), j(&gb.nesterov)),
                ("weight-decay", j(&ga.weight_decay), j(&gb.weight_decay)),
                ("batch-size", j(&ga.batch_size), j(&gb.batch_size)),
                ("class-weight", j(&ga.class_weight), j(&gb.class_weight)),
                ("l2", j(&ga.l2), j(&gb.l2)),
                ("max-iter", j(&ga.max_iter), j(&gb.max_iter)),
                ("views", j(&ga.views), j(&gb.views)),
                ("seeds", j(&a.seeds), j(&b.seeds)),
                ("folds", j(&a.folds), j(&b.folds)),
                ("val-fraction", j(&a.val_fraction), j(&b.val_fraction)),
                ("split-seed", j(&a.split_seed), j(&b.split_seed)),
                ("val-tta", j(&a.val_tta), j(&b.val_tta)),
                (
                    "cache",
                    theirs.cache_manifest_sha256.clone(),
                    mine.cache_manifest_sha256.clone(),
                ),
            ] {
                if x != y {
                    diffs.push(format!("{name}: the folder's sweep has {x}, this one {y}"));
                }
            }
            if diffs.is_empty() {
                Ok(PendingRecord { path, bytes: None })
            } else {
                Err(Error::SweepMismatch {
                    path: dir.to_path_buf(),
                    differences: diffs,
                })
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let bytes = serde_json::to_vec_pretty(&mine).map_err(|e| Error::Data(e.to_string()))?;
            Ok(PendingRecord {
                path,
                bytes: Some(bytes),
            })
        }
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// A counting semaphore: at most `n` holders at once.
struct Slots {
    free: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
}

/// One held slot, given back when dropped.
struct Slot<'a>(&'a Slots);

impl Slots {
    fn new(n: usize) -> Self {
        Self {
            free: std::sync::Mutex::new(n),
            freed: std::sync::Condvar::new(),
        }
    }

    fn take(&self) -> Slot<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

/// Where a sweep's best head is published.
pub fn best_dir(dir: &Path) -> PathBuf {
    dir.join("best")
}

mod erased {
    /// Anything serialisable to compact JSON.
    pub trait Json {
        fn json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> String {
            serde_json::to_string(self).unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_are_by_image_stratified_and_seeded() {
        let labels: Vec<u32> = (0..100).map(|i| (i % 4) as u32).collect();
        let train: Vec<usize> = (0..90).collect();
        let f = folds_by_image(&train, &labels, 100, 5, 7);
        assert_eq!(f, folds_by_image(&train, &labels, 100, 5, 7));
        assert!(f[90..].iter().all(|&x| x == usize::MAX));
        for k in 0..5 {
            let n = f.iter().filter(|&&x| x == k).count();
            assert!((17..=19).contains(&n), "fold {k}: {n}");
            for c in 0..4 {
                let per = train
                    .iter()
                    .filter(|&&i| f[i] == k && labels[i] == c)
                    .count();
                assert!((4..=5).contains(&per), "fold {k} class {c}: {per}");
            }
        }
    }

    #[test]
    fn the_grid_is_a_cartesian_product_per_solver() {
        let cfg = SweepConfig {
            grid: SweepGrid {
                solvers: vec!["sgd".into(), "lbfgs".into()],
                lr: vec![1e-3, 1e-2],
                epochs: vec![10, 20],
                l2: vec![Some(1e-3), None],
                views: vec![ViewSelection::All, ViewSelection::Eval],
                ..Default::default()
            },
            ..Default::default()
        };
        let s = cfg.check().unwrap();
        // SGD: 2 views × 2 lr × 2 epochs; L-BFGS: 2 views × 2 l2.
        assert_eq!(s.len(), 8 + 4);
        assert!(SweepConfig {
            folds: 1,
            ..Default::default()
        }
        .check()
        .is_err());
    }

    #[test]
    fn summaries_use_the_t_interval() {
        let s = Summary::of(vec![0.8, 0.9, 1.0]);
        assert!((s.mean - 0.9).abs() < 1e-12);
        assert!((s.std - 0.1).abs() < 1e-12);
        let half = 4.303 * 0.1 / 3f64.sqrt();
        assert!((s.ci95[1] - (0.9 + half)).abs() < 1e-9);
    }

    #[test]
    fn no_view_of_a_scored_image_ever_trains() {
        // 40 images × 3 views, rows in shard order (interleaved).
        let mut rows = Rows {
            dim: 1,
            ..Default::default()
        };
        for v in 0..3u32 {
            for img in 0..40usize {
                rows.x.push(img as f32);
                rows.y.push((img % 2) as u32);
                rows.image.push(img);
                rows.view.push(v);
            }
        }
        let labels: Vec<u32> = (0..40).map(|i| (i % 2) as u32).collect();
        let train: Vec<usize> = (0..40).collect();
        let fold_of = folds_by_image(&train, &labels, 40, 4, 1);
        let mut scored_total = 0;
        for fold in 0..4 {
            for views in [ViewSelection::All, ViewSelection::Eval] {
                let f = fold_rows(&rows, &fold_of, fold, views);
                let img = |i: &u32| rows.image[*i as usize];
                let trained: std::collections::HashSet<usize> = f.train.iter().map(img).collect();
                assert!(f
                    .scored
                    .iter()
                    .chain(&f.all_views)
                    .all(|i| !trained.contains(&img(i))));
                assert!(f.scored.iter().all(|&i| rows.view[i as usize] == 0));
                assert_eq!(f.all_views.len(), 3 * f.scored.len());
                let per_image = if views == ViewSelection::All { 3 } else { 1 };
                assert_eq!(f.train.len(), per_image * (40 - f.scored.len()));
                if views == ViewSelection::All {
                    scored_total += f.scored.len();
                }
            }
        }
        // Every image is scored exactly once over the folds.
        assert_eq!(scored_total, 40);
    }
}
