//! The head crate's error type.

use std::path::PathBuf;

/// Errors of training, saving and loading a head.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Tensor failure.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Cache failure (unreadable, checksum mismatch…).
    #[error(transparent)]
    Cache(#[from] headstart_cache::Error),
    /// Filesystem failure.
    #[error("{}: {error}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error (shown in the message; not a separate source, so it is printed once).
        error: std::io::Error,
    },
    /// An invalid hyper-parameter (checked once, before training). `param` is the field's name
    /// (`lr`, `val_fraction`, …): a front end maps it to its own spelling (`--lr`).
    #[error("invalid setting `{param}`: {problem}")]
    InvalidParams {
        /// The parameter, as named in the params struct.
        param: &'static str,
        /// What is wrong with its value.
        problem: String,
    },
    /// The data cannot be trained on (too few images, a class with none).
    #[error("{0}")]
    Data(String),
    /// Training stopped because the loss or the weights stopped being finite.
    #[error("training diverged in epoch {epoch}: the loss is {loss} (not finite) with learning rate {lr}; a smaller learning rate will train")]
    Diverged {
        /// The epoch (1-based) where it happened.
        epoch: usize,
        /// The epoch's mean training loss.
        loss: f64,
        /// The learning rate used.
        lr: f64,
    },
    /// There is no head file at this path.
    #[error("{}: no head here", path.display())]
    NoHead {
        /// The missing `head.safetensors`.
        path: PathBuf,
    },
    /// A sweep folder holding another sweep.
    #[error("{}: holds a sweep with other settings:\n{}", path.display(), differences.iter().map(|d| format!("  - {d}")).collect::<Vec<_>>().join("\n"))]
    SweepMismatch {
        /// The folder.
        path: PathBuf,
        /// What differs.
        differences: Vec<String>,
    },
    /// A folder that cannot be (or hold) a head directory.
    #[error("{}: {problem}", path.display())]
    HeadDir {
        /// The folder.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A head file is damaged or not a head.
    #[error("{}: {reason}", path.display())]
    BadHead {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;
