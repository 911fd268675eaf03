//! Random access to the rows of one shard without reading the whole file: the safetensors
//! header is parsed once, then rows are read with positioned reads (`pread`). Used where the
//! cache does not fit in memory: `cache merge` and streaming training. Nothing is memory-mapped,
//! so the page cache, not the process, holds the data (peak RSS stays flat however big the
//! cache is).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::ShardProblem;
use crate::manifest::FeatureDType;
use crate::{Error, Result};

/// Largest safetensors header accepted (the format's own limit).
const MAX_HEADER: u64 = 100_000_000;

#[derive(Debug, Clone, Deserialize)]
struct TensorHeader {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

#[derive(Debug, Clone, Copy)]
struct Span {
    /// Absolute file offset of the tensor's first byte.
    start: u64,
    /// Bytes per row (first dimension).
    row_bytes: u64,
}

/// The most bytes a shard of `rows` rows of width `dim` in `dtype` can hold (its tensors plus
/// the largest header): a file longer than this is refused before it is read. `None` when the
/// numbers overflow (they came from a damaged manifest).
pub fn max_shard_bytes(rows: usize, dim: usize, dtype: FeatureDType) -> Option<u64> {
    let feature = match dtype {
        FeatureDType::F32 => 4u64,
        FeatureDType::F16 => 2,
    };
    let per_row = (dim as u64)
        .checked_mul(feature)?
        .checked_add(8 * 3 + 8 * 4 + 1)?;
    (rows as u64)
        .checked_mul(per_row)?
        .checked_add(8 + MAX_HEADER)
}

/// One shard opened for positioned reads; its structure checked against the expected rows,
/// width and dtype.
#[derive(Debug)]
pub struct ShardFile {
    path: PathBuf,
    file: File,
    /// The file as opened (or as verified before): every read checks it is still that file.
    stamp: crate::safe_fs::FileStamp,
    rows: usize,
    dim: usize,
    dtype: FeatureDType,
    spans: HashMap<&'static str, Span>,
}

thread_local! {
    /// Reused for the raw bytes of [`ShardFile::read_features`]: streaming training calls it
    /// once per row (one buffer per thread, so shard files can be shared between threads).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The tensors of a shard: name, dtype, bytes per element and trailing shape.
const TENSORS: [(&str, &str, u64); 6] = [
    ("features", "", 0),
    ("label", "I64", 8),
    ("image", "I64", 8),
    ("view", "I64", 8),
    ("crop_box", "I64", 8),
    ("flip", "U8", 1),
];

/// A shard that is not the file that was verified any more.
fn changed(path: &Path) -> Error {
    Error::Shard {
        path: path.to_path_buf(),
        kind: ShardProblem::Checksum,
        reason: "changed after its checksum was verified (rewritten or replaced while in use)"
            .into(),
    }
}

fn open_error(path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::Shard {
            path: path.to_path_buf(),
            kind: ShardProblem::Missing,
            reason: "missing".into(),
        }
    } else {
        Error::Shard {
            path: path.to_path_buf(),
            kind: ShardProblem::Format,
            reason: e.to_string(),
        }
    }
}

impl ShardFile {
    /// Opens `path` and checks that it holds `rows` rows of width `dim` in `dtype` with every
    /// tensor headstart writes. The checksum is not checked here: read the shard once with
    /// [`crate::reader::read_shard`] for that, and pass the stamp it returns as `verified`, so
    /// that the file opened now is known to be the one verified; every later read checks that
    /// the file has not changed since.
    pub fn open(
        path: &Path,
        rows: usize,
        dim: usize,
        dtype: FeatureDType,
        verified: Option<crate::safe_fs::FileStamp>,
    ) -> Result<Self> {
        let bad = |reason: String| Error::Shard {
            path: path.to_path_buf(),
            kind: ShardProblem::Format,
            reason,
        };
        let file = crate::safe_fs::open_regular(path).map_err(|e| open_error(path, e))?;
        let stamp = crate::safe_fs::FileStamp::of(&file).map_err(|e| Error::io(path, e))?;
        if verified.is_some_and(|v| v != stamp) {
            return Err(changed(path));
        }
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if max_shard_bytes(rows, dim, dtype).is_none_or(|max| len > max) {
            return Err(bad(format!(
                "{len} bytes: more than {rows} rows of width {dim} can take"
            )));
        }
        let mut n = [0u8; 8];
        file.read_exact_at(&mut n, 0)
            .map_err(|_| bad("not a safetensors file: too short".into()))?;
        let n = u64::from_le_bytes(n);
        if n > MAX_HEADER || 8 + n > len {
            return Err(bad("not a safetensors file: bad header length".into()));
        }
        let mut header = vec![0u8; n as usize];
        file.read_exact_at(&mut header, 8)
            .map_err(|e| Error::io(path, e))?;
        let mut map: HashMap<String, serde_json::Value> = serde_json::from_slice(&header)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        map.remove("__metadata__");
        let data_start = 8 + n;
        let (feature_dtype, feature_size) = match dtype {
            FeatureDType::F32 => ("F32", 4),
            FeatureDType::F16 => ("F16", 2),
        };
        let mut spans = HashMap::new();
        for (name, want_dtype, size) in TENSORS {
            let (want_dtype, size, width) = match name {
                "features" => (feature_dtype, feature_size, dim),
                "crop_box" => (want_dtype, size, 4),
                _ => (want_dtype, size, 1),
            };
            let t: TensorHeader = map
                .get(name)
                .cloned()
                .and_then(|v| serde_json::from_value(v).ok())
                .ok_or_else(|| bad(format!("tensor `{name}` missing")))?;
            let want_shape: Vec<usize> = if matches!(name, "features" | "crop_box") {
                vec![rows, width]
            } else {
                vec![rows]
            };
            if t.dtype != want_dtype || t.shape != want_shape {
                return Err(bad(format!(
                    "tensor `{name}` is {} {:?}, expected {want_dtype} {want_shape:?}",
                    t.dtype, t.shape
                )));
            }
            let row_bytes = size * width as u64;
            let [a, b] = t.data_offsets;
            if b < a || b - a != row_bytes * rows as u64 || data_start + b > len {
                return Err(bad(format!("tensor `{name}` has bad data offsets")));
            }
            spans.insert(
                name,
                Span {
                    start: data_start + a,
                    row_bytes,
                },
            );
        }
        Ok(Self {
            stamp,
            path: path.to_path_buf(),
            file,
            rows,
            dim,
            dtype,
            spans,
        })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The shard's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Raw little-endian bytes of rows `row..row + count` of tensor `name`, appended to `out`.
    pub fn read_raw(&self, name: &str, row: usize, count: usize, out: &mut Vec<u8>) -> Result<()> {
        let span = self
            .spans
            .get(name)
            .ok_or_else(|| Error::Invalid(format!("no tensor `{name}` in a shard")))?;
        if row + count > self.rows {
            return Err(Error::Invalid(format!(
                "{}: rows {row}..{} outside its {} rows",
                self.path.display(),
                row + count,
                self.rows
            )));
        }
        let at = out.len();
        out.resize(at + (span.row_bytes as usize) * count, 0);
        self.file
            .read_exact_at(&mut out[at..], span.start + span.row_bytes * row as u64)
            .map_err(|e| Error::io(&self.path, e))?;
        // The bytes just read belong to the file as verified: a shard rewritten in place since
        // has another stamp.
        match crate::safe_fs::FileStamp::of(&self.file) {
            Ok(s) if s == self.stamp => Ok(()),
            _ => Err(changed(&self.path)),
        }
    }

    /// Features of rows `row..row + count`, widened to f32, appended to `out`.
    pub fn read_features(&self, row: usize, count: usize, out: &mut Vec<f32>) -> Result<()> {
        SCRATCH.with_borrow_mut(|raw| self.features_from_scratch(row, count, raw, out))
    }

    fn features_from_scratch(
        &self,
        row: usize,
        count: usize,
        raw: &mut Vec<u8>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        raw.clear();
        self.read_raw("features", row, count, raw)?;
        match self.dtype {
            FeatureDType::F32 => out.extend(
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
            FeatureDType::F16 => out.extend(
                raw.chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
            ),
        }
        debug_assert_eq!(out.len() % self.dim, 0);
        Ok(())
    }

    /// Rows `row..row + count` of an I64 tensor (`label`, `image`, `view`, `crop_box`).
    pub fn read_i64(&self, name: &str, row: usize, count: usize) -> Result<Vec<i64>> {
        let mut raw = Vec::new();
        self.read_raw(name, row, count, &mut raw)?;
        Ok(raw
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect())
    }
}

/// Raises the soft limit on open files to the hard limit (Linux lets a process do this without
/// privileges) and returns the limit now in force. Streaming readers keep one file per shard.
pub fn raise_open_file_limit() -> u64 {
    #[cfg(unix)]
    {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `l` is a valid rlimit for the call to fill in and read back.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
                return 1024;
            }
            if l.rlim_cur < l.rlim_max {
                let want = libc::rlimit {
                    rlim_cur: l.rlim_max,
                    rlim_max: l.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                    l = want;
                }
            }
        }
        l.rlim_cur
    }
    #[cfg(not(unix))]
    {
        512
    }
}

/// Shards opened on demand for positioned reads, at most `cap` at a time (the oldest opened is
/// closed first), so a cache with more shards than the process may open files still streams.
#[derive(Debug)]
pub struct ShardPool {
    specs: Vec<ShardSpec>,
    dim: usize,
    dtype: FeatureDType,
    open: std::sync::Mutex<PoolState>,
    cap: usize,
}

#[derive(Debug, Default)]
struct PoolState {
    files: Vec<Option<std::sync::Arc<ShardFile>>>,
    order: std::collections::VecDeque<usize>,
}

/// A shard a [`ShardPool`] opens: its path, rows, and the stamp of the file whose checksum was
/// verified (`None`: checked only from its first opening on).
#[derive(Debug, Clone)]
pub struct ShardSpec {
    /// The shard's path.
    pub path: PathBuf,
    /// Its rows.
    pub rows: usize,
    /// The verified file's stamp.
    pub verified: Option<crate::safe_fs::FileStamp>,
}

impl ShardPool {
    /// A pool over shards of width `dim` in `dtype`.
    pub fn new(specs: Vec<ShardSpec>, dim: usize, dtype: FeatureDType) -> Self {
        let limit = raise_open_file_limit();
        let cap = (limit.saturating_sub(128) as usize).clamp(16, 1 << 20);
        let n = specs.len();
        Self {
            specs,
            dim,
            dtype,
            open: std::sync::Mutex::new(PoolState {
                files: (0..n).map(|_| None).collect(),
                order: Default::default(),
            }),
            cap,
        }
    }

    /// Features of row `row` of shard `shard`, appended to `out`.
    pub fn read_features(&self, shard: usize, row: usize, out: &mut Vec<f32>) -> Result<()> {
        self.with(shard, |f| f.read_features(row, 1, out))
    }

    /// Runs `f` on shard `shard`, opening it first if needed. Threads share the pool: the lock
    /// is held only to find or open the file, not while `f` reads it (positioned reads).
    pub fn with<T>(&self, shard: usize, f: impl FnOnce(&ShardFile) -> Result<T>) -> Result<T> {
        let file = {
            let mut st = self.open.lock().unwrap_or_else(|p| p.into_inner());
            match &st.files[shard] {
                Some(file) => file.clone(),
                None => {
                    if st.order.len() >= self.cap {
                        if let Some(old) = st.order.pop_front() {
                            st.files[old] = None;
                        }
                    }
                    let spec = &self.specs[shard];
                    let file = std::sync::Arc::new(ShardFile::open(
                        &spec.path,
                        spec.rows,
                        self.dim,
                        self.dtype,
                        spec.verified,
                    )?);
                    st.files[shard] = Some(file.clone());
                    st.order.push_back(shard);
                    file
                }
            }
        };
        f(&file)
    }
}
