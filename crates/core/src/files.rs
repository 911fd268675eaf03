//! Names headstart gives its own files, shared by the crates that write them and the dataset
//! scan that must never mistake them for data.

/// The lock file of a cache, part or head directory.
pub const LOCK_FILE: &str = ".headstart.lock";

/// The `format` value in every cache manifest.
pub const CACHE_FORMAT: &str = "headstart-feature-cache";

/// The file that makes a folder a head directory.
pub const HEAD_FILE: &str = "head.safetensors";
