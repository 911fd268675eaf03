//! Reading and verifying a cache.

use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::ShardProblem;
use crate::lock::DirLock;
use crate::manifest::{FeatureDType, ImageStatus, Manifest, ShardEntry};
use crate::{Error, Result};

/// All usable rows of a cache, in shard order, features widened to f32.
#[derive(Debug, Clone, Default)]
pub struct CachedRows {
    /// Feature width.
    pub dim: usize,
    /// `rows × dim` values, row-major.
    pub features: Vec<f32>,
    /// Class index per row.
    pub label: Vec<i64>,
    /// Image index (into the manifest's `images`) per row.
    pub image: Vec<i64>,
    /// View index per row (0 = eval view).
    pub view: Vec<i64>,
}

impl CachedRows {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.label.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.label.is_empty()
    }

    /// The feature vector of row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.features[i * self.dim..(i + 1) * self.dim]
    }
}

/// One problem found by [`FeatureCache::verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The file concerned (manifest or shard).
    pub file: String,
    /// Which check failed (`manifest`, `missing`, `sha256`, `format`, `rows`, `index`).
    pub check: String,
    /// Details.
    pub message: String,
}

/// An opened cache: its directory and parsed manifest.
#[derive(Debug, Clone)]
pub struct FeatureCache {
    /// The cache directory.
    pub dir: PathBuf,
    /// The parsed manifest.
    pub manifest: Manifest,
    /// The reader's shared lock, held while this (or a clone) is alive, so that no extract
    /// writes the cache meanwhile.
    _lock: Option<std::sync::Arc<DirLock>>,
}

/// One shard, read whole, its checksum and structure checked.
#[derive(Debug, Clone)]
pub struct ShardData {
    /// `rows × dim` features, widened to f32.
    pub features: Vec<f32>,
    /// Class per row.
    pub label: Vec<i64>,
    /// Image index per row.
    pub image: Vec<i64>,
    /// View per row.
    pub view: Vec<i64>,
}

/// Reads shard `entry` of the cache in `dir` in one pass: checks its sha256 against the
/// manifest's, its tensors' dtypes and shapes (`dim` wide, stored as `dtype`), and that every
/// row's image exists and has the row's label (`label_of(image)`, `None` past the last image).
/// Errors name the shard and the failed check.
pub fn read_shard(
    dir: &Path,
    entry: &ShardEntry,
    dim: usize,
    dtype: FeatureDType,
    label_of: &dyn Fn(usize) -> Option<usize>,
) -> Result<ShardData> {
    let path = dir.join(&entry.file);
    let shard_err = |kind: ShardProblem, reason: String| Error::Shard {
        path: path.clone(),
        kind,
        reason,
    };
    let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => shard_err(ShardProblem::Missing, "missing".into()),
        _ => Error::io(&path, e),
    })?;
    let sha = hex::encode(Sha256::digest(&bytes));
    if sha != entry.sha256 {
        return Err(shard_err(
            ShardProblem::Checksum,
            format!(
                "checksum mismatch: sha256 is {sha}, manifest says {}",
                entry.sha256
            ),
        ));
    }
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| shard_err(ShardProblem::Format, format!("not a safetensors file: {e}")))?;
    let rows = entry.rows;
    let get = |name: &str, dtype: Dtype, shape: &[usize]| -> Result<Vec<u8>> {
        let t = st
            .tensor(name)
            .map_err(|_| shard_err(ShardProblem::Format, format!("tensor `{name}` missing")))?;
        if t.dtype() != dtype || t.shape() != shape {
            return Err(shard_err(
                ShardProblem::Format,
                format!(
                    "tensor `{name}` is {:?} {:?}, expected {dtype:?} {shape:?}",
                    t.dtype(),
                    t.shape()
                ),
            ));
        }
        Ok(t.data().to_vec())
    };
    let features = match dtype {
        FeatureDType::F32 => get("features", Dtype::F32, &[rows, dim])?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        FeatureDType::F16 => get("features", Dtype::F16, &[rows, dim])?
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
    };
    let ints = |name: &str| -> Result<Vec<i64>> {
        Ok(get(name, Dtype::I64, &[rows])?
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect())
    };
    let data = ShardData {
        features,
        label: ints("label")?,
        image: ints("image")?,
        view: ints("view")?,
    };
    for r in 0..rows {
        let (img, lab) = (data.image[r], data.label[r]);
        let Some(label) = usize::try_from(img).ok().and_then(label_of) else {
            return Err(shard_err(
                ShardProblem::Index,
                format!("row {r}: image index {img} outside the manifest's images"),
            ));
        };
        if lab < 0 || label as i64 != lab {
            return Err(shard_err(
                ShardProblem::Index,
                format!("row {r}: label {lab} disagrees with the manifest"),
            ));
        }
    }
    Ok(data)
}

impl FeatureCache {
    /// Opens `dir` and parses its manifest (no shard is read yet).
    pub fn open(dir: &Path) -> Result<Self> {
        // A shared lock: fails at once, naming the writer, while an extract is writing here.
        let lock = Self::lock_for_reading(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest: Manifest::read(dir)?,
            _lock: Some(std::sync::Arc::new(lock)),
        })
    }

    /// Takes the reader's shared lock of a cache directory (naming the writer if an extract is
    /// writing it), or says why the directory cannot be read: no cache, an unfinished one, or a
    /// partitioned one not merged yet.
    pub(crate) fn lock_for_reading(dir: &Path) -> Result<DirLock> {
        // Not a cache: say so before touching anything (no lock file is created in a folder that
        // is not a cache — a data folder, say).
        if !dir.is_dir() {
            return Err(Error::NotACache {
                path: dir.to_path_buf(),
            });
        }
        let has_manifest = Manifest::path_in(dir).is_file();
        if has_manifest || crate::journal::has_journal(dir) {
            let lock = DirLock::acquire_shared(dir)?;
            if has_manifest || Manifest::path_in(dir).is_file() {
                return Ok(lock);
            }
        }
        Err(Self::why_no_manifest(dir))
    }

    /// Why a directory without `manifest.json` cannot be read: a partitioned cache not merged
    /// yet, an interrupted extract, or no cache at all.
    pub fn why_no_manifest(dir: &Path) -> Error {
        match crate::partition::parts_status(dir) {
            // A merge holds the top-level lock while the manifest is away: say so, by pid.
            Ok(Some(status)) => {
                return match DirLock::acquire_shared(dir) {
                    Err(e @ Error::Locked { .. }) => e,
                    _ => status.not_merged(dir),
                }
            }
            Err(e) => return e,
            Ok(None) => {}
        }
        match crate::journal::replay(dir) {
            Ok(Some(r)) => Error::Unfinished {
                path: dir.to_path_buf(),
                shards: r.manifest.shards.len(),
                part: crate::partition::Part::of_dir(dir),
            },
            Ok(None) => Error::NotACache {
                path: dir.to_path_buf(),
            },
            Err(e) => e,
        }
    }

    /// A view of a cache whose lock the caller already holds (the writer's own checks).
    pub(crate) fn unlocked(dir: &Path, manifest: Manifest) -> Self {
        Self {
            dir: dir.to_path_buf(),
            manifest,
            _lock: None,
        }
    }

    /// sha256 of `manifest.json` as stored (for provenance records).
    pub fn manifest_sha256(&self) -> Result<String> {
        let p = Manifest::path_in(&self.dir);
        let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
        Ok(hex::encode(Sha256::digest(bytes)))
    }

    fn read_shard(&self, entry: &ShardEntry) -> Result<ShardData> {
        let m = &self.manifest;
        let classes = m.classes.len();
        read_shard(
            &self.dir,
            entry,
            m.settings.feature_dim,
            m.settings.dtype,
            &|i| m.images.get(i).map(|e| e.label).filter(|&l| l < classes),
        )
    }

    /// Index of the last image with rows in `entry` (a shard that passes verification).
    pub fn last_image_of(&self, entry: &ShardEntry) -> Result<Option<usize>> {
        Ok(self
            .read_shard(entry)?
            .image
            .iter()
            .max()
            .map(|&i| i as usize))
    }

    /// Reads every shard (checking checksums and structure) and returns the rows of images whose
    /// status is `ok`.
    pub fn load(&self) -> Result<CachedRows> {
        let dim = self.manifest.settings.feature_dim;
        let mut out = CachedRows {
            dim,
            ..Default::default()
        };
        for entry in &self.manifest.shards {
            let s = self.read_shard(entry)?;
            for r in 0..entry.rows {
                let img = s.image[r] as usize;
                if self.manifest.images[img].status != ImageStatus::Ok {
                    continue;
                }
                out.features
                    .extend_from_slice(&s.features[r * dim..(r + 1) * dim]);
                out.label.push(s.label[r]);
                out.image.push(s.image[r]);
                out.view.push(s.view[r]);
            }
        }
        Ok(out)
    }

    /// Re-hashes every shard and checks its structure; returns every problem found (empty = ok).
    pub fn verify(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        for entry in &self.manifest.shards {
            if let Err(e) = self.read_shard(entry) {
                let check = match &e {
                    Error::Shard { kind, .. } => kind.check(),
                    _ => ShardProblem::Format.check(),
                };
                problems.push(Problem {
                    file: entry.file.clone(),
                    check: check.into(),
                    message: e.to_string(),
                });
            }
        }
        problems
    }

    /// Like [`verify`](Self::verify) but for a directory whose manifest may itself be broken.
    pub fn verify_dir(dir: &Path) -> Vec<Problem> {
        match Self::open(dir) {
            Ok(c) => c.verify(),
            Err(e) => vec![Problem {
                file: crate::manifest::MANIFEST_FILE.into(),
                check: "manifest".into(),
                message: e.to_string(),
            }],
        }
    }
}
