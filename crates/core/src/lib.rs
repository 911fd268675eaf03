//! headstart's shared vocabulary, with no neural-network stack behind it:
//!
//! - [`config`]: the model zoo's data — architectures, their preprocessing and feature widths —
//!   which the backbone builds and the feature cache records.
//! - [`files`]: the names of headstart's own files.
//! - [`progress`]: the one shape of progress reports.
//! - [`rng`]: the seeded generator and hash used for splits, epochs, augmentation and sampling.
//! - [`text`]: untrusted names made safe to print on a terminal.

pub mod config;
pub mod files;
pub mod progress;
pub mod rng;
pub mod text;
