//! The cache crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong reading, writing or checking a feature cache.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },

    /// `manifest.json` is missing, unreadable or malformed.
    #[error("{}: invalid manifest: {reason}", path.display())]
    Manifest {
        /// The manifest path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A shard is missing, has the wrong checksum or the wrong content.
    #[error("{}: {reason} — the cache is damaged; rerun `headstart extract` with the same settings to rebuild the shard", path.display())]
    Shard {
        /// The shard path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The cache was written with different settings.
    #[error("{}: this cache was built with different settings:\n{}\nUse another --cache directory, or pass --force to discard it and start over", path.display(), differences.iter().map(|d| format!("  - {d}")).collect::<Vec<_>>().join("\n"))]
    ConfigMismatch {
        /// The cache directory.
        path: PathBuf,
        /// One line per differing setting: `name: cache has X, this run has Y`.
        differences: Vec<String>,
    },

    /// The directory is not a cache (no manifest).
    #[error("{}: not a feature cache (no manifest.json); create one with `headstart extract DATA_DIR --cache {}`", path.display(), path.display())]
    NotACache {
        /// The directory.
        path: PathBuf,
    },

    /// Another process holds the directory's lock (a writer, or readers while we want to write).
    #[error("{}: in use by another headstart process ({holder}); wait for it to finish (the lock is released when that process exits, however it exits)", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// Who holds it (pid and command).
        holder: String,
    },

    /// Caller misuse (inconsistent rows, wrong dims).
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;
