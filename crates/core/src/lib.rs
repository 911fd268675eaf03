//! headstart's shared vocabulary, with no neural-network stack behind it:
//!
//! - [`config`]: the model zoo's data — architectures, their preprocessing and feature widths —
//!   which the backbone builds and the feature cache records.
//! - [`rng`]: the seeded generator and hash used for splits, epochs, augmentation and sampling.

pub mod config;
pub mod rng;
