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
    /// The file that was read and verified (for readers that come back to it later).
    pub stamp: crate::safe_fs::FileStamp,
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
    // Never through a link, only a regular file, no larger than its rows can be: a FIFO, a
    // device or a link out of the cache is refused here, naming the shard.
    let max = crate::shard_file::max_shard_bytes(entry.rows, dim, dtype).ok_or_else(|| {
        shard_err(
            ShardProblem::Format,
            format!(
                "{} rows of width {dim}: more than a shard can hold",
                entry.rows
            ),
        )
    })?;
    let (bytes, stamp) =
        crate::safe_fs::read_regular_stamped(&path, max).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => shard_err(ShardProblem::Missing, "missing".into()),
            _ => shard_err(ShardProblem::Format, e.to_string()),
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
    let features: Vec<f32> = match dtype {
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
    // A row that is not finite came from a broken backbone (a model config that overflows, a
    // bad weights file): never a valid feature, never trained on.
    if let Some(at) = features.iter().position(|v| !v.is_finite()) {
        return Err(shard_err(
            ShardProblem::Values,
            format!(
                "row {} holds a non-finite feature ({}): the backbone that wrote it produced NaN or infinity",
                at / dim.max(1),
                features[at]
            ),
        ));
    }
    let data = ShardData {
        features,
        label: ints("label")?,
        image: ints("image")?,
        view: ints("view")?,
        stamp,
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
        let bytes = crate::safe_fs::read_regular(&p, crate::manifest::MAX_MANIFEST_BYTES)
            .map_err(|e| Error::io(&p, e))?;
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
        let m = &self.manifest;
        let views = m.settings.augment.views as usize + 1;
        // Where each image's rows are: (shard, first row, rows, views seen as a bit set).
        // Views as a bit set (checked for up to 64 views; beyond, the count is).
        #[derive(Clone, Copy, Default)]
        struct Seen {
            shard: u32,
            first: u32,
            count: u32,
            split: bool,
            views: u64,
            foreign_view: bool,
        }
        let all_views = if views >= 64 {
            u64::MAX
        } else {
            (1u64 << views) - 1
        };
        let mut seen: Vec<Option<Seen>> = vec![None; m.images.len()];
        for (k, entry) in m.shards.iter().enumerate() {
            let data = match self.read_shard(entry) {
                Ok(d) => d,
                Err(e) => {
                    let check = match &e {
                        Error::Shard { kind, .. } => kind.check(),
                        _ => ShardProblem::Format.check(),
                    };
                    problems.push(Problem {
                        file: entry.file.clone(),
                        check: check.into(),
                        message: e.to_string(),
                    });
                    continue;
                }
            };
            for (r, (&img, &view)) in data.image.iter().zip(&data.view).enumerate() {
                let i = img as usize; // in range: read_shard checked it
                let s = seen[i].get_or_insert(Seen {
                    shard: k as u32,
                    first: r as u32,
                    ..Default::default()
                });
                if s.shard != k as u32 || (s.first + s.count) as usize != r {
                    s.split = true;
                }
                s.count += 1;
                match u32::try_from(view) {
                    Ok(v) if (v as usize) < views && v < 64 => s.views |= 1 << v,
                    Ok(v) if (v as usize) < views => {}
                    _ => s.foreign_view = true, // a view the settings do not have
                }
            }
        }
        // Every usable image: its rows consecutive, in one shard, one per view (the layout
        // extract writes and training reads). Skipped images have none. Checked only when every
        // shard could be read (a damaged shard is reported once, above).
        let shards_ok = problems.is_empty();
        for (i, e) in m.images.iter().enumerate().filter(|_| shards_ok) {
            let problem = match (e.status, seen[i]) {
                (ImageStatus::Ok, None) => Some("has no rows".to_string()),
                (ImageStatus::Ok, Some(s)) if s.split => Some(
                    "has rows in more than one place (not consecutive, or split across shards)"
                        .into(),
                ),
                (ImageStatus::Ok, Some(s))
                    if s.count as usize != views || s.views != all_views || s.foreign_view =>
                {
                    Some(format!(
                        "has {} rows, not one for each of its {views} views",
                        s.count
                    ))
                }
                (ImageStatus::Skipped, Some(_)) => Some("is skipped but has rows".into()),
                _ => None,
            };
            if let Some(p) = problem {
                let file = seen[i]
                    .map(|s| m.shards[s.shard as usize].file.clone())
                    .unwrap_or_else(|| crate::manifest::MANIFEST_FILE.into());
                problems.push(Problem {
                    file,
                    check: ShardProblem::Index.check().into(),
                    message: format!("image {i} ({}) {p}", e.path),
                });
                if problems.len() > 1000 {
                    break;
                }
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
