//! `manifest.json`: what a cache holds and how it was made.

use std::path::{Path, PathBuf};

use headstart_core::config::{AugmentParams, BackboneConfig};
use serde::{Deserialize, Serialize};

use crate::error::ManifestError;
use crate::{Error, Result};

/// The `format` value of every manifest.
pub const FORMAT: &str = headstart_core::files::CACHE_FORMAT;
/// The current format version. Readers refuse newer versions; version 1 caches (one
/// `manifest.json` rewritten after every shard, no journal) are still read and resumed.
pub const FORMAT_VERSION: u32 = 2;
/// The manifest's file name inside a cache directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Storage dtype of the features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureDType {
    /// 32-bit floats (exact).
    F32,
    /// 16-bit floats (half the size; ~3 significant digits).
    F16,
}

impl FeatureDType {
    /// `f32` or `f16`.
    pub fn name(self) -> &'static str {
        match self {
            FeatureDType::F32 => "f32",
            FeatureDType::F16 => "f16",
        }
    }
}

/// RandomResizedCrop + horizontal flip settings of the augmented views.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AugmentConfig {
    /// Augmented views per image (view 0, the eval view, comes in addition).
    pub views: u32,
    /// Output side of RandomResizedCrop.
    pub crop_size: u32,
    /// Crop ranges, flip probability and filter (stored as the keys `scale`, `ratio`,
    /// `hflip_p`, `interpolation`).
    #[serde(flatten)]
    pub params: AugmentParams,
    /// Name and version of the sampling rule.
    pub sampler: String,
}

/// Everything that must be equal for a run to reuse a cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheSettings {
    /// Backbone name and its configuration (preprocessing included).
    pub backbone: BackboneConfig,
    /// sha256 of the weights file.
    pub weights_sha256: String,
    /// Augmentation settings.
    pub augment: AugmentConfig,
    /// Seed of the augmentation.
    pub seed: u64,
    /// Storage dtype of the features.
    pub dtype: FeatureDType,
    /// Width of a feature row.
    pub feature_dim: usize,
    /// Largest image accepted, in pixels (`--max-megapixels`): another limit skips other images,
    /// so it is part of what must match. Caches written before it was recorded used the default.
    #[serde(default = "default_max_pixels")]
    pub max_pixels: u64,
    /// Where the weights were read from by the run that created the cache (not compared: the
    /// sha256 identifies the weights; this only tells a later `predict` which file to pass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_file: Option<String>,
}

/// The largest `manifest.json` read (about 170 bytes per image: 400 million images).
pub const MAX_MANIFEST_BYTES: u64 = 64 << 30;

/// The decoder's default size limit: 100 megapixels.
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

fn default_max_pixels() -> u64 {
    DEFAULT_MAX_PIXELS
}

impl CacheSettings {
    /// Human-readable list of the settings that differ (`name: cache has X, this run has Y`).
    pub fn differences(&self, other: &CacheSettings) -> Vec<String> {
        self.differences_as(other, "cache has", "this run has")
    }

    /// [`differences`](Self::differences) with other words for the two sides
    /// (`name: {ours} X, {theirs} Y`).
    pub fn differences_as(&self, other: &CacheSettings, ours: &str, theirs: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cmp = |name: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{name}: {ours} {a}, {theirs} {b}"));
            }
        };
        cmp(
            "backbone",
            self.backbone.name.clone(),
            other.backbone.name.clone(),
        );
        if self.backbone.name == other.backbone.name {
            cmp(
                "backbone config",
                serde_json::to_string(&self.backbone).unwrap_or_default(),
                serde_json::to_string(&other.backbone).unwrap_or_default(),
            );
        }
        cmp(
            "weights sha256",
            self.weights_sha256.clone(),
            other.weights_sha256.clone(),
        );
        cmp(
            "views",
            self.augment.views.to_string(),
            other.augment.views.to_string(),
        );
        let (mut a, mut b) = (self.augment.clone(), other.augment.clone());
        a.views = 0;
        b.views = 0;
        cmp(
            "augmentation",
            serde_json::to_string(&a).unwrap_or_default(),
            serde_json::to_string(&b).unwrap_or_default(),
        );
        cmp("seed", self.seed.to_string(), other.seed.to_string());
        cmp("dtype", self.dtype.name().into(), other.dtype.name().into());
        cmp(
            "feature dim",
            self.feature_dim.to_string(),
            other.feature_dim.to_string(),
        );
        cmp(
            "max megapixels",
            format!("{}", self.max_pixels as f64 / 1e6),
            format!("{}", other.max_pixels as f64 / 1e6),
        );
        out
    }
}

pub use headstart_core::config::Split;

/// What happened to an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageStatus {
    /// Decoded; its rows are in the shards.
    Ok,
    /// Could not be used; `reason` says why. No rows.
    Skipped,
    /// Changed or removed since it was cached: its rows (if any) must be ignored.
    Stale,
}

/// One image of the dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageEntry {
    /// Path relative to the data directory, `/`-separated (lossy UTF-8 for non-UTF-8 names).
    pub path: String,
    /// Hex of the raw path bytes when the name is not valid UTF-8 (Unix), else absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_bytes_hex: Option<String>,
    /// Class index into `classes`.
    pub label: usize,
    /// Dataset-defined split, or null.
    pub split: Option<Split>,
    /// File size in bytes.
    pub bytes: u64,
    /// sha256 of the file, lowercase hex.
    pub sha256: String,
    /// ok, skipped or stale.
    pub status: ImageStatus,
    /// Why the image was skipped (or went stale).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ImageEntry {
    /// The identity of the file inside the dataset: the raw path bytes (hex) for non-UTF-8
    /// names, else the path. Two different files never share a key.
    pub fn key(&self) -> &str {
        self.path_bytes_hex.as_deref().unwrap_or(&self.path)
    }
}

/// One committed shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// File name inside the cache directory.
    pub file: String,
    /// Number of rows.
    pub rows: usize,
    /// sha256 of the file, lowercase hex.
    pub sha256: String,
}

/// The whole manifest.
///
/// Read without serde's `flatten` (see [`ManifestRepr`]), which would buffer the whole document
/// as an intermediate tree: a million-image manifest parses in one streaming pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "ManifestRepr<Vec<ImageEntry>>")]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// The settings the features were computed with.
    #[serde(flatten)]
    pub settings: CacheSettings,
    /// Class names; labels index this list.
    pub classes: Vec<String>,
    /// Every image seen, in processing order; rows' `image` index this list.
    pub images: Vec<ImageEntry>,
    /// Committed shards in order.
    pub shards: Vec<ShardEntry>,
    /// Total rows over all shards.
    pub rows: usize,
}

/// The manifest's keys spelled out (settings not flattened), generic over how `images` is held:
/// whole entries for [`Manifest`], a compact table for [`crate::index::CacheIndex`].
#[derive(Debug, Deserialize)]
pub struct ManifestRepr<I> {
    format: String,
    format_version: u32,
    backbone: BackboneConfig,
    weights_sha256: String,
    augment: AugmentConfig,
    seed: u64,
    dtype: FeatureDType,
    feature_dim: usize,
    #[serde(default = "default_max_pixels")]
    max_pixels: u64,
    #[serde(default)]
    weights_file: Option<String>,
    classes: Vec<String>,
    images: I,
    shards: Vec<ShardEntry>,
    rows: usize,
}

impl<I> ManifestRepr<I> {
    /// Splits into the manifest with no images, and the images.
    pub fn into_parts(self) -> (Manifest, I) {
        let m = Manifest {
            format: self.format,
            format_version: self.format_version,
            settings: CacheSettings {
                max_pixels: self.max_pixels,
                weights_file: self.weights_file,
                backbone: self.backbone,
                weights_sha256: self.weights_sha256,
                augment: self.augment,
                seed: self.seed,
                dtype: self.dtype,
                feature_dim: self.feature_dim,
            },
            classes: self.classes,
            images: Vec::new(),
            shards: self.shards,
            rows: self.rows,
        };
        (m, self.images)
    }
}

impl From<ManifestRepr<Vec<ImageEntry>>> for Manifest {
    fn from(r: ManifestRepr<Vec<ImageEntry>>) -> Self {
        let (mut m, images) = r.into_parts();
        m.images = images;
        m
    }
}

impl Manifest {
    /// A new, empty manifest.
    pub fn new(settings: CacheSettings, classes: Vec<String>) -> Self {
        Self {
            format: FORMAT.to_string(),
            format_version: FORMAT_VERSION,
            settings,
            classes,
            images: Vec::new(),
            shards: Vec::new(),
            rows: 0,
        }
    }

    /// Path of the manifest inside `dir`.
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join(MANIFEST_FILE)
    }

    /// Reads and structurally checks `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = Self::path_in(dir);
        let bytes = match crate::safe_fs::read_regular(&path, MAX_MANIFEST_BYTES) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotACache {
                    path: dir.to_path_buf(),
                })
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        Self::parse(&bytes).map_err(|reason| Error::Manifest { path, reason })
    }

    /// Parses manifest bytes and checks their internal consistency. Never panics.
    pub fn parse(bytes: &[u8]) -> std::result::Result<Self, ManifestError> {
        let m: Manifest = serde_json::from_slice(bytes)?;
        m.check()?;
        Ok(m)
    }

    /// Checks the format, version and internal consistency (labels, row sums, shard names,
    /// and every number that sizes an allocation later).
    pub fn check(&self) -> std::result::Result<(), ManifestError> {
        check_format(&self.format, self.format_version)?;
        check_sizes(
            &self.settings,
            self.classes.len(),
            self.count(ImageStatus::Ok),
            self.rows,
        )?;
        let bad = |m: String| Err(ManifestError::Inconsistent(m));
        for (i, img) in self.images.iter().enumerate() {
            if img.label >= self.classes.len() {
                return bad(format!(
                    "image {i} ({}) has label {} but there are {} classes",
                    img.path,
                    img.label,
                    self.classes.len()
                ));
            }
        }
        check_shards(&self.shards, self.rows)
    }

    /// Writes the manifest: the settings pretty-printed, then one image and one shard per line
    /// (deterministic; about half the bytes of fully pretty JSON for large caches). Streams, so
    /// a million-image manifest is never held in memory as text.
    pub fn write_json(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        #[derive(Serialize)]
        struct Head<'a> {
            format: &'a str,
            format_version: u32,
            #[serde(flatten)]
            settings: &'a CacheSettings,
            classes: &'a [String],
        }
        let head = serde_json::to_string_pretty(&Head {
            format: &self.format,
            format_version: self.format_version,
            settings: &self.settings,
            classes: &self.classes,
        })?;
        let head = head.strip_suffix("\n}").unwrap_or(&head);
        w.write_all(head.as_bytes())?;
        write_list(w, "images", &self.images)?;
        write_list(w, "shards", &self.shards)?;
        writeln!(w, ",\n  \"rows\": {}\n}}", self.rows)
    }

    /// The manifest's bytes, as [`write`](Self::write) stores them.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_json(&mut v).expect("writing to memory");
        v
    }

    /// Writes `dir/manifest.json` atomically, in one streamed pass.
    pub fn write(&self, dir: &Path) -> Result<()> {
        crate::atomic::write_atomic_with(&Self::path_in(dir), |w| self.write_json(w))
    }

    /// Number of images with this status.
    pub fn count(&self, status: ImageStatus) -> usize {
        self.images.iter().filter(|e| e.status == status).count()
    }

    /// Classes without any `ok` image, in class order (an error for training).
    pub fn empty_classes(&self) -> Vec<String> {
        let mut per_class = vec![0usize; self.classes.len()];
        for i in self.usable_images() {
            per_class[self.images[i].label] += 1;
        }
        self.classes
            .iter()
            .zip(&per_class)
            .filter(|(_, &n)| n == 0)
            .map(|(c, _)| c.clone())
            .collect()
    }

    /// Classes that no image (ok or skipped) belongs to: their folders held no image file.
    pub fn classes_without_images(&self) -> Vec<String> {
        let mut any = vec![false; self.classes.len()];
        for e in &self.images {
            if e.status != ImageStatus::Stale {
                if let Some(a) = any.get_mut(e.label) {
                    *a = true;
                }
            }
        }
        self.classes
            .iter()
            .zip(&any)
            .filter(|(_, &a)| !a)
            .map(|(c, _)| c.clone())
            .collect()
    }

    /// Indices of images whose status is `ok`.
    pub fn usable_images(&self) -> impl Iterator<Item = usize> + '_ {
        self.images
            .iter()
            .enumerate()
            .filter(|(_, e)| e.status == ImageStatus::Ok)
            .map(|(i, _)| i)
    }
}

/// Refuses another format or a newer version.
pub(crate) fn check_format(format: &str, version: u32) -> std::result::Result<(), ManifestError> {
    if format != FORMAT {
        return Err(ManifestError::Format(format!(
            "format is `{format}`, expected `{FORMAT}`"
        )));
    }
    if version > FORMAT_VERSION {
        return Err(ManifestError::Format(format!(
            "format version {version} is newer than this headstart understands ({FORMAT_VERSION}); upgrade headstart"
        )));
    }
    Ok(())
}

/// The most augmented views per image (what `extract --views` accepts).
pub const MAX_VIEWS: u32 = 1000;
/// The widest feature row (the widest backbone, DINOv2-large, has 2048).
pub const MAX_FEATURE_DIM: usize = 1 << 16;
/// The most classes a cache may have (iNaturalist has 10,000; ImageNet-21k 21,841).
pub const MAX_CLASSES: usize = 1 << 20;

/// The numbers read from a manifest that size allocations later — views, feature width,
/// classes — within bounds, and consistent with the rows: every usable image has one row per
/// view. A manifest that lies about them is refused here, naming the number, before anything is
/// allocated from it.
pub(crate) fn check_sizes(
    s: &CacheSettings,
    classes: usize,
    ok_images: usize,
    rows: usize,
) -> std::result::Result<(), ManifestError> {
    let bad = |m: String| Err(ManifestError::Inconsistent(m));
    if s.augment.views > MAX_VIEWS {
        return bad(format!(
            "{} augmented views per image; at most {MAX_VIEWS} are possible",
            s.augment.views
        ));
    }
    if s.feature_dim == 0 || s.feature_dim > MAX_FEATURE_DIM {
        return bad(format!(
            "feature width {} is outside 1..={MAX_FEATURE_DIM}",
            s.feature_dim
        ));
    }
    if classes == 0 || classes > MAX_CLASSES {
        return bad(format!("{classes} classes is outside 1..={MAX_CLASSES}"));
    }
    let needed = (ok_images as u64).checked_mul(s.augment.views as u64 + 1);
    if needed.is_none_or(|n| n > rows as u64) {
        return bad(format!(
            "{ok_images} usable images with {} rows each need more than the {rows} rows the shards hold",
            s.augment.views as u64 + 1
        ));
    }
    Ok(())
}

/// Whether `n` is a shard file name headstart writes: `shard-` digits `.safetensors`.
pub(crate) fn is_shard_name(n: &str) -> bool {
    n.strip_prefix("shard-")
        .and_then(|r| r.strip_suffix(".safetensors"))
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Row counts add up to `rows`; shard names are headstart's own (`shard-NNNNN.safetensors`).
pub(crate) fn check_shards(
    shards: &[ShardEntry],
    rows: usize,
) -> std::result::Result<(), ManifestError> {
    let bad = |m: String| Err(ManifestError::Inconsistent(m));
    let total = shards
        .iter()
        .try_fold(0usize, |acc, s| acc.checked_add(s.rows))
        .ok_or_else(|| ManifestError::Inconsistent("shard row counts overflow".into()))?;
    if total != rows {
        return bad(format!(
            "shards hold {total} rows but the manifest says {rows}"
        ));
    }
    for s in shards {
        if !is_shard_name(&s.file) {
            return bad(format!(
                "shard file name `{}` is not one headstart writes (shard-NNNNN.safetensors)",
                s.file
            ));
        }
    }
    Ok(())
}

fn write_list<T: Serialize>(
    w: &mut impl std::io::Write,
    key: &str,
    items: &[T],
) -> std::io::Result<()> {
    write!(w, ",\n  \"{key}\": [")?;
    for (i, item) in items.iter().enumerate() {
        w.write_all(if i == 0 { b"\n    " } else { b",\n    " })?;
        serde_json::to_writer(&mut *w, item)?;
    }
    if !items.is_empty() {
        w.write_all(b"\n  ")?;
    }
    w.write_all(b"]")
}
