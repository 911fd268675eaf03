//! `headstart cache merge`: the finished parts of a partitioned cache become one cache at its
//! top level, in the order a single run would have written it (images sorted by relative path,
//! shards closed by the same rule), so the merged cache equals a single-process run's byte for
//! byte when the parts were fresh runs.
//!
//! Crash safety: the top-level `manifest.json` is removed first and written last; shards in
//! between are written atomically and deterministically. A merge killed at any point leaves no
//! manifest (readers say to rerun the merge), and the rerun writes the same bytes. The parts are
//! only read (under their shared locks, so no part can be writing meanwhile) unless
//! `remove_parts` asks to delete them after the manifest is safely on disk.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::atomic::{remove_durably, remove_stale_temps, write_atomic};
use crate::lock::DirLock;
use crate::manifest::{ImageEntry, ImageStatus, Manifest, ShardEntry};
use crate::partition::{part_finished, parts_status, Part, PARTS_DIR};
use crate::reader::read_shard;
use crate::shard_file::ShardPool;
use crate::writer::{encode_shard, shard_name, ShardBuffer};
use crate::{journal, Error, Result};

/// Settings of a merge.
#[derive(Debug, Clone, Default)]
pub struct MergeOptions {
    /// Rows per merged shard; `None` = the shard size the first part recorded.
    pub shard_size: Option<usize>,
    /// Delete `parts/` once the merged manifest is on disk.
    pub remove_parts: bool,
}

/// What a merge did.
#[derive(Debug, Clone, Serialize)]
pub struct MergeReport {
    /// The cache directory.
    pub cache: PathBuf,
    /// N.
    pub parts: usize,
    /// Images with rows.
    pub images_ok: usize,
    /// Images skipped by their part.
    pub images_skipped: usize,
    /// Stale entries of the parts, left out of the merged manifest.
    pub images_stale_dropped: usize,
    /// Rows in the merged cache.
    pub rows: usize,
    /// Shards in the merged cache.
    pub shards: usize,
    /// Bytes written (shards + manifest).
    pub bytes_written: u64,
    /// Whether `parts/` was removed.
    pub removed_parts: bool,
    /// The parts had been merged and removed before: this run changed nothing.
    pub already_merged: bool,
    /// Classes without a usable image in any part.
    pub empty_classes: Vec<String>,
    /// Of those, the classes no part had any image file of.
    pub classes_without_files: Vec<String>,
    /// Wall time.
    pub seconds: f64,
}

/// Where an image's rows are in its part.
#[derive(Debug, Clone, Copy)]
struct Rows {
    shard: u32,
    row: u32,
    count: u32,
}

struct PartData {
    manifest: Manifest,
    /// Index of the part's first shard in the merge's shard pool.
    first_shard: usize,
    /// Per local image: its rows.
    rows: Vec<Option<Rows>>,
    _lock: DirLock,
}

/// Raw path bytes: the sort key a single run orders images by.
fn raw_path(e: &ImageEntry) -> Vec<u8> {
    match &e.path_bytes_hex {
        Some(h) => hex::decode(h).unwrap_or_else(|_| e.path.as_bytes().to_vec()),
        None => e.path.as_bytes().to_vec(),
    }
}

/// Merges the parts of `cache`; `progress` hears about each image copied.
pub fn merge(
    cache: &Path,
    opts: &MergeOptions,
    progress: &dyn headstart_core::progress::Progress,
) -> Result<MergeReport> {
    let started = Instant::now();
    // Parts removed by an earlier merge (`remove_parts`): renamed aside first, so a leftover
    // means that merge got as far as its manifest.
    let removing = cache.join(REMOVING_PARTS);
    if removing.exists() {
        std::fs::remove_dir_all(&removing).map_err(|e| Error::io(&removing, e))?;
    }
    if crate::partition::PartitionRecord::path_in(cache).is_file()
        && !cache.join(PARTS_DIR).exists()
        && Manifest::path_in(cache).is_file()
    {
        return already_merged(cache, started);
    }
    let status = parts_status(cache)?.ok_or_else(|| Error::Partition {
        path: cache.to_path_buf(),
        problem: "not a partitioned cache (no partition.json): there is nothing to merge; partitioned extractions (part I of N) write partitioned caches".into(),
    })?;
    let n = status.record.parts;
    if !status.foreign.is_empty() {
        return Err(Error::Partition {
            path: cache.join(PARTS_DIR),
            problem: format!(
                "{} do(es) not belong to this {n}-part partition (partition.json says {n} parts): move it away, then merge again",
                status.foreign.join(", ")
            ),
        });
    }
    // No reader, no other merge: the top level is ours.
    let (_top_lock, _) = DirLock::acquire(cache)?;
    // Shared locks on every part: refused at once, naming the pid, while a part is writing.
    let mut locks = Vec::new();
    for i in status.finished.iter().chain(&status.unfinished) {
        let dir = Part {
            index: *i,
            count: n,
        }
        .dir(cache);
        locks.push((*i, DirLock::acquire_shared(&dir)?));
    }
    if !status.unfinished.is_empty() || !status.missing.is_empty() {
        return Err(status.not_merged(cache));
    }
    let shard_size = opts.shard_size.unwrap_or(status.record.shard_size).max(1);
    // Whole images only, as extract writes them: a shard holds at least one image's rows.
    let rows_per_image = status.record.settings.augment.views as usize + 1;
    if shard_size < rows_per_image {
        return Err(Error::Invalid(format!(
            "shard size {shard_size} cannot hold the {rows_per_image} rows of one image (1 eval view + {} augmented); use at least {rows_per_image}",
            rows_per_image - 1
        )));
    }
    let settings = &status.record.settings;
    let dim = settings.feature_dim;

    // Read every part's manifest, check it against the partition, locate its rows.
    let mut parts: Vec<PartData> = Vec::with_capacity(n);
    let mut specs: Vec<crate::shard_file::ShardSpec> = Vec::new();
    for (i, lock) in locks {
        let dir = Part { index: i, count: n }.dir(cache);
        let manifest = part_finished(&dir)?.ok_or_else(|| status.not_merged(cache))?;
        let mut diffs =
            settings.differences_as(&manifest.settings, "partition.json has", "this part has");
        if manifest.classes != status.record.classes {
            diffs.push("classes differ from partition.json's".into());
        }
        if !diffs.is_empty() {
            return Err(Error::ConfigMismatch {
                path: dir,
                differences: diffs,
            });
        }
        let first_shard = specs.len();
        let mut rows: Vec<Option<Rows>> = vec![None; manifest.images.len()];
        for (k, s) in manifest.shards.iter().enumerate() {
            // Checksum, structure and indices checked against the part's manifest.
            let classes = manifest.classes.len();
            let data = read_shard(&dir, s, dim, settings.dtype, &|i| {
                manifest
                    .images
                    .get(i)
                    .map(|e| e.label)
                    .filter(|&l| l < classes)
            })?;
            let (images, verified) = (data.image, data.stamp);
            let path = dir.join(&s.file);
            for (r, &img) in images.iter().enumerate() {
                // In range: read_shard checked every index.
                match &mut rows[img as usize] {
                    slot @ None => {
                        *slot = Some(Rows {
                            shard: k as u32,
                            row: r as u32,
                            count: 1,
                        })
                    }
                    Some(x) if x.shard == k as u32 && (x.row + x.count) as usize == r => {
                        x.count += 1
                    }
                    Some(_) => {
                        return Err(Error::Shard {
                            path: path.clone(),
                            kind: crate::error::ShardProblem::Index,
                            reason: format!("row {r}: the rows of image {img} are not consecutive"),
                        })
                    }
                }
            }
            specs.push(crate::shard_file::ShardSpec {
                path,
                rows: s.rows,
                verified: Some(verified),
            });
        }
        parts.push(PartData {
            manifest,
            first_shard,
            rows,
            _lock: lock,
        });
    }
    // Open on demand, within the process's open-file limit, however many shards there are.
    let pool = ShardPool::new(specs, dim, settings.dtype);

    // The merged order: every live image of every part, sorted by raw relative path.
    let mut order: Vec<(Vec<u8>, u32, u32)> = Vec::new();
    let mut stale = 0usize;
    for (p, part) in parts.iter().enumerate() {
        for (i, e) in part.manifest.images.iter().enumerate() {
            if e.status == ImageStatus::Stale {
                stale += 1;
            } else {
                order.push((raw_path(e), p as u32, i as u32));
            }
        }
    }
    order.sort();
    for w in order.windows(2) {
        if w[0].0 == w[1].0 {
            return Err(Error::Partition {
                path: cache.to_path_buf(),
                problem: format!(
                    "{} is in part {} and in part {}: the parts overlap (was a part copied by hand?)",
                    String::from_utf8_lossy(&w[0].0),
                    w[0].1,
                    w[1].1
                ),
            });
        }
    }

    // From here on the top level is rewritten: manifest first out, last in.
    remove_stale_temps(cache)?;
    remove_durably(&Manifest::path_in(cache))?;
    journal::remove(cache)?;
    let mut merged = Manifest::new(settings.clone(), status.record.classes.clone());
    let mut buffer = ShardBuffer::default();
    let mut bytes_written = 0u64;
    let total = order.len() as u64;
    let mut raw = Vec::new();
    for (done, (_, p, i)) in order.iter().enumerate() {
        let part = &parts[*p as usize];
        let entry = part.manifest.images[*i as usize].clone();
        let idx = merged.images.len() as i64;
        if entry.status == ImageStatus::Ok {
            let loc = part.rows[*i as usize].ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: listed as ok but has no rows in its part",
                    entry.path
                ))
            })?;
            let count = loc.count as usize;
            if buffer.rows() > 0 && buffer.rows() + count > shard_size {
                bytes_written += flush(cache, &mut buffer, &mut merged)?;
            }
            let row = loc.row as usize;
            pool.with(part.first_shard + loc.shard as usize, |f| {
                f.read_features(row, count, &mut buffer.features)?;
                buffer.view.extend(f.read_i64("view", row, count)?);
                buffer.crop.extend(f.read_i64("crop_box", row, count)?);
                raw.clear();
                f.read_raw("flip", row, count, &mut raw)?;
                buffer.flip.extend_from_slice(&raw);
                Ok(())
            })?;
            for _ in 0..count {
                buffer.label.push(entry.label as i64);
                buffer.image.push(idx);
            }
        }
        merged.images.push(entry);
        if done == 0 {
            progress.start(total);
        }
        progress.advance(1);
    }
    if buffer.rows() > 0 {
        bytes_written += flush(cache, &mut buffer, &mut merged)?;
    }
    remove_surplus_shards(cache, merged.shards.len())?;
    merged.write(cache)?;
    bytes_written += std::fs::metadata(Manifest::path_in(cache))
        .map(|m| m.len())
        .unwrap_or(0);

    // Renamed aside while the parts' locks are still held (no part can start meanwhile), then
    // deleted: a crash part-way leaves `.parts-removing`, which the next merge finishes off.
    drop(pool);
    let removed_parts = if opts.remove_parts {
        let dir = cache.join(PARTS_DIR);
        std::fs::rename(&dir, &removing).map_err(|e| Error::io(&dir, e))?;
        drop(parts);
        std::fs::remove_dir_all(&removing).map_err(|e| Error::io(&removing, e))?;
        true
    } else {
        false
    };
    Ok(MergeReport {
        cache: cache.to_path_buf(),
        parts: n,
        images_ok: merged.count(ImageStatus::Ok),
        images_skipped: merged.count(ImageStatus::Skipped),
        images_stale_dropped: stale,
        rows: merged.rows,
        shards: merged.shards.len(),
        bytes_written,
        removed_parts,
        already_merged: false,
        empty_classes: merged.empty_classes(),
        classes_without_files: merged.classes_without_images(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Where `remove_parts` moves `parts/` before deleting it.
const REMOVING_PARTS: &str = ".parts-removing";

/// The report of a merge whose parts are already merged and removed: nothing to do.
fn already_merged(cache: &Path, started: Instant) -> Result<MergeReport> {
    let m = Manifest::read(cache)?;
    let parts = crate::partition::PartitionRecord::read(cache)?
        .map(|r| r.parts)
        .unwrap_or(0);
    Ok(MergeReport {
        cache: cache.to_path_buf(),
        parts,
        images_ok: m.count(ImageStatus::Ok),
        images_skipped: m.count(ImageStatus::Skipped),
        images_stale_dropped: 0,
        rows: m.rows,
        shards: m.shards.len(),
        bytes_written: 0,
        removed_parts: true,
        already_merged: true,
        empty_classes: Vec::new(),
        classes_without_files: Vec::new(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Writes the buffered rows as the next top-level shard; returns its size.
fn flush(cache: &Path, buffer: &mut ShardBuffer, m: &mut Manifest) -> Result<u64> {
    let file = shard_name(m.shards.len());
    let bytes = encode_shard(buffer, &m.settings)?;
    write_atomic(&cache.join(&file), &bytes)?;
    let rows = buffer.rows();
    m.shards.push(ShardEntry {
        file,
        rows,
        sha256: hex::encode(Sha256::digest(&bytes)),
    });
    m.rows += rows;
    *buffer = ShardBuffer::default();
    Ok(bytes.len() as u64)
}

/// Removes top-level `shard-NNNNN.safetensors` files numbered `keep` and above (left by an
/// earlier, larger merge).
fn remove_surplus_shards(cache: &Path, keep: usize) -> Result<()> {
    let entries = std::fs::read_dir(cache).map_err(|e| Error::io(cache, e))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let index = name
            .strip_prefix("shard-")
            .and_then(|r| r.strip_suffix(".safetensors"))
            .filter(|d| d.len() >= 5 && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<usize>().ok());
        if index.is_some_and(|k| k >= keep) {
            remove_durably(&e.path())?;
        }
    }
    Ok(())
}
