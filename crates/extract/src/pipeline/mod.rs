//! The extraction run: parallel decode + augmentation feeding a batched forward pass, written
//! shard by shard into a resumable cache.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::Instant;

use headstart_backbone::batch::run_on_rows;
use headstart_backbone::preprocess::{self, DecodeLimits};
use headstart_backbone::Backbone;
use headstart_cache::{
    AugmentConfig, CacheSettings, CacheWriter, FeatureDType, ImageEntry, ImageStatus, Part,
    ViewMeta,
};
use headstart_core::config::AugmentParams;
use rayon::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::augment::sample_view;
use crate::dataset::{Dataset, DatasetItem};
use crate::{Error, Result};

mod options;
mod report;
mod views;

pub use options::{ExtractOptions, ValidExtractOptions, SAMPLER};
pub use report::{ExtractReport, NoProgress, Progress, Skipped};
use views::*;

/// Extracts features of `dataset` into `cache_dir`, resuming or extending a compatible cache.
pub fn extract(
    dataset: &Dataset,
    backbone: &Backbone,
    weights_sha256: &str,
    cache_dir: &Path,
    opts: &ValidExtractOptions,
    progress: &dyn Progress,
) -> Result<ExtractReport> {
    let started = Instant::now();
    let cfg = backbone.config().clone();
    let size = cfg.preprocess.input_size as usize;
    let settings = CacheSettings {
        feature_dim: cfg.feature_dim,
        augment: opts.augment_config(cfg.preprocess.input_size),
        backbone: cfg,
        weights_sha256: weights_sha256.to_string(),
        seed: opts.seed,
        dtype: opts.dtype,
        max_pixels: opts.limits.max_pixels,
        weights_file: opts.weights_file.clone(),
    };
    // A part's folder is written by its part only (a whole-dataset run there would put every
    // image into one part).
    if let (None, Some((cache, part))) = (opts.part, headstart_cache::Part::of_dir(cache_dir)) {
        return Err(headstart_cache::Error::Partition {
            path: cache_dir.to_path_buf(),
            problem: format!(
                "is part {part} of the partitioned cache {}: extract that part into the partitioned cache, not into the part's folder",
                cache.display()
            ),
        }
        .into());
    }
    // A part writes its own folder and sees only its own images.
    let (target, items): (PathBuf, Vec<&DatasetItem>) = match opts.part {
        Some(part) => (
            headstart_cache::partition::open_part(
                cache_dir,
                part,
                &settings,
                &dataset.classes,
                opts.shard_size,
            )?,
            dataset
                .items
                .iter()
                .filter(|it| part.contains(&it.rel_bytes))
                .collect(),
        ),
        None => (cache_dir.to_path_buf(), dataset.items.iter().collect()),
    };
    let mut writer = CacheWriter::open(
        &target,
        settings,
        dataset.classes.clone(),
        opts.shard_size,
        opts.force,
    )?;
    let mut notes = std::mem::take(&mut writer.warnings);
    notes.extend(dataset.notes.iter().cloned());
    let stale_before = writer.manifest().count(ImageStatus::Stale);
    let known: HashMap<String, String> = writer
        .manifest()
        .images
        .iter()
        .filter(|e| e.status != ImageStatus::Stale)
        .map(|e| (e.key().to_string(), e.sha256.clone()))
        .collect();
    let rows_per_image = opts.views as usize + 1;
    let chunk_images = (2 * opts.batch_size).div_ceil(rows_per_image).max(1);
    progress.start(items.len() as u64);

    let mut present: HashMap<String, String> = HashMap::with_capacity(items.len());
    let (mut processed, mut reused) = (0usize, 0usize);
    let (tx, rx) = crossbeam_channel::bounded::<Vec<Prepared>>(1);
    let in_part = items.len();
    let result: Result<()> = std::thread::scope(|scope| {
        let known = &known;
        scope.spawn(move || {
            for chunk in items.chunks(chunk_images) {
                let prepared: Vec<Prepared> = chunk
                    .par_iter()
                    .map(|it| prepare(it, known, backbone, opts))
                    .collect();
                if tx.send(prepared).is_err() {
                    break; // the consumer stopped on an error
                }
            }
        });
        let mut features = Vec::new();
        for chunk in rx {
            let ready: Vec<&[f32]> = chunk
                .iter()
                .filter_map(|p| match &p.outcome {
                    Outcome::Ready { pixels, .. } => Some(pixels.as_slice()),
                    _ => None,
                })
                .collect();
            features.clear();
            // Every view of every ready image, in order, through the backbone in batches.
            let rows = ready.iter().flat_map(|p| p.chunks_exact(3 * size * size));
            run_on_rows::<Error>(rows, size, opts.batch_size, &mut |x| {
                let f = backbone.features(x)?.to_device(&candle_core::Device::Cpu)?;
                features.extend(f.flatten_all()?.to_vec1::<f32>()?);
                Ok(())
            })?;
            let dim = backbone.config().feature_dim;
            // Finite inputs through a sound network give finite features: NaN or infinity means
            // the backbone itself is broken (a config or weights that overflow). Nothing of it
            // is cached.
            if let Some(bad) = features.iter().position(|v| !v.is_finite()) {
                let row = bad / dim.max(1);
                let image = chunk
                    .iter()
                    .filter_map(|p| match &p.outcome {
                        Outcome::Ready { views, .. } => Some((p, views.len())),
                        _ => None,
                    })
                    .scan(0usize, |seen, (p, n)| {
                        *seen += n;
                        Some((p, *seen))
                    })
                    .find(|(_, end)| row < *end)
                    .map(|(p, _)| p.entry.path.clone())
                    .unwrap_or_default();
                return Err(Error::NonFinite {
                    value: features[bad],
                    image,
                });
            }
            let mut at = 0;
            for p in chunk {
                present.insert(p.entry.key().to_string(), p.entry.sha256.clone());
                match p.outcome {
                    Outcome::Reused => reused += 1,
                    Outcome::Skipped(reason) => {
                        processed += 1;
                        writer.add_skipped(p.entry, reason)?;
                    }
                    Outcome::Ready { views, .. } => {
                        processed += 1;
                        let n = views.len() * dim;
                        writer.add_image(p.entry, &views, &features[at..at + n])?;
                        at += n;
                    }
                }
                progress.advance(1);
            }
        }
        Ok(())
    });
    result?;
    writer.mark_stale(&present);
    let manifest = writer.finish()?;
    progress.finish();

    let seconds = started.elapsed().as_secs_f64();
    let skipped: Vec<Skipped> = manifest
        .images
        .iter()
        .filter(|e| e.status == ImageStatus::Skipped)
        .map(|e| Skipped {
            path: e.path.clone(),
            reason: e.reason.clone().unwrap_or_default(),
        })
        .collect();
    Ok(ExtractReport {
        cache: cache_dir.to_path_buf(),
        part: opts.part,
        written_to: target,
        images_in_part: in_part,
        images_ok: manifest.count(ImageStatus::Ok),
        images_skipped: skipped.len(),
        skipped,
        views: opts.views,
        rows: manifest.rows,
        shards: manifest.shards.len(),
        seconds,
        images_per_second: if seconds > 0.0 {
            processed as f64 / seconds
        } else {
            0.0
        },
        images_processed: processed,
        images_reused: reused,
        // Changed files go stale when re-added, removed ones at the end: count both.
        images_stale: manifest.count(ImageStatus::Stale) - stale_before,
        empty_classes: manifest.empty_classes(),
        classes_without_files: manifest.classes_without_images(),
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eval_box_is_the_centre_crop_in_source_pixels() {
        // 500×375 → resize 256 (k = 256/375) → crop 224 ↔ 328.1 source px.
        assert_eq!(eval_box(500, 375, 256, 224), [86, 23, 328, 328]);
        assert_eq!(eval_box(256, 256, 256, 224), [16, 16, 224, 224]);
    }

    #[test]
    fn options_are_validated() {
        let o = ExtractOptions {
            batch_size: 0,
            ..Default::default()
        };
        assert!(matches!(
            o.check().map(drop),
            Err(Error::Invalid {
                param: "batch_size",
                ..
            })
        ));
        let o = ExtractOptions {
            shard_size: 3,
            views: 5,
            ..Default::default()
        };
        assert!(matches!(
            o.check().map(drop),
            Err(Error::Invalid {
                param: "shard_size",
                ..
            })
        ));
        assert!(ExtractOptions::default().check().is_ok());
    }
}
