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
    #[error("{}: {error}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error (shown in the message; not a separate source, so it is printed once).
        error: std::io::Error,
    },
    /// The dataset cannot be read (layout, file system).
    #[error(transparent)]
    Data(#[from] headstart_data::Error),
    /// Some classes ended with no usable image.
    #[error("no usable image in class(es) {}: {}", classes.join(", "), empty_reason(classes, without_files))]
    EmptyClasses {
        /// The class names.
        classes: Vec<String>,
        /// Those of them whose folder holds no image file at all (the others' files were all
        /// skipped: see the report).
        without_files: Vec<String>,
    },
    /// The backbone produced a NaN or infinite feature.
    #[error("the backbone produced a non-finite feature ({value}) for {image}: its weights or config.json make it overflow (a correct network gives finite features for every image); nothing of this batch was cached")]
    NonFinite {
        /// The value.
        value: f32,
        /// The image it came from.
        image: String,
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

/// Why classes have no usable image, and what a fix costs: the cache records its class list,
/// so removing a class folder means a new cache.
fn empty_reason(classes: &[String], without_files: &[String]) -> String {
    let skipped: Vec<&String> = classes
        .iter()
        .filter(|c| !without_files.contains(c))
        .collect();
    let mut parts = Vec::new();
    if !without_files.is_empty() {
        parts.push(format!(
            "{} ha{} no image file at all",
            without_files.join(", "),
            if without_files.len() == 1 { "s" } else { "ve" }
        ));
    }
    if !skipped.is_empty() {
        parts.push(format!(
            "every file of {} was skipped (the reasons are listed above)",
            skipped
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    format!(
        "{}; add usable images and run again, or remove the folder(s) and extract into a new cache (a cache keeps the class list it was started with)",
        parts.join("; ")
    )
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
