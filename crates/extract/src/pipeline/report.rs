//! What a run reports: progress while it runs, the outcome when it ends.

use super::*;

pub use headstart_core::progress::{NoProgress, Progress};

/// A file that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// Path relative to the data directory.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// The outcome of an extraction (`--json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct ExtractReport {
    /// The cache directory.
    pub cache: PathBuf,
    /// The part this run extracted (`{"index", "count"}`), or null for a whole-dataset run.
    pub part: Option<Part>,
    /// Where this run wrote: the part's folder for a partitioned run, else `cache`.
    pub written_to: PathBuf,
    /// Images of the dataset in this run's part (all of them without a part).
    pub images_in_part: usize,
    /// Usable images in the cache.
    pub images_ok: usize,
    /// Images that could not be used.
    pub images_skipped: usize,
    /// Every skipped file with the reason.
    pub skipped: Vec<Skipped>,
    /// Augmented views per image.
    pub views: u32,
    /// Rows in the cache.
    pub rows: usize,
    /// Shards in the cache.
    pub shards: usize,
    /// Wall-clock seconds of this run.
    pub seconds: f64,
    /// Images processed per second in this run (reused images excluded).
    pub images_per_second: f64,
    /// Images processed (decoded and run through the backbone, or skipped) in this run.
    pub images_processed: usize,
    /// Images already in the cache and reused.
    pub images_reused: usize,
    /// Cached images marked stale (changed or removed since).
    pub images_stale: usize,
    /// Classes with no usable image (an error for training; for a part, checked at merge).
    pub empty_classes: Vec<String>,
    /// Of those, the classes whose folders held no image file at all.
    pub classes_without_files: Vec<String>,
    /// Warnings and notes for the user.
    pub notes: Vec<String>,
}
