//! The audit crate's error type.

/// Errors of auditing a cache.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Cache failure (missing, being written, damaged…).
    #[error(transparent)]
    Cache(#[from] headstart_cache::Error),
    /// Training the out-of-fold heads failed.
    #[error(transparent)]
    Head(#[from] headstart_head::Error),
    /// Tensor failure.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A setting out of range (checked before any work); `param` is the field's name.
    #[error("invalid setting `{param}`: {problem}")]
    InvalidParams {
        /// The parameter.
        param: &'static str,
        /// What is wrong with its value.
        problem: String,
    },
    /// The cache cannot be audited (no usable image, rows over the memory budget…).
    #[error("{0}")]
    Data(String),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;
