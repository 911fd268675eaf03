//! `headstart extract`: an ImageFolder dataset into a sharded, resumable feature cache with
//! seeded augmented views.
//!
//! - [`dataset`]: ImageFolder scanning (sorted, recursive, hidden files skipped, symlink-safe).
//! - [`augment`]: torchvision's RandomResizedCrop rule + flip, seeded per (seed, path, view).
//! - [`pipeline`]: parallel decode overlapped with the batched forward pass, written shard by shard.

pub mod augment;
pub mod dataset;
pub mod error;
pub mod pipeline;

pub use dataset::{Dataset, DatasetItem};
pub use error::{Error, Result};
pub use pipeline::{extract, ExtractOptions, ExtractReport, NoProgress, Progress, Skipped};
