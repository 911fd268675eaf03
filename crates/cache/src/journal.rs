//! The commit journal: one small file per committed shard, so that committing costs time and
//! bytes proportional to the shard, not to the cache.
//!
//! `CACHE_DIR/journal/commit-00000000.json` opens the journal with the cache's settings and
//! classes; every later commit lists the images registered since the previous one (with their
//! status), the earlier images that went stale meanwhile, and the shard it committed (none for
//! the last commit of a run that only skipped images). Replaying the commits in order gives the
//! manifest; `manifest.json` itself is written once, when a run finishes. Each commit file is
//! written atomically after its shard, so a killed run leaves a valid prefix of the journal.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic::{publish_dir, write_atomic};
use crate::error::ManifestError;
use crate::manifest::{
    check_format, check_shards, CacheSettings, ImageEntry, ImageStatus, Manifest, ShardEntry,
    FORMAT, FORMAT_VERSION,
};
use crate::{Error, Result};

/// The journal's directory name inside a cache.
pub const JOURNAL_DIR: &str = "journal";

/// What the first commit records: the cache's identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Start {
    pub format: String,
    pub format_version: u32,
    #[serde(flatten)]
    pub settings: CacheSettings,
    pub classes: Vec<String>,
}

/// An earlier image that went stale (its file changed or disappeared).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StaleMark {
    pub image: usize,
    pub reason: String,
}

/// One commit file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Commit {
    /// Its number; commits are numbered 0, 1, 2, … without gaps.
    pub commit: u64,
    /// Present in commit 0 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Start>,
    /// Index of `images[0]` in the cache's image list (= images registered before).
    pub first_image: usize,
    /// Images registered since the previous commit.
    pub images: Vec<ImageEntry>,
    /// Earlier images that went stale since the previous commit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stale: Vec<StaleMark>,
    /// Shards committed (one for a regular commit; several when a journal is compacted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardEntry>,
}

impl Commit {
    /// Commit 0 of a journal holding `m` whole: its settings and classes, images and shards.
    pub(crate) fn opening(m: &Manifest) -> Self {
        Commit {
            commit: 0,
            start: Some(Start {
                format: FORMAT.to_string(),
                format_version: FORMAT_VERSION,
                settings: m.settings.clone(),
                classes: m.classes.clone(),
            }),
            first_image: 0,
            images: m.images.clone(),
            stale: Vec::new(),
            shards: m.shards.clone(),
        }
    }
}

/// The journal directory of a cache.
pub fn journal_dir(cache: &Path) -> PathBuf {
    cache.join(JOURNAL_DIR)
}

fn commit_path(cache: &Path, n: u64) -> PathBuf {
    journal_dir(cache).join(format!("commit-{n:08}.json"))
}

fn parse_commit_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("commit-")?.strip_suffix(".json")?;
    (digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Whether `cache` has a journal with at least one commit.
pub fn has_journal(cache: &Path) -> bool {
    std::fs::symlink_metadata(commit_path(cache, 0)).is_ok_and(|m| m.is_file())
}

/// The largest journal commit read: one shard's images (at most a few MB at any shard size).
const MAX_COMMIT_BYTES: u64 = 256 << 20;

/// Writes commit file number `c.commit` atomically.
pub(crate) fn write_commit(cache: &Path, c: &Commit) -> Result<()> {
    let dir = journal_dir(cache);
    // A real folder inside the cache (a link planted as journal/ is never written through).
    if c.commit == 0 {
        crate::safe_fs::ensure_real_dir(&dir).map_err(|e| Error::io(&dir, e))?;
    } else {
        crate::safe_fs::real_dir(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    let bytes = serde_json::to_vec(c).map_err(|e| Error::Invalid(e.to_string()))?;
    write_atomic(&commit_path(cache, c.commit), &bytes)
}

/// A replayed journal.
#[derive(Debug)]
pub(crate) struct Replayed {
    /// The manifest the commits add up to.
    pub manifest: Manifest,
    /// For each commit, the number of shards recorded up to and including it.
    pub shards_after: Vec<usize>,
}

/// The commit numbers in the journal of `cache`, sorted; `None` without a journal.
fn commit_numbers(cache: &Path) -> Result<Option<Vec<u64>>> {
    let dir = journal_dir(cache);
    match crate::safe_fs::real_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&dir, e)),
    }
    let mut numbers: Vec<u64> = std::fs::read_dir(&dir)
        .map_err(|e| Error::io(&dir, e))?
        .flatten()
        .filter_map(|e| parse_commit_name(&e.file_name().to_string_lossy()))
        .collect();
    if numbers.is_empty() {
        return Ok(None);
    }
    numbers.sort_unstable();
    Ok(Some(numbers))
}

/// Replays commits `numbers` (which must be 0, 1, …); on failure, the index of the commit that
/// failed and why.
fn replay_numbers(cache: &Path, numbers: &[u64]) -> std::result::Result<Replayed, (usize, Error)> {
    let mut m: Option<Manifest> = None;
    let mut shards_after = Vec::with_capacity(numbers.len());
    for (k, &n) in numbers.iter().enumerate() {
        let path = commit_path(cache, n);
        let bad = |reason: ManifestError| {
            (
                k,
                Error::Manifest {
                    path: path.clone(),
                    reason,
                },
            )
        };
        if n != k as u64 {
            return Err(bad(ManifestError::Inconsistent(format!(
                "commit {k} is missing from the journal"
            ))));
        }
        let bytes = crate::safe_fs::read_regular(&path, MAX_COMMIT_BYTES)
            .map_err(|e| bad(ManifestError::Inconsistent(format!("unreadable: {e}"))))?;
        let c: Commit = serde_json::from_slice(&bytes).map_err(|e| bad(e.into()))?;
        apply(&mut m, c).map_err(bad)?;
        shards_after.push(m.as_ref().map_or(0, |m| m.shards.len()));
    }
    match m {
        Some(manifest) => Ok(Replayed {
            manifest,
            shards_after,
        }),
        None => Err(bad_empty(cache)),
    }
}

fn bad_empty(cache: &Path) -> (usize, Error) {
    (
        0,
        Error::Manifest {
            path: journal_dir(cache),
            reason: ManifestError::Inconsistent("the journal has no commit".into()),
        },
    )
}

/// Replays the journal of `cache` into a manifest; `Ok(None)` without a journal.
pub(crate) fn replay(cache: &Path) -> Result<Option<Replayed>> {
    // Read-only: readers call this without the lock; only the writer removes temp files.
    let Some(numbers) = commit_numbers(cache)? else {
        return Ok(None);
    };
    replay_numbers(cache, &numbers)
        .map(Some)
        .map_err(|(_, e)| e)
}

/// What [`replay_repairing`] did about a journal that did not replay.
#[derive(Debug)]
pub(crate) enum Repair {
    /// It replayed as it is.
    None,
    /// Its last commit (torn, empty or otherwise unreadable) was removed: that commit's shard
    /// is not part of the cache and is computed again.
    DroppedLast {
        /// The commit's number.
        commit: u64,
        /// Why it did not replay.
        reason: String,
    },
}

/// [`replay`] for the writer (who holds the lock): a last commit that does not replay is
/// removed — a commit is written atomically, so only damage leaves one torn, and everything
/// before it is intact — and the journal replays without it. Damage further back is an error.
pub(crate) fn replay_repairing(cache: &Path) -> Result<(Option<Replayed>, Repair)> {
    let Some(numbers) = commit_numbers(cache)? else {
        return Ok((None, Repair::None));
    };
    match replay_numbers(cache, &numbers) {
        Ok(r) => Ok((Some(r), Repair::None)),
        Err((k, e)) if k + 1 == numbers.len() && k > 0 => {
            let path = commit_path(cache, numbers[k]);
            crate::atomic::remove_durably(&path)?;
            let r = replay_numbers(cache, &numbers[..k]).map_err(|(_, e)| e)?;
            Ok((
                Some(r),
                Repair::DroppedLast {
                    commit: numbers[k],
                    reason: e.to_string(),
                },
            ))
        }
        Err((_, e)) => Err(e),
    }
}

/// Cuts the journal back to its first `keep` commits (the last ones are removed first, so a
/// crash leaves a valid, shorter prefix).
pub(crate) fn truncate(cache: &Path, keep: u64, commits: u64) -> Result<()> {
    for n in (keep..commits).rev() {
        crate::atomic::remove_durably(&commit_path(cache, n))?;
    }
    Ok(())
}

fn apply(m: &mut Option<Manifest>, c: Commit) -> std::result::Result<(), ManifestError> {
    let bad = |s: String| Err(ManifestError::Inconsistent(s));
    match (m.as_mut(), c.start) {
        (None, Some(s)) => {
            check_format(&s.format, s.format_version)?;
            *m = Some(Manifest::new(s.settings, s.classes));
        }
        (None, None) => return bad("commit 0 does not start the journal".into()),
        (Some(_), Some(_)) => return bad(format!("commit {} restarts the journal", c.commit)),
        (Some(_), None) => {}
    }
    let m = m.as_mut().expect("set above");
    if c.first_image != m.images.len() {
        return bad(format!(
            "commit {} starts at image {} but {} images precede it",
            c.commit,
            c.first_image,
            m.images.len()
        ));
    }
    m.images.extend(c.images);
    for s in c.stale {
        match m.images.get_mut(s.image) {
            Some(e) => {
                e.status = ImageStatus::Stale;
                e.reason = Some(s.reason);
            }
            None => {
                return bad(format!(
                    "commit {} marks unknown image {}",
                    c.commit, s.image
                ))
            }
        }
    }
    for s in c.shards {
        m.rows = m.rows.saturating_add(s.rows);
        m.shards.push(s);
    }
    check_shards(&m.shards, m.rows)?;
    for img in &m.images[c.first_image..] {
        if img.label >= m.classes.len() {
            return bad(format!(
                "image {} has label {} out of range",
                img.path, img.label
            ));
        }
    }
    Ok(())
}

/// Replaces the whole journal by one commit holding `m` (used to adopt a cache written by an
/// older version or by `cache merge`, and to cut a journal back after a damaged shard). The
/// journal directory is swapped in one rename: a crash leaves the old journal or the new one.
pub(crate) fn rewrite(cache: &Path, m: &Manifest) -> Result<u64> {
    let c = Commit::opening(m);
    publish_dir::<Error>(&journal_dir(cache), |staging| {
        let bytes = serde_json::to_vec(&c).map_err(|e| Error::Invalid(e.to_string()))?;
        write_atomic(&staging.join("commit-00000000.json"), &bytes)
    })?;
    Ok(1)
}

/// Removes the journal directory (and a half-published one).
pub(crate) fn remove(cache: &Path) -> Result<()> {
    let dir = journal_dir(cache);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(dir, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_names_are_strict() {
        assert_eq!(parse_commit_name("commit-00000012.json"), Some(12));
        assert_eq!(parse_commit_name("commit-12.json"), None);
        assert_eq!(parse_commit_name(".commit-00000012.json.tmp-4"), None);
    }
}
