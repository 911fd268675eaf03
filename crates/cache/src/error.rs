//! The cache crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong reading, writing or checking a feature cache.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error (shown in the message; not a separate source, so it is printed once).
        error: std::io::Error,
    },

    /// `manifest.json` is missing, unreadable or malformed.
    #[error("{}: invalid manifest: {reason}", path.display())]
    Manifest {
        /// The manifest path.
        path: PathBuf,
        /// What is wrong.
        reason: ManifestError,
    },

    /// A tensor's shape does not match its data (a bug in the caller, never a file problem).
    #[error("tensor `{name}`: shape {shape:?} holds {expected} values, data has {found}")]
    TensorShape {
        /// The tensor.
        name: String,
        /// Its declared shape.
        shape: Vec<usize>,
        /// Values the shape holds.
        expected: usize,
        /// Values given.
        found: usize,
    },

    /// A shard is missing, has the wrong checksum or the wrong content.
    #[error("{}: {reason} — the cache is damaged; an extraction with the same settings rebuilds the shard", path.display())]
    Shard {
        /// The shard path.
        path: PathBuf,
        /// Which check failed.
        kind: ShardProblem,
        /// What is wrong, in words.
        reason: String,
    },

    /// The cache was written with different settings.
    #[error("{}: this cache was built with different settings:\n{}", path.display(), differences.iter().map(|d| format!("  - {d}")).collect::<Vec<_>>().join("\n"))]
    ConfigMismatch {
        /// The cache directory.
        path: PathBuf,
        /// One line per differing setting: `name: cache has X, this run has Y`.
        differences: Vec<String>,
    },

    /// A number read from the cache asks for more than can be held (rows, classes, widths):
    /// refused before anything is allocated from it.
    #[error("{}: {what}", path.display())]
    TooLarge {
        /// The file or directory the number came from.
        path: PathBuf,
        /// What is too large, and the limit.
        what: String,
    },

    /// The directory is not a cache (no manifest).
    #[error("{}: not a feature cache (no manifest.json)", path.display())]
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

    /// An extract into this cache was interrupted before it finished (journal, no manifest).
    #[error("{}: unfinished cache ({shards} shard(s) committed, no manifest.json yet): an extraction into it was interrupted or is still running; running the same extraction again finishes it", path.display())]
    Unfinished {
        /// The cache directory.
        path: PathBuf,
        /// Shards committed so far.
        shards: usize,
        /// When the directory is one part of a partitioned cache: that cache and the part.
        part: Option<(PathBuf, crate::partition::Part)>,
    },

    /// A partitioned cache whose parts are not merged yet.
    #[error("{}", partitioned_message(path, *parts, finished, unfinished, missing))]
    Partitioned {
        /// The cache directory.
        path: PathBuf,
        /// N of the partition.
        parts: usize,
        /// Indices of finished parts.
        finished: Vec<usize>,
        /// Indices of parts that started but did not finish (or are running).
        unfinished: Vec<usize>,
        /// Indices of parts never started.
        missing: Vec<usize>,
    },

    /// `--part` settings that cannot work with this cache directory.
    #[error("{}: {problem}", path.display())]
    Partition {
        /// The cache directory.
        path: PathBuf,
        /// What is wrong and what to do.
        problem: String,
    },

    /// Caller misuse (inconsistent rows, wrong dims).
    #[error("{0}")]
    Invalid(String),
}

fn list(v: &[usize]) -> String {
    v.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn partitioned_message(
    path: &std::path::Path,
    parts: usize,
    finished: &[usize],
    unfinished: &[usize],
    missing: &[usize],
) -> String {
    let p = path.display();
    let mut s = format!(
        "{p}: a cache partitioned into {parts} parts, not merged yet ({} of {parts} finished",
        finished.len()
    );
    if !unfinished.is_empty() {
        s += &format!("; unfinished or still running: part {}", list(unfinished));
    }
    if !missing.is_empty() {
        s += &format!("; never started: part {}", list(missing));
    }
    s += ")";
    let todo: Vec<usize> = unfinished.iter().chain(missing).copied().collect();
    if todo.is_empty() {
        s += ": every part is finished, merge them";
    } else {
        s += &format!(
            ": extract part {} with the other parts' settings, then merge",
            list(&todo)
        );
    }
    s
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

/// Which check a shard failed (what `cache verify` reports as the failed check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardProblem {
    /// The file is not there.
    Missing,
    /// Its sha256 differs from the manifest's.
    Checksum,
    /// Not a safetensors file, or a tensor is missing or mis-shaped.
    Format,
    /// A row's image or label index disagrees with the manifest, or an image's rows are not
    /// where they must be (consecutive, in one shard, one per view).
    Index,
    /// A feature is NaN or infinite.
    Values,
}

impl ShardProblem {
    /// The check's name in reports: `missing`, `sha256`, `format`, `index`, `values`.
    pub fn check(self) -> &'static str {
        match self {
            ShardProblem::Missing => "missing",
            ShardProblem::Checksum => "sha256",
            ShardProblem::Format => "format",
            ShardProblem::Index => "index",
            ShardProblem::Values => "values",
        }
    }
}

/// Why a `manifest.json` was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON, or JSON of another shape.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// Another format, or a newer version of this one.
    #[error("{0}")]
    Format(String),
    /// Parsed, but its parts disagree (labels, row counts, shard names).
    #[error("{0}")]
    Inconsistent(String),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;
