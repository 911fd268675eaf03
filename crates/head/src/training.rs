//! Training a head on a feature cache as one library call: a typed, serialisable
//! [`TrainConfig`] in, a [`TrainReport`] out (burn's `TrainingConfig` saved beside the model is
//! the model for this). The same config is what `run.json` and the head's metadata record, so
//! reproducing a head means reading a type, not a JSON blob.

use headstart_cache::CacheIndex;

use crate::checkpoint::{HeadCheckpoint, HeadMetadata};
pub use crate::config::{
    Solver, SplitSummary, TrainConfig, ValMetrics, ValidSolver, ValidTrainConfig,
};
use crate::data::ViewSelection;
use crate::history::EpochRecord;
use crate::lbfgs::{train_lbfgs, LbfgsReport};
use crate::linear::LinearHead;
use crate::metrics::Report;
use crate::source::{load_rows, Selection, DEFAULT_MEMORY_BUDGET};
use crate::split::{split_cache, stratified};
use crate::train::{
    argmax, mean_probabilities_by_image, probabilities_source, score, score_source, train_sgd,
};
use crate::validation::{ValPrediction, ValidationFile};
use crate::{Error, Result};

/// The stream that separates the sweep's inner split from the outer one (same seed).
pub(crate) const SWEEP_SPLIT_STREAM: u64 = 0x5EEB;

/// Resources a training run may use (they never change the result).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainLimits {
    /// Bytes the selected rows may take in memory; beyond, SGD streams them from the shards
    /// (same head, bounded memory) and L-BFGS refuses.
    pub memory_budget: u64,
}

impl Default for TrainLimits {
    fn default() -> Self {
        Self {
            memory_budget: DEFAULT_MEMORY_BUDGET,
        }
    }
}

/// What a training run produced.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// The trained head.
    pub head: LinearHead,
    /// The settings it was trained with.
    pub config: TrainConfig,
    /// Class names, in output order.
    pub classes: Vec<String>,
    /// Per-epoch records (SGD); for L-BFGS a single record: the final fit's scores.
    pub history: Vec<EpochRecord>,
    /// The L-BFGS fit and its penalty sweep.
    pub lbfgs: Option<LbfgsReport>,
    /// The split.
    pub split: SplitSummary,
    /// Accuracy, confusion and per-class metrics on the validation images.
    pub report: Report,
    /// The same, summarised (None without validation images).
    pub val_metrics: Option<ValMetrics>,
    /// sha256 of the cache's `manifest.json`, for provenance.
    pub cache_manifest_sha256: String,
    /// Whether the rows were streamed from the shards (over the memory budget).
    pub rows_streamed: bool,
    /// The head's prediction for every validation image (`validation.json`).
    pub validation: ValidationFile,
}

impl TrainReport {
    /// The head with its metadata, ready to save.
    pub fn checkpoint(&self, cache: &CacheIndex) -> HeadCheckpoint {
        let s = cache.settings();
        HeadCheckpoint {
            head: self.head.clone(),
            meta: HeadMetadata {
                classes: self.classes.clone(),
                backbone: s.backbone.clone(),
                weights_sha256: s.weights_sha256.clone(),
                feature_dim: s.feature_dim,
                config: Some(self.config.clone()),
                val_metrics: self.val_metrics.clone(),
                weights_file: s.weights_file.clone(),
            },
        }
    }
}

/// What a training run reports while it runs.
#[derive(Debug, Clone, Copy)]
pub enum TrainEvent<'a> {
    /// The split is made; training starts.
    Started(&'a SplitSummary),
    /// An epoch (SGD) or the final fit (L-BFGS) is scored.
    Epoch(&'a EpochRecord),
}

/// Trains a linear head on `cache` (every shard's checksum verified while reading).
/// `on_event` hears when training starts and each epoch's record as soon as it is computed.
/// Memory: the selected rows when they fit `limits.memory_budget`, else a batch at a time.
pub fn train_head(
    cache: &CacheIndex,
    config: &ValidTrainConfig,
    limits: &TrainLimits,
    on_event: &mut dyn FnMut(TrainEvent<'_>),
) -> Result<TrainReport> {
    let classes = cache.classes().to_vec();
    if classes.len() < 2 {
        return Err(Error::Data(format!(
            "{}: the cache has only one class ({}); a classifier needs at least two class folders",
            cache.dir.display(),
            classes.first().map(String::as_str).unwrap_or("none")
        )));
    }
    let cache_manifest_sha256 = cache.manifest_sha256.clone();
    let split = split_cache(&cache.images, &classes, config.val_fraction, config.seed)?;
    let lbfgs = matches!(config.solver, Solver::Lbfgs(_));
    let loaded = load_rows(
        cache,
        &Selection {
            train: &split.train,
            val: &split.val,
            views: config.views,
            with_images: true,
        },
        limits.memory_budget,
        lbfgs.then_some("L-BFGS"),
    )?;
    let (train, val) = (loaded.train, loaded.val);
    if train.is_empty() {
        return Err(Error::Data(format!(
            "no training rows: the cache has {} usable images",
            cache.images.usable().count()
        )));
    }
    let summary = SplitSummary {
        kind: split.kind.clone(),
        train_images: split.train.len(),
        val_images: split.val.len(),
        train_rows: train.len(),
    };
    on_event(TrainEvent::Started(&summary));
    let (head, history, lbfgs) = match config.solver() {
        ValidSolver::Sgd(p) => {
            let (head, history) = train_sgd(&*train, &*val, classes.len(), p, &mut |r| {
                on_event(TrainEvent::Epoch(r))
            })?;
            (head, history, None)
        }
        ValidSolver::Lbfgs(p) => {
            // The sweep's validation slice is carved from the training images only.
            let pairs: Vec<(usize, usize)> = split
                .train
                .iter()
                .map(|&i| (i, cache.images.label[i] as usize))
                .collect();
            let inner = stratified(
                &pairs,
                config.sweep_val_fraction,
                config.seed ^ SWEEP_SPLIT_STREAM,
            );
            // In memory: `load_rows` refused otherwise.
            let (Some(train), Some(val)) = (train.in_memory(), val.in_memory()) else {
                return Err(Error::Data("L-BFGS needs the rows in memory".into()));
            };
            let sweep_train = train.filter(&inner.train, config.views);
            let sweep_val = train.filter(&inner.val, ViewSelection::Eval);
            let (head, rep) = train_lbfgs(train, &sweep_train, &sweep_val, classes.len(), p)?;
            let (train_loss, train_accuracy, _) = score(&head, train)?;
            let (val_loss, val_accuracy) = if val.is_empty() {
                (None, None)
            } else {
                let (l, a, _) = score(&head, val)?;
                (Some(l), Some(a))
            };
            let rec = EpochRecord {
                epoch: 1,
                train_loss,
                train_accuracy,
                val_loss,
                val_accuracy,
            };
            on_event(TrainEvent::Epoch(&rec));
            (head, vec![rec], Some(rep))
        }
    };
    let (_, _, pred) = score_source(&head, &*val)?;
    let truth: Vec<usize> = (0..val.len()).map(|i| val.label(i) as usize).collect();
    let report = Report::new(&classes, &truth, &pred);
    let validation = validation_file(cache, &head, &*val, &pred, config, limits, &split.val)?;
    let last = history.last().expect("at least one epoch");
    let val_metrics = if val.is_empty() {
        None
    } else {
        Some(ValMetrics {
            accuracy: report.accuracy,
            macro_f1: report.macro_f1,
            n: report.n,
            loss: last.val_loss,
            accuracy_tta: validation.accuracy_tta(),
        })
    };
    Ok(TrainReport {
        head,
        config: config.config().clone(),
        classes,
        history,
        lbfgs,
        split: summary,
        report,
        val_metrics,
        cache_manifest_sha256,
        rows_streamed: loaded.streamed,
        validation,
    })
}

/// The head's prediction for each validation image, named by path and content hash; with
/// `val_tta` (and augmented views in the cache) also the class of its views' mean
/// probabilities.
fn validation_file(
    cache: &CacheIndex,
    head: &LinearHead,
    val: &dyn crate::RowSource,
    pred: &[usize],
    config: &ValidTrainConfig,
    limits: &TrainLimits,
    val_images: &[usize],
) -> Result<ValidationFile> {
    let probs = probabilities_source(head, val)?;
    let images: Vec<usize> = (0..val.len())
        .map(|i| val.image(i).expect("rows keep their image"))
        .collect();
    let entries = cache.image_entries(&images)?;
    let views = cache.settings().augment.views as usize + 1;
    let tta = if config.val_tta && views > 1 && !val_images.is_empty() {
        let all_views = headstart_cache::rows::load_rows(
            cache,
            &Selection {
                train: val_images,
                val: &[],
                views: ViewSelection::All,
                with_images: true,
            },
            limits.memory_budget,
        )?;
        let rows = crate::source::boxed(all_views.train);
        Some(mean_probabilities_by_image(head, &*rows)?)
    } else {
        None
    };
    Ok(ValidationFile {
        format: crate::validation::VALIDATION_FORMAT.into(),
        classes: cache.classes().to_vec(),
        cache_manifest_sha256: cache.manifest_sha256.clone(),
        tta_views: tta.as_ref().map(|_| views),
        images: images
            .iter()
            .zip(entries)
            .zip(probs)
            .enumerate()
            .map(|(i, ((img, e), p))| ValPrediction {
                path: e.path,
                sha256: e.sha256,
                label: val.label(i),
                // The report's prediction (argmax of the logits), so both always agree.
                predicted: pred[i] as u32,
                probabilities: p,
                predicted_tta: tta
                    .as_ref()
                    .and_then(|t| t.get(img))
                    .map(|(_, m)| argmax(m) as u32),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LbfgsParams, SgdParams};

    #[test]
    fn config_round_trips_as_json_with_the_solver_named() {
        for solver in [
            Solver::Sgd(SgdParams::default()),
            Solver::Lbfgs(LbfgsParams::default()),
        ] {
            let c = TrainConfig {
                solver,
                ..Default::default()
            };
            let j = serde_json::to_value(&c).unwrap();
            assert!(j["solver"].get(c.solver.name()).is_some(), "{j}");
            let back: TrainConfig = serde_json::from_value(j).unwrap();
            assert_eq!(back, c);
        }
    }

    #[test]
    fn bad_settings_are_refused_before_any_work() {
        let c = TrainConfig {
            val_fraction: 1.0,
            ..Default::default()
        };
        assert!(matches!(
            c.check(),
            Err(Error::InvalidParams {
                param: "val_fraction",
                ..
            })
        ));
        let c = TrainConfig {
            solver: Solver::Sgd(SgdParams {
                lr: -1.0,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(matches!(
            c.check(),
            Err(Error::InvalidParams { param: "lr", .. })
        ));
    }
}
