//! Datasets on disk, below every step that reads images (extract, eval, predict): which files
//! are images, which class and split each belongs to, and what is skipped and why. Std only: no
//! decoding, no network stack.
//!
//! - [`folder`]: the ImageFolder layout (one sub-folder per class; optional `train/`, `val/`,
//!   `test/`), scanned sorted and recursively, symlink-safe.

pub mod error;
pub mod folder;

pub use error::{Error, Result};
pub use folder::{Dataset, DatasetItem, Split};
