//! Writing a cache: rows are buffered per shard; a full shard is written atomically, then a
//! small commit file records it in the journal (`journal.rs`), so committing costs the shard's
//! size whatever the cache's. `manifest.json` is written once, when the run finishes. A killed
//! run therefore leaves only committed shards behind, and a rerun continues from the first image
//! not yet recorded.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::atomic::{remove_stale_temps, write_atomic};
use crate::journal::{self, Commit, StaleMark};
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
pub(crate) struct ShardBuffer {
    pub features: Vec<f32>,
    pub label: Vec<i64>,
    pub image: Vec<i64>,
    pub view: Vec<i64>,
    pub crop: Vec<i64>,
    pub flip: Vec<u8>,
}

impl ShardBuffer {
    pub fn rows(&self) -> usize {
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
    /// Number of the next journal commit.
    next_commit: u64,
    /// Images recorded by the journal so far.
    committed_images: usize,
    /// Stale marks not yet in the journal.
    pending_stale: Vec<StaleMark>,
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
        if let Some(r) = crate::partition::PartitionRecord::read(dir)? {
            return Err(Error::Partition {
                path: dir.to_path_buf(),
                problem: format!(
                    "is a cache partitioned into {n} parts: extract into it part by part (parts I/{n}, then merge), or give a whole-dataset run a directory of its own",
                    n = r.parts
                ),
            });
        }
        let (lock, lock_warning) = DirLock::acquire(dir)?;
        let mut warnings: Vec<String> = lock_warning.into_iter().collect();
        let removed = remove_stale_temps(dir)? + remove_stale_temps(&journal::journal_dir(dir))?;
        if removed > 0 {
            warnings.push(format!(
                "removed {removed} partial file(s) left by an interrupted run"
            ));
        }
        // The journal is the record of a v2 cache; a manifest without one is a finished cache
        // of version 1 (or one written by `cache merge`), adopted as the journal's first commit.
        // A journal that does not replay is repaired where that loses nothing: a torn last
        // commit is dropped (its shard is computed again); any other damage, with a readable
        // manifest.json beside it (a finished run), gives way to the manifest.
        let replayed = match journal::replay(dir) {
            Ok(r) => Ok(r),
            // A finished run's manifest says everything the journal would: nothing is lost.
            Err(e) if Manifest::read(dir).is_ok() => {
                let m = Manifest::read(dir)?;
                warnings.push(format!(
                    "the journal does not replay ({e}); manifest.json is intact, so the journal is rebuilt from it"
                ));
                // (The journal is replaced as a whole once the settings are known to match.)
                return Self::resume_from(
                    dir, m, settings, classes, shard_size, force, lock, warnings,
                );
            }
            // An interrupted run: a torn last commit is dropped (its shard is computed again).
            Err(e) => match journal::replay_repairing(dir) {
                Ok((r, journal::Repair::DroppedLast { commit, reason })) => {
                    warnings.push(format!(
                        "journal commit {commit} was damaged ({reason}) and is dropped: its shard is computed again"
                    ));
                    Ok(r)
                }
                Ok((r, journal::Repair::None)) => Ok(r),
                Err(_) => Err(e),
            },
        };
        let existing = match replayed {
            Ok(Some(r)) => Some((r.manifest, Some(r.shards_after))),
            Ok(None) => match Manifest::read(dir) {
                Ok(m) => Some((m, None)),
                Err(Error::NotACache { .. }) => None,
                Err(e) if force => {
                    warnings.push(format!("discarding unreadable cache: {e}"));
                    discard(dir, None)?;
                    None
                }
                Err(e) => return Err(e),
            },
            Err(e) if force => {
                warnings.push(format!("discarding unreadable cache: {e}"));
                discard(dir, None)?;
                None
            }
            Err(e) => return Err(e),
        };
        Self::resume_with(
            dir, existing, settings, classes, shard_size, force, lock, warnings,
        )
    }

    /// Opens the writer on a finished cache's manifest (the journal is rebuilt from it).
    #[allow(clippy::too_many_arguments)]
    fn resume_from(
        dir: &Path,
        m: Manifest,
        settings: CacheSettings,
        classes: Vec<String>,
        shard_size: usize,
        force: bool,
        lock: DirLock,
        warnings: Vec<String>,
    ) -> Result<Self> {
        Self::resume_with(
            dir,
            Some((m, None)),
            settings,
            classes,
            shard_size,
            force,
            lock,
            warnings,
        )
    }

    /// Opens the writer on what was found in `dir` (`None`: a new cache).
    #[allow(clippy::too_many_arguments)]
    fn resume_with(
        dir: &Path,
        existing: Option<(Manifest, Option<Vec<usize>>)>,
        settings: CacheSettings,
        classes: Vec<String>,
        shard_size: usize,
        force: bool,
        lock: DirLock,
        mut warnings: Vec<String>,
    ) -> Result<Self> {
        let (manifest, next_commit) = match existing {
            Some((m, _)) if force => {
                warnings.push("forced: discarding the existing cache".to_string());
                discard(dir, Some(&m))?;
                start(dir, settings, classes)?
            }
            Some((m, commits)) => {
                let mut diffs = m.settings.differences(&settings);
                if m.classes != classes {
                    diffs.push(format!(
                        "classes: cache has {:?}, this run has {:?}",
                        m.classes, classes
                    ));
                }
                if !diffs.is_empty() {
                    return Err(Error::ConfigMismatch {
                        path: dir.to_path_buf(),
                        differences: diffs,
                    });
                }
                match (repair(dir, m, &mut warnings)?, commits) {
                    (Repaired::Intact(m), Some(after)) => (m, after.len() as u64),
                    (Repaired::Intact(m), None) => {
                        let n = journal::rewrite(dir, &m)?;
                        (m, n)
                    }
                    (
                        Repaired::Truncated {
                            manifest,
                            first_bad,
                        },
                        after,
                    ) => {
                        // The manifest may list the damaged shard: it goes until the run ends.
                        remove_manifest(dir)?;
                        // Back to the state right after the commit before the damaged shard's,
                        // as if the run had been killed there, when that commit holds it alone;
                        // else the truncated state becomes the journal's single commit.
                        let c = after
                            .as_ref()
                            .and_then(|a| a.iter().position(|&n| n > first_bad).map(|c| (a, c)));
                        match c {
                            Some((a, c)) if c > 0 && a[c - 1] == first_bad => {
                                journal::truncate(dir, c as u64, a.len() as u64)?;
                                let r = journal::replay(dir)?.ok_or_else(|| {
                                    Error::Invalid("the journal vanished while repairing".into())
                                })?;
                                (r.manifest, c as u64)
                            }
                            _ => {
                                let n = journal::rewrite(dir, &manifest)?;
                                (manifest, n)
                            }
                        }
                    }
                }
            }
            None => start(dir, settings, classes)?,
        };
        // A cache adopted from version 1 is version 2 from this run on.
        let mut manifest = manifest;
        manifest.format_version = FORMAT_VERSION;
        let by_path = manifest
            .images
            .iter()
            .enumerate()
            .filter(|(_, e)| e.status != ImageStatus::Stale)
            .map(|(i, e)| (e.key().to_string(), i))
            .collect();
        let manifest_len = manifest.images.len();
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            shard_size,
            buffer: ShardBuffer::default(),
            by_path,
            next_commit,
            committed_images: manifest_len,
            pending_stale: Vec::new(),
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
        for (i, e) in self.manifest.images.iter_mut().enumerate() {
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
            self.pending_stale.push(StaleMark {
                image: i,
                reason: reason.to_string(),
            });
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
            let reason = "file changed since it was cached";
            e.status = ImageStatus::Stale;
            e.reason = Some(reason.to_string());
            self.pending_stale.push(StaleMark {
                image: old,
                reason: reason.to_string(),
            });
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

    /// Writes the buffered rows as the next shard (atomically) and records it in the journal.
    /// Costs the shard's size, not the cache's.
    pub fn commit_shard(&mut self) -> Result<()> {
        let index = self.manifest.shards.len();
        let file = shard_name(index);
        let bytes = encode_shard(&self.buffer, &self.manifest.settings)?;
        let path = self.dir.join(&file);
        write_atomic(&path, &bytes)?;
        let entry = ShardEntry {
            file,
            rows: self.buffer.rows(),
            sha256: hex::encode(Sha256::digest(&bytes)),
        };
        self.commit(Some(entry))?;
        self.buffer = ShardBuffer::default();
        Ok(())
    }

    /// Writes the next journal commit: the images registered and marked stale since the last
    /// one, and `shard`; then applies `shard` to the in-memory manifest.
    fn commit(&mut self, shard: Option<ShardEntry>) -> Result<()> {
        let c = Commit {
            commit: self.next_commit,
            start: None,
            first_image: self.committed_images,
            images: self.manifest.images[self.committed_images..].to_vec(),
            stale: std::mem::take(&mut self.pending_stale),
            shards: shard.iter().cloned().collect(),
        };
        journal::write_commit(&self.dir, &c)?;
        self.next_commit += 1;
        self.committed_images = self.manifest.images.len();
        if let Some(s) = shard {
            self.manifest.rows += s.rows;
            self.manifest.shards.push(s);
        }
        Ok(())
    }

    /// Commits what is buffered and writes the final manifest (once, in one pass).
    pub fn finish(mut self) -> Result<Manifest> {
        if self.buffer.rows() > 0 {
            self.commit_shard()?;
        } else if self.committed_images < self.manifest.images.len()
            || !self.pending_stale.is_empty()
        {
            self.commit(None)?;
        }
        self.manifest.write(&self.dir)?;
        Ok(self.manifest.clone())
    }
}

/// Commit 0 of a new cache: its settings and classes.
fn start(dir: &Path, settings: CacheSettings, classes: Vec<String>) -> Result<(Manifest, u64)> {
    let m = Manifest::new(settings, classes);
    journal::write_commit(dir, &Commit::opening(&m))?;
    Ok((m, 1))
}

pub(crate) fn encode_shard(b: &ShardBuffer, s: &CacheSettings) -> Result<Vec<u8>> {
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

enum Repaired {
    Intact(Manifest),
    Truncated {
        manifest: Manifest,
        first_bad: usize,
    },
}

/// Drops the first shard that fails verification and everything recorded after it, as if the run
/// had been killed just before writing it: the next run recomputes exactly that part.
fn repair(dir: &Path, mut m: Manifest, warnings: &mut Vec<String>) -> Result<Repaired> {
    let cache = FeatureCache::unlocked(dir, m.clone());
    let problems = cache.verify();
    let Some(first_bad) = m
        .shards
        .iter()
        .position(|s| problems.iter().any(|p| p.file == s.file))
    else {
        return Ok(Repaired::Intact(m));
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
    Ok(Repaired::Truncated {
        manifest: m,
        first_bad,
    })
}

fn remove_manifest(dir: &Path) -> Result<()> {
    crate::atomic::remove_durably(&Manifest::path_in(dir))
}

/// Removes a cache's manifest first (so that no reader trusts what follows), then its journal
/// and the shards `m` lists.
fn discard(dir: &Path, m: Option<&Manifest>) -> Result<()> {
    remove_manifest(dir)?;
    journal::remove(dir)?;
    match m {
        Some(m) => remove_cache_files(dir, m)?,
        // Nothing readable says which shards there are: every file named like one of ours goes
        // (a link named so is removed itself, never its target).
        None => {
            for e in std::fs::read_dir(dir)
                .map_err(|e| Error::io(dir, e))?
                .flatten()
            {
                let n = e.file_name().to_string_lossy().into_owned();
                if crate::manifest::is_shard_name(&n) {
                    crate::atomic::remove_durably(&e.path())?;
                }
            }
        }
    }
    Ok(())
}

fn remove_cache_files(dir: &Path, m: &Manifest) -> Result<()> {
    for s in &m.shards {
        if !s.file.starts_with("shard-") || !s.file.ends_with(".safetensors") {
            continue; // never delete anything but our own shards
        }
        crate::atomic::remove_durably(&dir.join(&s.file))?;
    }
    Ok(())
}
