//! The headstart feature cache: a directory with `manifest.json` and `shard-NNNNN.safetensors`
//! files, a commit journal while it is written, and `parts/` when N processes write it (see
//! `docs/cache-format.md`). Writes are atomic and resumable; reads verify checksums.

pub mod atomic;
pub mod error;
pub mod index;
pub mod journal;
pub mod lock;
pub mod manifest;
pub mod merge;
pub mod partition;
pub mod reader;
pub mod rows;
pub mod safe_fs;
pub mod shard_file;
pub mod st;
pub mod writer;

pub use error::{Error, Result};
pub use index::{CacheIndex, ImageTable};
pub use manifest::{
    AugmentConfig, CacheSettings, FeatureDType, ImageEntry, ImageStatus, Manifest, ShardEntry,
    Split, DEFAULT_MAX_PIXELS,
};
pub use merge::{merge, MergeOptions, MergeReport};
pub use partition::{Part, PartError, PartitionRecord, PartsStatus, MAX_PARTS};
pub use reader::{CachedRows, FeatureCache, Problem};
pub use writer::{CacheWriter, Lookup, ViewMeta};

/// FNV-1a of `bytes` (unique-enough temp names).
pub(crate) fn fnv(bytes: &[u8]) -> u64 {
    headstart_core::rng::fnv1a64(0xcbf2_9ce4_8422_2325, bytes)
}
