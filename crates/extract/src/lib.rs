//! `headstart extract`: an ImageFolder dataset into a sharded, resumable feature cache with
//! seeded augmented views.
//!
//! - [`dataset`]: the ImageFolder scan (`headstart_data::folder`, re-exported: predict and eval
//!   read datasets too, without extract).
//! - [`augment`]: torchvision's RandomResizedCrop rule + flip, seeded per (seed, path, view).
//! - [`pipeline`]: parallel decode overlapped with the batched forward pass, written shard by shard.

/// Seeded views (moved to the backbone's preprocessing: predict's test-time augmentation uses
/// the same rule).
pub use headstart_backbone::preprocess::augment;
pub mod error;
pub mod pipeline;

pub use error::{Error, Result};
pub use headstart_data::folder as dataset;
pub use headstart_data::{Dataset, DatasetItem};
pub use pipeline::{
    extract, ExtractOptions, ExtractReport, NoProgress, Progress, Skipped, ValidExtractOptions,
};
