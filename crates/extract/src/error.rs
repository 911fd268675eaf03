//! The extract crate's error type.

use std::path::PathBuf;

/// Errors that stop an extraction (bad images never do: they are skipped and reported).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Backbone or preprocessing failure.
    #[error(transparent)]
    Backbone(Box<headstart_backbone::Error>),
    /// Cache failure.
    #[error(transparent)]
    Cache(Box<headstart_cache::Error>),
    /// Tensor failure.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Filesystem failure on a path.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The dataset cannot be read (layout, file system).
    #[error(transparent)]
    Data(#[from] headstart_data::Error),
    /// Some classes ended with no usable image.
    #[error("no usable image in class(es) {}: every file there was skipped (see the report); fix or remove those folders", classes.join(", "))]
    EmptyClasses {
        /// The class names.
        classes: Vec<String>,
    },
    /// Invalid option value. `param` is the option's field name (`batch_size`, …): a front end
    /// maps it to its own spelling (`--batch-size`).
    #[error("invalid setting `{param}`: {problem}")]
    Invalid {
        /// The option, as named in `ExtractOptions`.
        param: &'static str,
        /// What is wrong with its value.
        problem: String,
    },
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

impl From<headstart_backbone::Error> for Error {
    fn from(e: headstart_backbone::Error) -> Self {
        Error::Backbone(Box::new(e))
    }
}

impl From<headstart_cache::Error> for Error {
    fn from(e: headstart_cache::Error) -> Self {
        Error::Cache(Box::new(e))
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;
