//! The linear head trained on cached features.
//!
//! - [`split`]: train/validation split by image (stratified, seeded) or the dataset's folders.
//! - [`data`]: rows of each side (all views for training, the eval view for validation).
//! - [`linear`], [`sgd`], [`train`]: the head, PyTorch-exact SGD with momentum, the epoch loop.
//! - [`lbfgs`]: multinomial logistic regression to convergence with an L2 sweep (CLIP protocol).
//! - [`metrics`], [`history`], [`checkpoint`]: reports, per-epoch records, `head.safetensors`.
//! - [`head_dir`]: the head directory as one unit (locked, staged, swapped in whole).
//! - [`config`]: the run's records, serde only ([`TrainConfig`], checked once into
//!   [`ValidTrainConfig`]; the split summary; validation metrics).
//! - [`validation`]: the head's prediction for each validation image (`validation.json`).
//! - [`compare`], [`stats`]: heads side by side (Wilson and bootstrap intervals, exact
//!   McNemar on shared validation images).
//! - [`oof`]: out-of-fold probabilities of every image (for label-issue search).
//! - [`sweep`]: grids of settings scored by K-fold cross-validation by image, resumable.
//! - [`training`]: the whole run as one call — a typed [`TrainConfig`] and a cache in, a
//!   [`TrainReport`] out.

pub mod checkpoint;
pub mod compare;
pub mod config;
pub mod data;
pub mod error;
pub mod head_dir;
pub mod history;
pub mod lbfgs;
pub mod linear;
pub mod metrics;
pub mod oof;
pub mod rng;
pub mod sgd;
pub mod source;
pub mod split;
pub mod stats;
pub mod sweep;
pub mod train;
pub mod training;
pub mod validation;

pub use checkpoint::{HeadCheckpoint, HeadMetadata};
pub use config::{Solver, SplitSummary, TrainConfig, ValMetrics, ValidSolver, ValidTrainConfig};
pub use data::{Rows, ViewSelection};
pub use error::{Error, Result};
pub use head_dir::{HeadContents, HeadDir, RunRecord, TrainingImages, HEAD_FILES};
pub use lbfgs::{LbfgsParams, LbfgsReport, ValidLbfgsParams};
pub use linear::LinearHead;
pub use metrics::Report;
pub use sgd::{ClassWeight, SgdParams, ValidSgdParams};
pub use source::{RowSource, DEFAULT_MEMORY_BUDGET};
pub use training::{train_head, TrainEvent, TrainLimits, TrainReport};
pub use validation::{ValPrediction, ValidationFile};
