//! Writing a cache: rows are buffered per shard; a full shard is written atomically, then the
//! manifest is rewritten to record it. A killed run therefore leaves only committed shards behind,
//! and a rerun continues from the first image not yet recorded.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::atomic::{remove_stale_temps, write_atomic};
use crate::lock::DirLock;
use crate::manifest::{
    CacheSettings, FeatureDType, ImageEntry, ImageStatus, Manifest, ShardEntry, FORMAT_VERSION,
};
use crate::reader::FeatureCache;
use crate::st::{serialize, Data, NamedTensor};
use crate::{Error, Result};

/// Provenance of one row: which view and how it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewMeta {
    /// 0 = eval view, 1..=K augmented views.
    pub view: u32,
    /// Crop box in source pixels (after EXIF orientation): left, top, width, height.
    pub crop: [i64; 4],
    /// Whether the crop was flipped horizontally.
    pub flip: bool,
}

/// Whether an image found on disk is already in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Same path and content: nothing to do.
    Cached,
    /// Not in the cache, or its content changed: process it.
    New,
}

#[derive(Debug, Default)]
struct ShardBuffer {
    features: Vec<f32>,
    label: Vec<i64>,
    image: Vec<i64>,
    view: Vec<i64>,
    crop: Vec<i64>,
    flip: Vec<u8>,
}

impl ShardBuffer {
    fn rows(&self) -> usize {
        self.label.len()
    }
}

/// Name of shard `i`.
pub fn shard_name(i: usize) -> String {
    format!("shard-{i:05}.safetensors")
}

/// Writes a cache directory, resuming a compatible one.
#[derive(Debug)]
pub struct CacheWriter {
    dir: PathBuf,
    manifest: Manifest,
    shard_size: usize,
    buffer: ShardBuffer,
    by_path: HashMap<String, usize>,
    _lock: DirLock,
    /// Warnings for the user (stale lock taken over, temp files removed).
    pub warnings: Vec<String>,
}

impl CacheWriter {
    /// Opens `dir` for writing: creates it, or resumes the cache in it when its settings equal
    /// `settings` (and its classes equal `classes`). With `force`, an incompatible cache is
    /// discarded. Takes the directory lock.
    pub fn open(
        dir: &Path,
        settings: CacheSettings,
        classes: Vec<String>,
        shard_size: usize,
        force: bool,
    ) -> Result<Self> {
        if shard_size == 0 {
            return Err(Error::Invalid("shard size must be at least 1".into()));
        }
        if dir.exists() && !dir.is_dir() {
            return Err(Error::io(
                dir,
                std::io::Error::other("exists and is not a directory"),
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let (lock, lock_warning) = DirLock::acquire(dir)?;
        let mut warnings: Vec<String> = lock_warning.into_iter().collect();
        let removed = remove_stale_temps(dir)?;
        if removed > 0 {
            warnings.push(format!(
                "removed {removed} partial file(s) left by an interrupted run"
            ));
        }
        let existing = match Manifest::read(dir) {
            Ok(m) => Some(m),
            Err(Error::NotACache { .. }) => None,
            Err(e) if force => {
                warnings.push(format!("discarding unreadable cache: {e}"));
                None
            }
            Err(e) => return Err(e),
        };
        let manifest = match existing {
            Some(m) if force => {
                warnings.push("forced: discarding the existing cache".to_string());
                remove_cache_files(dir, &m)?;
                Manifest::new(settings, classes)
            }
            Some(m) => {
                let mut diffs = m.settings.differences(&settings);
                if m.classes != classes {
                    diffs.push(format!(
                        "classes: cache has {:?}, this run has {:?}",
                        m.classes, classes
                    ));
                }
                if diffs.is_empty() {
                    repair(dir, m, &mut warnings)?
                } else {
                    return Err(Error::ConfigMismatch {
                        path: dir.to_path_buf(),
                        differences: diffs,
                    });
                }
            }
            None => Manifest::new(settings, classes),
        };
        let by_path = manifest
            .images
            .iter()
            .enumerate()
            .filter(|(_, e)| e.status != ImageStatus::Stale)
            .map(|(i, e)| (e.key().to_string(), i))
            .collect();
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            shard_size,
            buffer: ShardBuffer::default(),
            by_path,
            _lock: lock,
            warnings,
        })
    }

    /// The manifest as it stands (committed plus buffered images).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Is the file with this [`ImageEntry::key`] and content `sha256` already cached (processed,
    /// ok or skipped)?
    pub fn lookup(&self, key: &str, sha256: &str) -> Lookup {
        match self.by_path.get(key) {
            Some(&i) if self.manifest.images[i].sha256 == sha256 => Lookup::Cached,
            _ => Lookup::New,
        }
    }

    /// Marks images that were cached but are no longer on disk (or changed) as stale.
    /// `present` maps [`ImageEntry::key`]s to their current sha256.
    pub fn mark_stale(&mut self, present: &HashMap<String, String>) -> usize {
        let mut n = 0;
        for e in self.manifest.images.iter_mut() {
            if e.status == ImageStatus::Stale {
                continue;
            }
            let reason = match present.get(e.key()) {
                None => "file no longer in the dataset",
                Some(sha) if *sha != e.sha256 => "file changed since it was cached",
                _ => continue,
            };
            e.status = ImageStatus::Stale;
            e.reason = Some(reason.to_string());
            self.by_path.remove(e.key());
            n += 1;
        }
        n
    }

    fn register(&mut self, entry: ImageEntry) -> Result<usize> {
        if entry.label >= self.manifest.classes.len() {
            return Err(Error::Invalid(format!(
                "{}: label {} out of range",
                entry.path, entry.label
            )));
        }
        let idx = self.manifest.images.len();
        // A file is listed once: an older entry for the same file goes stale.
        if let Some(old) = self.by_path.insert(entry.key().to_string(), idx) {
            let e = &mut self.manifest.images[old];
            e.status = ImageStatus::Stale;
            e.reason = Some("file changed since it was cached".to_string());
        }
        self.manifest.images.push(entry);
        Ok(idx)
    }

    /// Records an image that could not be used.
    pub fn add_skipped(&mut self, mut entry: ImageEntry, reason: String) -> Result<()> {
        entry.status = ImageStatus::Skipped;
        entry.reason = Some(reason);
        self.register(entry).map(|_| ())
    }

    /// Adds an image with its rows: `features` holds `views.len()` rows of `feature_dim` values.
    /// Commits the current shard first if these rows would not fit in it.
    pub fn add_image(
        &mut self,
        mut entry: ImageEntry,
        views: &[ViewMeta],
        features: &[f32],
    ) -> Result<()> {
        let dim = self.manifest.settings.feature_dim;
        if features.len() != views.len() * dim {
            return Err(Error::Invalid(format!(
                "{}: {} feature values for {} views of width {dim}",
                entry.path,
                features.len(),
                views.len()
            )));
        }
        if self.buffer.rows() > 0 && self.buffer.rows() + views.len() > self.shard_size {
            self.commit_shard()?;
        }
        entry.status = ImageStatus::Ok;
        entry.reason = None;
        let label = entry.label as i64;
        let idx = self.register(entry)? as i64;
        let b = &mut self.buffer;
        b.features.extend_from_slice(features);
        for v in views {
            b.label.push(label);
            b.image.push(idx);
            b.view.push(v.view as i64);
            b.crop.extend_from_slice(&v.crop);
            b.flip.push(v.flip as u8);
        }
        Ok(())
    }

    /// Writes the buffered rows as the next shard (atomically) and records it in the manifest.
    pub fn commit_shard(&mut self) -> Result<()> {
        let index = self.manifest.shards.len();
        let file = shard_name(index);
        let bytes = encode_shard(&self.buffer, &self.manifest.settings)?;
        let path = self.dir.join(&file);
        write_atomic(&path, &bytes)?;
        let rows = self.buffer.rows();
        self.manifest.shards.push(ShardEntry {
            file,
            rows,
            sha256: hex::encode(Sha256::digest(&bytes)),
        });
        self.manifest.rows += rows;
        self.buffer = ShardBuffer::default();
        self.manifest.write(&self.dir)
    }

    /// Commits what is buffered and writes the final manifest.
    pub fn finish(mut self) -> Result<Manifest> {
        if self.buffer.rows() > 0 {
            self.commit_shard()?;
        } else {
            self.manifest.write(&self.dir)?;
        }
        Ok(self.manifest.clone())
    }
}

fn encode_shard(b: &ShardBuffer, s: &CacheSettings) -> Result<Vec<u8>> {
    let rows = b.rows();
    let half: Vec<half::f16>;
    let features = match s.dtype {
        FeatureDType::F32 => Data::F32(&b.features),
        FeatureDType::F16 => {
            half = b.features.iter().map(|&x| half::f16::from_f32(x)).collect();
            Data::F16(&half)
        }
    };
    let tensors = [
        NamedTensor {
            name: "features",
            shape: vec![rows, s.feature_dim],
            data: features,
        },
        NamedTensor {
            name: "label",
            shape: vec![rows],
            data: Data::I64(&b.label),
        },
        NamedTensor {
            name: "image",
            shape: vec![rows],
            data: Data::I64(&b.image),
        },
        NamedTensor {
            name: "view",
            shape: vec![rows],
            data: Data::I64(&b.view),
        },
        NamedTensor {
            name: "crop_box",
            shape: vec![rows, 4],
            data: Data::I64(&b.crop),
        },
        NamedTensor {
            name: "flip",
            shape: vec![rows],
            data: Data::U8(&b.flip),
        },
    ];
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), crate::manifest::FORMAT.to_string());
    meta.insert("format_version".to_string(), FORMAT_VERSION.to_string());
    meta.insert("backbone".to_string(), s.backbone.name.clone());
    meta.insert("weights_sha256".to_string(), s.weights_sha256.clone());
    meta.insert("dtype".to_string(), s.dtype.name().to_string());
    serialize(&tensors, &meta)
}

/// Drops the first shard that fails verification and everything recorded after it, as if the run
/// had been killed just before writing it: the next run recomputes exactly that part.
fn repair(dir: &Path, mut m: Manifest, warnings: &mut Vec<String>) -> Result<Manifest> {
    let cache = FeatureCache::unlocked(dir, m.clone());
    let problems = cache.verify();
    let Some(first_bad) = m
        .shards
        .iter()
        .position(|s| problems.iter().any(|p| p.file == s.file))
    else {
        return Ok(m);
    };
    let keep_images = match first_bad {
        0 => 0,
        k => cache.last_image_of(&m.shards[k - 1])?.map_or(0, |i| i + 1),
    };
    warnings.push(format!(
        "{} failed verification ({}): recomputing it and the {} shard(s) after it",
        m.shards[first_bad].file,
        problems
            .iter()
            .find(|p| p.file == m.shards[first_bad].file)
            .map(|p| p.check.as_str())
            .unwrap_or("?"),
        m.shards.len() - first_bad - 1
    ));
    m.shards.truncate(first_bad);
    m.rows = m.shards.iter().map(|s| s.rows).sum();
    m.images.truncate(keep_images);
    m.write(dir)?;
    Ok(m)
}

fn remove_cache_files(dir: &Path, m: &Manifest) -> Result<()> {
    for s in &m.shards {
        if !s.file.starts_with("shard-") || !s.file.ends_with(".safetensors") {
            continue; // never delete anything but our own shards
        }
        let p = dir.join(&s.file);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(p, e)),
        }
    }
    let p = Manifest::path_in(dir);
    std::fs::remove_file(&p).map_err(|e| Error::io(p, e))
}
