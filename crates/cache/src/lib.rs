//! The headstart feature cache: a directory with `manifest.json` and `shard-NNNNN.safetensors`
//! files (see `docs/cache-format.md`). Writes are atomic and resumable; reads verify checksums.

pub mod atomic;
pub mod error;
pub mod lock;
pub mod manifest;
pub mod reader;
pub mod st;
pub mod writer;

pub use error::{Error, Result};
pub use manifest::{
    AugmentConfig, CacheSettings, FeatureDType, ImageEntry, ImageStatus, Manifest, ShardEntry,
    Split,
};
pub use reader::{CachedRows, FeatureCache, Problem};
pub use writer::{CacheWriter, Lookup, ViewMeta};
