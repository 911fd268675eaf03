//! How long-running library calls (extraction, merge, prediction, evaluation) report progress:
//! one shape for all, so a front end implements it once (the binary's progress bar does).

/// Told how far a run has come. Every method has a do-nothing default.
pub trait Progress: Sync {
    /// The run will go through `total` items (images, files).
    fn start(&self, _total: u64) {}
    /// `n` more items are done (processed, reused or skipped).
    fn advance(&self, _n: u64) {}
    /// The run is over.
    fn finish(&self) {}
}

/// A [`Progress`] that shows nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}
