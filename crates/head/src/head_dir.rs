//! The head directory: what `train-head` writes and `predict` reads, as one unit.
//!
//! A head directory holds exactly [`HEAD_FILES`]: `head.safetensors` (the
//! [`HeadCheckpoint`](crate::HeadCheckpoint)), the per-epoch history, the curves, the report,
//! the prediction for each validation image (`validation.json`) and `run.json` (a [`RunRecord`]: everything needed to reproduce the head bit for bit). It is
//! replaced as a whole: every file is written into a staging folder beside it, which is swapped
//! in at once, so a reader (or a crash at any moment) sees the old complete head or the new one.
//! A writer holds the directory's lock for the whole run.

use std::path::{Path, PathBuf};

use headstart_cache::atomic::{publish_dir, write_atomic};
use headstart_cache::lock::DirLock;
use serde::{Deserialize, Serialize};

use crate::checkpoint::HeadCheckpoint;
use crate::config::{SplitSummary, TrainConfig};
use crate::history::{to_csv, EpochRecord};
use crate::lbfgs::LbfgsReport;
use crate::metrics::Report;
use crate::validation::ValidationFile;
use crate::{Error, Result};

/// The files of a head directory, in the order they are written.
pub const HEAD_FILES: [&str; 8] = [
    "head.safetensors",
    "history.json",
    "history.csv",
    "curves.png",
    "report.json",
    "report.txt",
    "validation.json",
    "run.json",
];

/// `run.json`: how a head was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The command line.
    pub command: Vec<String>,
    /// `headstart`.
    pub tool: String,
    /// The tool's version.
    pub version: String,
    /// The git commit the tool was built from (`unknown` outside a checkout).
    pub git_commit: String,
    /// The cache trained on.
    pub cache: PathBuf,
    /// sha256 of the cache's manifest at training time.
    pub cache_manifest_sha256: String,
    /// The training settings.
    pub config: TrainConfig,
    /// How the images were split.
    pub split: SplitSummary,
    /// The L-BFGS sweep and fit, for `--solver lbfgs`.
    pub lbfgs: Option<LbfgsReport>,
    /// Whether the rows were streamed from the shards (over the memory budget).
    pub rows_streamed: bool,
    /// Wall-clock seconds of the run.
    pub seconds: f64,
}

/// Everything a head directory holds, ready to publish.
#[derive(Debug, Clone, Copy)]
pub struct HeadContents<'a> {
    /// The head and its metadata.
    pub checkpoint: &'a HeadCheckpoint,
    /// One record per epoch (one for L-BFGS).
    pub history: &'a [EpochRecord],
    /// Validation metrics and confusion matrix.
    pub report: &'a Report,
    /// How the head was made.
    pub run: &'a RunRecord,
    /// `curves.png`, already encoded (drawing is the caller's).
    pub curves_png: &'a [u8],
    /// The prediction for every validation image.
    pub validation: &'a ValidationFile,
}

/// A head directory opened for writing: resolved, checked and locked.
#[derive(Debug)]
pub struct HeadDir {
    dir: PathBuf,
    _lock: DirLock,
    /// A note from taking the lock (a stale lock file reclaimed, say), for the caller to show.
    pub warning: Option<String>,
}

impl HeadDir {
    /// Opens `out` (created if missing) for a new head. `.`, `..` and symlinks are resolved
    /// first, since the folder is replaced beside itself; refuses a folder holding files that
    /// are not part of a head, and one whose parent cannot take the swap — before any training
    /// runs. Holds the directory's lock until dropped.
    pub fn open(out: &Path) -> Result<Self> {
        if out.exists() && !out.is_dir() {
            return Err(Error::HeadDir {
                path: out.to_path_buf(),
                problem: "is a file, expected a directory (or a path to create)".into(),
            });
        }
        std::fs::create_dir_all(out).map_err(|e| Error::HeadDir {
            path: out.to_path_buf(),
            problem: format!("cannot create the directory ({e})"),
        })?;
        let dir = std::fs::canonicalize(out).map_err(|e| Error::HeadDir {
            path: out.to_path_buf(),
            problem: format!("cannot resolve the path ({e})"),
        })?;
        check_publishable(&dir)?;
        refuse_foreign_files(&dir)?;
        let (lock, warning) = DirLock::acquire(&dir)?;
        Ok(Self {
            dir,
            _lock: lock,
            warning,
        })
    }

    /// The resolved directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes every file of `contents` into a staging folder and swaps it in.
    pub fn publish(&self, contents: &HeadContents<'_>) -> Result<()> {
        let json = |v: &dyn erased::Json| v.pretty();
        publish_dir(&self.dir, |dir| -> Result<()> {
            let write = |name: &str, bytes: &[u8]| -> Result<()> {
                Ok(write_atomic(&dir.join(name), bytes)?)
            };
            contents.checkpoint.save(dir)?;
            write("history.json", &json(&contents.history))?;
            write("history.csv", to_csv(contents.history).as_bytes())?;
            write("curves.png", contents.curves_png)?;
            write("report.json", &json(contents.report))?;
            write("report.txt", contents.report.to_text().as_bytes())?;
            write("validation.json", &json(contents.validation))?;
            write("run.json", &json(contents.run))?;
            Ok(())
        })
    }
}

/// Reads `dir/run.json`.
pub fn read_run_record(dir: &Path) -> Result<RunRecord> {
    read_run_record_file(&dir.join("run.json"))
}

/// Reads a `run.json` (whatever its name).
pub fn read_run_record_file(path: &Path) -> Result<RunRecord> {
    let path = path.to_path_buf();
    let bytes =
        headstart_cache::safe_fs::read_regular(&path, 64 << 20).map_err(|e| Error::io(&path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::BadHead {
        path,
        reason: format!("run.json: {e}"),
    })
}

/// The images a head was trained on, by content: reconstructed from the cache and the split
/// its `run.json` records (the split is deterministic), so that scoring a head can say which of
/// the images it scores it has already seen.
#[derive(Debug, Clone)]
pub struct TrainingImages {
    /// The cache the head was trained on.
    pub cache: PathBuf,
    sha256: std::collections::HashSet<String>,
}

impl TrainingImages {
    /// Reads `head_dir/run.json` and the cache it names (`Ok(None)` when the head has no
    /// `run.json` or the cache is not where it was: nothing can be said then).
    pub fn of_head(head_dir: &Path) -> Result<Option<Self>> {
        let Ok(run) = read_run_record(head_dir) else {
            return Ok(None);
        };
        // Recorded as given on the command line: relative to where train-head ran, which is
        // most often where this runs too, else beside the head folder.
        let candidates = [
            run.cache.clone(),
            head_dir.parent().unwrap_or(Path::new(".")).join(&run.cache),
        ];
        let Some(cache) = candidates
            .into_iter()
            .find(|c| headstart_cache::Manifest::path_in(c).is_file())
        else {
            return Ok(None);
        };
        let m = headstart_cache::Manifest::read(&cache)?;
        let table = headstart_cache::ImageTable {
            label: m.images.iter().map(|e| e.label as u32).collect(),
            split: m.images.iter().map(|e| e.split).collect(),
            status: m.images.iter().map(|e| e.status).collect(),
        };
        let split = crate::split::split_cache(
            &table,
            &m.classes,
            run.config.val_fraction,
            run.config.seed,
        )?;
        let sha256 = split
            .train
            .iter()
            .map(|&i| m.images[i].sha256.clone())
            .collect();
        Ok(Some(Self { cache, sha256 }))
    }

    /// Whether the file with this content hash trained the head.
    pub fn contains_sha256(&self, sha256: &str) -> bool {
        self.sha256.contains(sha256)
    }

    /// Number of training images.
    pub fn len(&self) -> usize {
        self.sha256.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.sha256.is_empty()
    }
}

/// The folder is replaced by a swap with a sibling: its parent must take one.
fn check_publishable(out: &Path) -> Result<()> {
    let Some(parent) = out.parent() else {
        return Err(Error::HeadDir {
            path: out.to_path_buf(),
            problem: "the head folder is replaced as a whole, so it cannot be a filesystem root"
                .into(),
        });
    };
    let probe = parent.join(format!(".headstart-probe-{}", std::process::id()));
    std::fs::create_dir(&probe)
        .and_then(|()| std::fs::remove_dir(&probe))
        .map_err(|e| Error::HeadDir {
            path: out.to_path_buf(),
            problem: format!(
                "the head folder is replaced as a whole, so its parent folder {} must be writable ({e})",
                parent.display()
            ),
        })
}

/// The folder is replaced as a whole: refuse one that holds anything but a head.
fn refuse_foreign_files(out: &Path) -> Result<()> {
    let mut foreign: Vec<String> = std::fs::read_dir(out)
        .map_err(|e| Error::io(out, e))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !HEAD_FILES.contains(&n.as_str())
                && n != headstart_cache::lock::LOCK_FILE
                && n != ".DS_Store"
                && !(n.starts_with('.') && n.contains(".tmp-"))
        })
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    foreign.sort();
    Err(Error::HeadDir {
        path: out.to_path_buf(),
        problem: format!(
            "holds files that are not part of a head ({}); the head folder is replaced as a whole, so pick an empty folder, a new path or an existing head folder",
            foreign.join(", ")
        ),
    })
}

mod erased {
    /// Anything serialisable to pretty JSON bytes.
    pub trait Json {
        fn pretty(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize + ?Sized> Json for T {
        fn pretty(&self) -> Vec<u8> {
            serde_json::to_vec_pretty(self).unwrap_or_default()
        }
    }
}
