//! The records of a training run, serde only: what it was asked to do ([`TrainConfig`], checked
//! once into a [`ValidTrainConfig`]), how the images were split, and how well the head did on
//! validation. The head's metadata (`checkpoint`) and the training run (`training`) both use
//! them; neither needs the other for it.

use serde::{Deserialize, Serialize};

use crate::data::ViewSelection;
use crate::lbfgs::{LbfgsParams, ValidLbfgsParams};
use crate::sgd::{SgdParams, ValidSgdParams};
use crate::{Error, Result};

/// The optimiser and its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Solver {
    /// Mini-batch SGD with momentum (the PyTorch tutorial's recipe).
    Sgd(SgdParams),
    /// Full-batch L-BFGS to convergence with an L2 penalty (the CLIP linear-probe protocol).
    Lbfgs(LbfgsParams),
}

impl Solver {
    /// `sgd` or `lbfgs`.
    pub fn name(&self) -> &'static str {
        match self {
            Solver::Sgd(_) => "sgd",
            Solver::Lbfgs(_) => "lbfgs",
        }
    }
}

/// Everything a training run depends on besides the cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The optimiser, as `{"sgd": {…}}` or `{"lbfgs": {…}}` (SGD's own seed drives its
    /// initialisation and shuffles).
    pub solver: Solver,
    /// Which cached views of the training images train the head (validation always uses the
    /// eval view).
    pub views: ViewSelection,
    /// Fraction of images held out for validation when the dataset has no `val/` folder.
    pub val_fraction: f64,
    /// Seed of the train/validation split (and of the L-BFGS sweep's inner split).
    pub seed: u64,
    /// L-BFGS without a fixed penalty: the fraction of the training images on which each
    /// candidate penalty is scored (the rest fit it).
    pub sweep_val_fraction: f64,
    /// Also score the validation images with test-time augmentation on the cache: each image's
    /// class probabilities averaged over all its cached views (the head is the same either way).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub val_tta: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            solver: Solver::Sgd(SgdParams::default()),
            views: ViewSelection::All,
            val_fraction: 0.2,
            seed: 43,
            sweep_val_fraction: 0.2,
            val_tta: false,
        }
    }
}

impl TrainConfig {
    /// Checks every setting once, the solver's too, into a [`ValidTrainConfig`] (the only
    /// kind of config [`crate::train_head`] takes); an `Error::InvalidParams` names the first
    /// bad one.
    pub fn check(self) -> Result<ValidTrainConfig> {
        if !(0.0..1.0).contains(&self.val_fraction) {
            return Err(Error::InvalidParams {
                param: "val_fraction",
                problem: format!("{} must be in [0, 1)", self.val_fraction),
            });
        }
        if !(self.sweep_val_fraction > 0.0 && self.sweep_val_fraction < 1.0) {
            return Err(Error::InvalidParams {
                param: "sweep_val_fraction",
                problem: format!("{} must be in (0, 1)", self.sweep_val_fraction),
            });
        }
        let solver = match &self.solver {
            Solver::Sgd(p) => ValidSolver::Sgd(p.clone().check()?),
            Solver::Lbfgs(p) => ValidSolver::Lbfgs(p.clone().check()?),
        };
        Ok(ValidTrainConfig {
            config: self,
            solver,
        })
    }
}

/// The solver's parameters, checked.
#[derive(Debug, Clone)]
pub enum ValidSolver {
    /// SGD.
    Sgd(ValidSgdParams),
    /// L-BFGS.
    Lbfgs(ValidLbfgsParams),
}

/// A [`TrainConfig`] whose every setting has been checked ([`TrainConfig::check`]): the
/// settings read as the plain config (it dereferences to it), the solver as checked params.
#[derive(Debug, Clone)]
pub struct ValidTrainConfig {
    config: TrainConfig,
    solver: ValidSolver,
}

impl ValidTrainConfig {
    /// The checked solver parameters.
    pub fn solver(&self) -> &ValidSolver {
        &self.solver
    }

    /// The plain config (for records: `run.json`, the head's metadata).
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }
}

impl std::ops::Deref for ValidTrainConfig {
    type Target = TrainConfig;
    fn deref(&self) -> &TrainConfig {
        &self.config
    }
}

/// How the images were split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitSummary {
    /// `stratified` (seeded, per class) or `dataset` (the `train/` and `val/` folders).
    pub kind: String,
    /// Training images.
    pub train_images: usize,
    /// Validation images.
    pub val_images: usize,
    /// Training rows (images × selected views).
    pub train_rows: usize,
}

/// Validation metrics at the end of training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValMetrics {
    /// Top-1 accuracy.
    pub accuracy: f64,
    /// Macro-averaged F1.
    pub macro_f1: f64,
    /// Validation images scored.
    pub n: usize,
    /// Mean cross-entropy.
    pub loss: Option<f64>,
    /// Accuracy with every cached view of an image averaged (`val_tta`, when the cache has
    /// augmented views).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_tta: Option<f64>,
}
