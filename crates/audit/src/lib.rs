//! Looking at a dataset through its feature cache: the embeddings are already there, so the
//! checks that Python tools (cleanlab, FiftyOne, fastdup) recompute embeddings for cost a pass
//! over the cache.
//!
//! - [`features`]: the eval view of every usable image, L2-normalised, with its path, hash,
//!   class and side of train-head's split.
//! - [`similarity`]: one exact, blocked pass over all pairs (cosine): nearest same-class
//!   neighbours and clusters above a threshold; [`similarity::nearest`] for queries.
//! - [`duplicates`]: exact (same bytes) and near duplicates, flagged when they leak across the
//!   split or carry different labels.
//! - [`labels`]: likely label errors from out-of-fold probabilities (confident learning).
//! - [`outliers`]: images far from every neighbour of their class.
//! - [`projection`]: PCA and t-SNE maps.
//!
//! [`audit`] runs them all from a checked [`AuditConfig`] and returns an [`AuditReport`]
//! (`audit.json`).

pub mod duplicates;
pub mod error;
pub mod features;
pub mod labels;
pub mod outliers;
pub mod projection;
pub mod similarity;

use std::path::PathBuf;

use headstart_cache::CacheIndex;
use headstart_head::oof::{out_of_fold, OofConfig};
use serde::Serialize;

pub use duplicates::DuplicateCluster;
pub use error::{Error, Result};
pub use features::{EvalRows, Side};
pub use labels::LabelIssue;
pub use outliers::Outlier;

/// The default near-duplicate threshold on the cosine similarity of eval-view features; see
/// docs/audit.md for how it was chosen (re-encoded, resized and cropped copies of real photos
/// against the closest distinct photos).
pub const DEFAULT_DUP_THRESHOLD: f32 = 0.90;

/// The audit's settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditConfig {
    /// Cosine similarity at or above which two images are near duplicates.
    pub dup_threshold: f32,
    /// K of the K-fold that gives the out-of-fold probabilities.
    pub folds: usize,
    /// Seed of the folds and of the heads.
    pub seed: u64,
    /// Same-class neighbours an outlier score averages.
    pub outlier_k: usize,
    /// train-head's validation fraction (for the sides that leakage is judged on)…
    pub val_fraction: f64,
    /// … and its split seed.
    pub split_seed: u64,
    /// Bytes the rows may take in memory.
    pub memory_budget: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            dup_threshold: DEFAULT_DUP_THRESHOLD,
            folds: 5,
            seed: 43,
            outlier_k: 5,
            val_fraction: 0.2,
            split_seed: 43,
            memory_budget: headstart_head::DEFAULT_MEMORY_BUDGET,
        }
    }
}

impl AuditConfig {
    /// Checks every setting before any work.
    pub fn check(&self) -> Result<()> {
        let bad =
            |param: &'static str, problem: String| Err(Error::InvalidParams { param, problem });
        if !(self.dup_threshold > 0.0 && self.dup_threshold <= 1.0) {
            return bad(
                "dup_threshold",
                format!("{} must be in (0, 1]", self.dup_threshold),
            );
        }
        if !(2..=100).contains(&self.folds) {
            return bad("folds", format!("{} must be 2 to 100", self.folds));
        }
        if !(1..=1000).contains(&self.outlier_k) {
            return bad("outlier_k", format!("{} must be 1 to 1000", self.outlier_k));
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return bad(
                "val_fraction",
                format!("{} must be in [0, 1)", self.val_fraction),
            );
        }
        Ok(())
    }
}

/// Counts of each kind of finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Images audited.
    pub images: usize,
    /// Duplicate clusters (exact and near).
    pub duplicate_clusters: usize,
    /// Of those, byte-identical.
    pub exact_clusters: usize,
    /// Images in duplicate clusters beyond the first of each (what removing copies removes).
    pub redundant_images: usize,
    /// Clusters spanning train/val/test.
    pub leaking_clusters: usize,
    /// Clusters spanning classes.
    pub conflicting_clusters: usize,
    /// Likely label errors.
    pub label_issues: usize,
    /// Outliers.
    pub outliers: usize,
}

/// `audit.json`.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// `headstart-audit`.
    pub format: &'static str,
    /// The cache audited.
    pub cache: PathBuf,
    /// sha256 of its manifest.
    pub cache_manifest_sha256: String,
    /// Its backbone.
    pub backbone: String,
    /// Class names.
    pub classes: Vec<String>,
    /// The settings.
    pub settings: AuditConfig,
    /// Counts.
    pub summary: Summary,
    /// Duplicate clusters, leaking and conflicting first.
    pub duplicates: Vec<DuplicateCluster>,
    /// Likely label errors, most suspicious first.
    pub label_issues: Vec<LabelIssue>,
    /// Outliers, most outlying first.
    pub outliers: Vec<Outlier>,
    /// The outlier cut-off on the score (median + 3 robust standard deviations).
    pub outlier_cutoff: f32,
    /// What could not be checked, and why.
    pub notes: Vec<String>,
}

/// The steps of an audit, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Reading and normalising the features.
    Loading,
    /// The similarity pass: `done` of `total` rows.
    Similarity {
        /// Rows done.
        done: usize,
        /// Rows in all.
        total: usize,
    },
    /// Training the out-of-fold heads: `done` of `total` folds (0 when they start).
    Folds {
        /// Folds done.
        done: usize,
        /// Folds in all.
        total: usize,
    },
}

/// Audits `cache` (its reader lock is held by the caller's [`CacheIndex`]).
pub fn audit(
    cache: &CacheIndex,
    cfg: &AuditConfig,
    on_step: &(dyn Fn(Step) + Sync),
) -> Result<AuditReport> {
    cfg.check()?;
    on_step(Step::Loading);
    let rows = EvalRows::load(cache, cfg.val_fraction, cfg.split_seed, cfg.memory_budget)?;
    let total = rows.len();
    let scan = similarity::scan(&rows, cfg.outlier_k, cfg.dup_threshold, &|done| {
        on_step(Step::Similarity { done, total })
    })?;
    let duplicates = duplicates::clusters(&rows, scan.clusters.clone());
    let (outliers, outlier_cutoff) = outliers::outliers(&rows, &scan.same_class);
    let mut notes = Vec::new();
    let mut label_issues = Vec::new();
    let classes = rows.classes.len();
    let singletons: Vec<&str> = (0..classes)
        .filter(|&c| rows.label.iter().filter(|&&l| l as usize == c).count() == 1)
        .map(|c| rows.classes[c].as_str())
        .collect();
    if !singletons.is_empty() {
        notes.push(format!(
            "class(es) with a single image: {} — no neighbour to judge it by (listed as outliers with score 1), and its fold's head never saw the class",
            singletons.join(", ")
        ));
    }
    if classes < 2 {
        notes.push("one class only: no label can be wrong, so no label issues are searched".into());
    } else if total < cfg.folds {
        notes.push(format!(
            "{total} images is fewer than the {} folds: no label issues are searched",
            cfg.folds
        ));
    } else {
        on_step(Step::Folds {
            done: 0,
            total: cfg.folds,
        });
        let done = std::sync::atomic::AtomicUsize::new(0);
        let oof = out_of_fold(
            cache,
            &OofConfig {
                folds: cfg.folds,
                seed: cfg.seed,
                memory_budget: cfg.memory_budget,
                ..Default::default()
            },
            &|_| {
                let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                on_step(Step::Folds {
                    done: d,
                    total: cfg.folds,
                })
            },
        )?;
        let at: std::collections::HashMap<usize, usize> = oof
            .images
            .iter()
            .enumerate()
            .map(|(k, &i)| (i, k))
            .collect();
        let probs: Vec<Vec<f32>> = rows
            .image
            .iter()
            .map(|i| oof.probabilities[at[i]].clone())
            .collect();
        label_issues = labels::label_issues(&rows, &probs);
    }
    let summary = Summary {
        images: total,
        duplicate_clusters: duplicates.len(),
        exact_clusters: duplicates.iter().filter(|d| d.exact).count(),
        redundant_images: duplicates.iter().map(|d| d.paths.len() - 1).sum(),
        leaking_clusters: duplicates.iter().filter(|d| d.cross_split).count(),
        conflicting_clusters: duplicates.iter().filter(|d| d.cross_class).count(),
        label_issues: label_issues.len(),
        outliers: outliers.len(),
    };
    Ok(AuditReport {
        format: "headstart-audit",
        cache: cache.dir.clone(),
        cache_manifest_sha256: cache.manifest_sha256.clone(),
        backbone: cache.settings().backbone.name.clone(),
        classes: rows.classes.clone(),
        settings: cfg.clone(),
        summary,
        duplicates,
        label_issues,
        outliers,
        outlier_cutoff,
        notes,
    })
}

/// `audit.csv`: one row per finding — `kind,paths,labels,splits,score,suggestion`; paths and
/// labels of a cluster joined with `|`.
pub fn to_csv(r: &AuditReport) -> String {
    let q = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut out = String::from("kind,paths,labels,splits,score,suggestion\n");
    for d in &r.duplicates {
        let kind = match (d.exact, d.cross_split, d.cross_class) {
            (_, _, true) => "duplicate-conflicting-labels",
            (_, true, _) => "duplicate-leaking",
            (true, _, _) => "duplicate-exact",
            _ => "duplicate-near",
        };
        out += &format!(
            "{kind},{},{},{},{:.6},\n",
            q(&d.paths.join("|")),
            q(&d.labels.join("|")),
            q(&d.splits.join("|")),
            d.similarity
        );
    }
    for l in &r.label_issues {
        out += &format!(
            "label-issue,{},{},{},{:.6},{}\n",
            q(&l.path),
            q(&l.label),
            l.split,
            l.score,
            q(&l.suggested)
        );
    }
    for o in &r.outliers {
        out += &format!(
            "outlier,{},{},{},{:.6},\n",
            q(&o.path),
            q(&o.label),
            o.split,
            o.score
        );
    }
    out
}
