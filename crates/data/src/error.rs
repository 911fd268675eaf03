//! The data crate's error type.

use std::path::PathBuf;

/// Why a dataset cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Filesystem failure on a path.
    #[error("{}: {error}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error (shown in the message; not a separate source, so it is printed once).
        error: std::io::Error,
    },
    /// The data directory does not have the ImageFolder layout.
    #[error("{}: {reason}", path.display())]
    Layout {
        /// The data directory.
        path: PathBuf,
        /// What is wrong and how to fix it.
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
