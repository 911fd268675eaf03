//! The extraction run: parallel decode + augmentation feeding a batched forward pass, written
//! shard by shard into a resumable cache.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Tensor;
use headstart_backbone::preprocess::{self, DecodeLimits};
use headstart_backbone::Backbone;
use headstart_cache::{
    AugmentConfig, CacheSettings, CacheWriter, FeatureDType, ImageEntry, ImageStatus, ViewMeta,
};
use headstart_core::config::AugmentParams;
use rayon::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::augment::sample_view;
use crate::dataset::{Dataset, DatasetItem};
use crate::{Error, Result};

/// Name and version of the augmentation sampling rule recorded in manifests.
pub const SAMPLER: &str = "torchvision-random-resized-crop/splitmix64-sha256-v1";

/// Settings of an extraction run.
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// Augmented views per image (0 = eval view only).
    pub views: u32,
    /// Augmentation seed.
    pub seed: u64,
    /// Rows per forward pass.
    pub batch_size: usize,
    /// Storage dtype of the features.
    pub dtype: FeatureDType,
    /// Maximum rows per shard.
    pub shard_size: usize,
    /// Discard an incompatible cache instead of refusing.
    pub force: bool,
    /// Decoder limits (decompression-bomb guard).
    pub limits: DecodeLimits,
    /// RandomResizedCrop ranges, flip probability and resize filter of the augmented views.
    pub augment: AugmentParams,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        Self {
            views: 5,
            seed: 43,
            batch_size: 32,
            dtype: FeatureDType::F32,
            shard_size: 4096,
            force: false,
            limits: DecodeLimits::default(),
            augment: AugmentParams::default(),
        }
    }
}

impl ExtractOptions {
    /// Checks the values once; every later step can rely on them.
    pub fn validate(&self) -> Result<()> {
        let bad = |param: &'static str, problem: String| Err(Error::Invalid { param, problem });
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1".into());
        }
        if self.shard_size == 0 {
            return bad("shard_size", "must be at least 1".into());
        }
        if (self.views as usize + 1) > self.shard_size {
            return bad(
                "shard_size",
                format!(
                    "{} cannot hold the {} rows of one image; use at least {}",
                    self.shard_size,
                    self.views + 1,
                    self.views + 1
                ),
            );
        }
        self.augment.check().map_err(|problem| Error::Invalid {
            param: "augment",
            problem,
        })
    }

    /// The augmentation record for the manifest.
    pub fn augment_config(&self, crop_size: u32) -> AugmentConfig {
        AugmentConfig {
            views: self.views,
            crop_size,
            params: self.augment,
            sampler: SAMPLER.to_string(),
        }
    }
}

/// Receives progress updates (the CLI draws a bar; tests ignore them).
pub trait Progress: Sync {
    /// The run will look at `total` images.
    fn start(&self, _total: u64) {}
    /// `n` more images are done (processed, reused or skipped).
    fn advance(&self, _n: u64) {}
    /// The run is over.
    fn finish(&self) {}
}

/// A [`Progress`] that shows nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// A file that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// Path relative to the data directory.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// The outcome of an extraction (`--json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct ExtractReport {
    /// The cache directory.
    pub cache: PathBuf,
    /// Usable images in the cache.
    pub images_ok: usize,
    /// Images that could not be used.
    pub images_skipped: usize,
    /// Every skipped file with the reason.
    pub skipped: Vec<Skipped>,
    /// Augmented views per image.
    pub views: u32,
    /// Rows in the cache.
    pub rows: usize,
    /// Shards in the cache.
    pub shards: usize,
    /// Wall-clock seconds of this run.
    pub seconds: f64,
    /// Images processed per second in this run (reused images excluded).
    pub images_per_second: f64,
    /// Images processed (decoded and run through the backbone, or skipped) in this run.
    pub images_processed: usize,
    /// Images already in the cache and reused.
    pub images_reused: usize,
    /// Cached images marked stale (changed or removed since).
    pub images_stale: usize,
    /// Classes with no usable image (an error for training).
    pub empty_classes: Vec<String>,
    /// Warnings and notes for the user.
    pub notes: Vec<String>,
}

enum Outcome {
    Reused,
    Skipped(String),
    Ready {
        views: Vec<ViewMeta>,
        pixels: Vec<f32>,
    },
}

struct Prepared {
    entry: ImageEntry,
    outcome: Outcome,
}

/// Decodes one image and builds its views' network inputs (CHW, normalised).
fn prepare(
    item: &DatasetItem,
    known: &HashMap<String, String>,
    backbone: &Backbone,
    opts: &ExtractOptions,
) -> Prepared {
    let mut entry = ImageEntry {
        path: item.rel_path.clone(),
        path_bytes_hex: item.path_bytes_hex(),
        label: item.label,
        split: item.split,
        bytes: 0,
        sha256: String::new(),
        status: ImageStatus::Ok,
        reason: None,
    };
    let bytes = match std::fs::read(&item.path) {
        Ok(b) => b,
        // Unreadable again, and recorded as such (empty sha256) last time: nothing new to do.
        Err(_) if known.get(entry.key()).is_some_and(|sha| sha.is_empty()) => {
            return Prepared {
                entry,
                outcome: Outcome::Reused,
            };
        }
        Err(e) => {
            return Prepared {
                entry,
                outcome: Outcome::Skipped(format!("cannot read: {e}")),
            };
        }
    };
    entry.bytes = bytes.len() as u64;
    entry.sha256 = hex::encode(Sha256::digest(&bytes));
    if known.get(entry.key()) == Some(&entry.sha256) {
        return Prepared {
            entry,
            outcome: Outcome::Reused,
        };
    }
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        build_views(&bytes, &item.rel_bytes, backbone, opts)
    }))
    .unwrap_or_else(|_| {
        Err(headstart_backbone::Error::image(
            "the decoder crashed on this file",
        ))
    });
    let outcome = match outcome {
        Ok((views, pixels)) => Outcome::Ready { views, pixels },
        Err(e @ headstart_backbone::Error::TooLarge { .. }) => Outcome::Skipped(format!(
            "{e} (raise the size limit and force a rebuild to accept it)"
        )),
        Err(e) => Outcome::Skipped(e.to_string()),
    };
    Prepared { entry, outcome }
}

fn build_views(
    bytes: &[u8],
    rel: &[u8],
    backbone: &Backbone,
    opts: &ExtractOptions,
) -> headstart_backbone::Result<(Vec<ViewMeta>, Vec<f32>)> {
    let cfg = &backbone.config().preprocess;
    let img = preprocess::decode_rgb(bytes, &opts.limits)?;
    let (w, h) = img.dimensions();
    let s = cfg.input_size;
    let plane = 3 * (s as usize) * (s as usize);
    let n = opts.views as usize + 1;
    let mut pixels = vec![0f32; n * plane];
    let mut views = Vec::with_capacity(n);
    let eval = preprocess::eval_crop(&img, cfg);
    preprocess::normalize_into(&eval, cfg, &mut pixels[..plane]);
    views.push(ViewMeta {
        view: 0,
        crop: eval_box(w, h, cfg.resize_size, s),
        flip: false,
    });
    let crop_params = opts.augment;
    for v in 1..n as u32 {
        let (c, flip) = sample_view(opts.seed, rel, v, w, h, &crop_params);
        let mut crop = preprocess::resized_crop(
            &img,
            c.left,
            c.top,
            c.width,
            c.height,
            s,
            s,
            opts.augment.interpolation,
        );
        if flip {
            image::imageops::flip_horizontal_in_place(&mut crop);
        }
        let k = v as usize;
        preprocess::normalize_into(&crop, cfg, &mut pixels[k * plane..(k + 1) * plane]);
        views.push(ViewMeta {
            view: v,
            crop: [c.left as i64, c.top as i64, c.width as i64, c.height as i64],
            flip,
        });
    }
    Ok((views, pixels))
}

/// The source-pixel box that Resize(shorter side) + CenterCrop keeps (rounded).
fn eval_box(w: u32, h: u32, resize: u32, crop: u32) -> [i64; 4] {
    let (w, h) = (w as f64, h as f64);
    let k = resize as f64 / w.min(h);
    let (cw, ch) = ((crop as f64 / k).min(w), (crop as f64 / k).min(h));
    [
        ((w - cw) / 2.0).round() as i64,
        ((h - ch) / 2.0).round() as i64,
        cw.round() as i64,
        ch.round() as i64,
    ]
}

/// Runs the backbone over `images` (each the normalised CHW planes of one or more views), in
/// batches of `batch` rows, appending the features to `out`. Each batch is copied once, straight
/// from the decoded views into the tensor's buffer.
fn run_features(
    backbone: &Backbone,
    images: &[&[f32]],
    batch: usize,
    size: usize,
    out: &mut Vec<f32>,
) -> Result<()> {
    let plane = 3 * size * size;
    let mut rows = images.iter().flat_map(|p| p.chunks_exact(plane)).peekable();
    while rows.peek().is_some() {
        let mut pixels = Vec::with_capacity(batch * plane);
        for row in rows.by_ref().take(batch) {
            pixels.extend_from_slice(row);
        }
        let n = pixels.len() / plane;
        let x = Tensor::from_vec(pixels, (n, 3, size, size), &candle_core::Device::Cpu)?;
        let f = backbone
            .features(&x)?
            .to_device(&candle_core::Device::Cpu)?;
        out.extend(f.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(())
}

/// Extracts features of `dataset` into `cache_dir`, resuming or extending a compatible cache.
pub fn extract(
    dataset: &Dataset,
    backbone: &Backbone,
    weights_sha256: &str,
    cache_dir: &Path,
    opts: &ExtractOptions,
    progress: &dyn Progress,
) -> Result<ExtractReport> {
    opts.validate()?;
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
    };
    let mut writer = CacheWriter::open(
        cache_dir,
        settings,
        dataset.classes.clone(),
        opts.shard_size,
        opts.force,
    )?;
    let mut notes = std::mem::take(&mut writer.warnings);
    notes.extend(dataset.notes.iter().cloned());
    let count_stale = |m: &headstart_cache::Manifest| {
        m.images
            .iter()
            .filter(|e| e.status == ImageStatus::Stale)
            .count()
    };
    let stale_before = count_stale(writer.manifest());
    let known: HashMap<String, String> = writer
        .manifest()
        .images
        .iter()
        .filter(|e| e.status != ImageStatus::Stale)
        .map(|e| (e.key().to_string(), e.sha256.clone()))
        .collect();
    let rows_per_image = opts.views as usize + 1;
    let chunk_images = (2 * opts.batch_size).div_ceil(rows_per_image).max(1);
    progress.start(dataset.items.len() as u64);

    let mut present: HashMap<String, String> = HashMap::with_capacity(dataset.items.len());
    let (mut processed, mut reused) = (0usize, 0usize);
    let (tx, rx) = crossbeam_channel::bounded::<Vec<Prepared>>(1);
    let result: Result<()> = std::thread::scope(|scope| {
        let known = &known;
        scope.spawn(move || {
            for chunk in dataset.items.chunks(chunk_images) {
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
            run_features(backbone, &ready, opts.batch_size, size, &mut features)?;
            let dim = backbone.config().feature_dim;
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
    let mut per_class = vec![0usize; manifest.classes.len()];
    for e in manifest
        .images
        .iter()
        .filter(|e| e.status == ImageStatus::Ok)
    {
        per_class[e.label] += 1;
    }
    let empty_classes = manifest
        .classes
        .iter()
        .zip(&per_class)
        .filter(|(_, &n)| n == 0)
        .map(|(c, _)| c.clone())
        .collect();
    Ok(ExtractReport {
        cache: cache_dir.to_path_buf(),
        images_ok: per_class.iter().sum(),
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
        images_stale: count_stale(&manifest) - stale_before,
        empty_classes,
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
            o.validate(),
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
            o.validate(),
            Err(Error::Invalid {
                param: "shard_size",
                ..
            })
        ));
        assert!(ExtractOptions::default().validate().is_ok());
    }
}
