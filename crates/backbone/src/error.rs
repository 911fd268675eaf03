//! The backbone crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while resolving weights, building a model or preprocessing an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed inside candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A key prefix to strip that no tensor name starts with.
    #[error("{source_desc}: no tensor name starts with the prefix `{prefix}` (names look like `{example}`)")]
    PrefixNotFound {
        /// The weights file.
        source_desc: String,
        /// The prefix asked for.
        prefix: String,
        /// One tensor name, to show what the names look like.
        example: String,
    },

    /// An image over the decoder's size limit (decompression-bomb guard).
    #[error("{reason}")]
    TooLarge {
        /// Its size and the limit, in words.
        reason: String,
    },

    /// A batch the network cannot take (wrong channel count, too small for a kernel, …).
    #[error("backbone input: {0}")]
    Input(String),

    /// Reading or writing a file failed.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The OS error (shown in the message; not a separate source, so it is printed once).
        error: std::io::Error,
    },

    /// The backbone name is not in the zoo.
    #[error(transparent)]
    UnknownBackbone(#[from] headstart_core::config::UnknownBackbone),

    /// A weights file could not be parsed at all.
    #[error("{}: not a readable weights file ({reason}); expected .safetensors, or a .pth written by torch.save (zip or legacy format)", path.display())]
    BadWeightsFile {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },

    /// The `config.json` that sizes a transformer backbone is unreadable or of another model.
    #[error("{}: {reason} — this file sizes the {backbone} model; put the repository's own config.json beside the weights, or remove it to use {backbone}'s built-in sizes", path.display())]
    BadModelConfig {
        /// The config file (or the weights' description when the config was given in memory).
        path: PathBuf,
        /// The backbone being built.
        backbone: String,
        /// What is wrong.
        reason: String,
    },

    /// A tensor the model needs is absent from the weights.
    #[error("{}: missing tensor `{}` (expected shape {:?}) — are these weights for {}?", .0.source_desc, .0.name, .0.expected, .0.backbone)]
    MissingTensor(Box<TensorProblem>),

    /// A tensor has the wrong shape.
    #[error("{}: tensor `{}` has shape {:?} but {} expects {:?} — these weights are for another architecture", .0.source_desc, .0.name, .0.found, .0.backbone, .0.expected)]
    ShapeMismatch(Box<TensorProblem>),

    /// No weights could be found anywhere.
    #[error("no weights found for {backbone}. Looked in:\n{}", looked.iter().map(|l| format!("  - {l}")).collect::<Vec<_>>().join("\n"))]
    WeightsNotFound {
        /// The backbone name.
        backbone: String,
        /// Every place that was tried, with why it failed.
        looked: Vec<String>,
    },

    /// A CUDA device was asked for and cannot be opened (what is missing, and the fix).
    #[error("--device cuda: {0}")]
    Cuda(crate::device::CudaProblem),

    /// An image could not be decoded or is unusable.
    #[error("{reason}")]
    Image {
        /// Why the image was rejected (short, for reports).
        reason: String,
    },
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }

    /// An image error with a short reason.
    pub fn image(reason: impl Into<String>) -> Self {
        Error::Image {
            reason: reason.into(),
        }
    }
}

/// Details of a missing or mis-shaped tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorProblem {
    /// Where the weights came from.
    pub source_desc: String,
    /// The backbone being built.
    pub backbone: String,
    /// The tensor name (after prefix stripping).
    pub name: String,
    /// The shape the model expects.
    pub expected: Vec<usize>,
    /// The shape in the file (empty when missing).
    pub found: Vec<usize>,
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;
