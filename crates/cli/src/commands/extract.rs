//! `headstart extract`: images → features cache.

use std::path::PathBuf;

use anyhow::Result;
use headstart_cache::FeatureDType;
use headstart_extract::{extract, Dataset, ExtractOptions};

use crate::common::{
    default_batch, device_name, output_dir, print_json, require_dir, usage, BackboneArgs, RunArgs,
};
use crate::progress::Bar;

/// Storage dtype of the cached features.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DType {
    /// 32-bit floats (exact).
    F32,
    /// 16-bit floats (half the disk, ~3 significant digits).
    F16,
}

/// Run the frozen backbone over an ImageFolder (one sub-folder per class; optional train/ and
/// val/ folders) into a sharded safetensors feature cache.
///
/// Every image gets its eval view (view 0: Resize + CenterCrop) plus K augmented views
/// (RandomResizedCrop(224, scale 0.08–1, ratio 3/4–4/3) + horizontal flip), seeded by
/// (seed, relative path, view) so results do not depend on threads or batch size.
///
/// The run is resumable: rerun the same command after a crash or after adding images, and only
/// what is new is computed. Files that cannot be decoded are skipped, listed in the summary and
/// in the manifest. See docs/cache-format.md for the format.
///
/// On a cluster, `--part I/N` (or `--part auto/N` in a Slurm array / Kubernetes Indexed Job)
/// extracts one of N disjoint parts into CACHE_DIR/parts/; `headstart cache merge CACHE_DIR`
/// then combines them (docs/scale-out.md).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image folder (ImageFolder layout).
    #[arg(value_name = "DATA_DIR")]
    data_dir: PathBuf,
    /// Cache directory to create or resume.
    #[arg(long, value_name = "CACHE_DIR")]
    cache: PathBuf,
    #[command(flatten)]
    backbone: BackboneArgs,
    #[command(flatten)]
    run: RunArgs,
    /// Augmented views per image, in addition to the eval view (0 = eval view only).
    #[arg(long, default_value_t = 5, value_name = "K", value_parser = clap::value_parser!(u32).range(0..=1000))]
    views: u32,
    /// Seed of the augmentation.
    #[arg(long, default_value_t = 43)]
    seed: u64,
    /// Rows (views) per forward pass [default: 32 on the CPU, 256 on a GPU]. Results do not
    /// depend on it.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=65536))]
    batch_size: Option<u32>,
    /// Storage dtype of the cached features (f16 halves the disk; ~3 significant digits).
    #[arg(long, value_enum, default_value_t = DType::F32)]
    storage_dtype: DType,
    /// Maximum rows per shard file.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    shard_size: u32,
    /// Discard an existing cache built with other settings instead of refusing.
    #[arg(long)]
    force: bool,
    /// Largest image accepted, in megapixels (protects against decompression bombs).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    max_megapixels: u64,
    /// Extract only part I of N (0 ≤ I < N) of the images, chosen by a stable hash of each
    /// path relative to DATA_DIR, into CACHE_DIR/parts/IIII-of-NNNN/. `auto/N` reads I from
    /// SLURM_ARRAY_TASK_ID (submit with --array=0-(N-1)) or JOB_COMPLETION_INDEX (Kubernetes
    /// Indexed Job). Parts run concurrently on a shared filesystem; then run
    /// `headstart cache merge CACHE_DIR`.
    #[arg(long, value_name = "I/N", value_parser = parse_part)]
    part: Option<headstart_cache::Part>,
    /// Print one JSON object with the summary on stdout.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

fn parse_part(s: &str) -> std::result::Result<headstart_cache::Part, headstart_cache::PartError> {
    headstart_cache::Part::parse(s, |v| std::env::var(v).ok())
}

/// Runs the command.
pub fn run(a: Args) -> Result<()> {
    a.run.threads.apply()?;
    require_dir(&a.data_dir, "DATA_DIR")?;
    if a.cache.exists() && !a.cache.is_dir() {
        return Err(usage(format!(
            "--cache {}: is a file, expected a directory (or a path to create)",
            a.cache.display()
        )));
    }
    let arch = a.backbone.architecture()?;
    let mut opts = ExtractOptions {
        views: a.views,
        seed: a.seed,
        batch_size: a.batch_size.unwrap_or(32) as usize,
        dtype: match a.storage_dtype {
            DType::F32 => FeatureDType::F32,
            DType::F16 => FeatureDType::F16,
        },
        shard_size: a.shard_size as usize,
        force: a.force,
        limits: headstart_backbone::preprocess::DecodeLimits {
            max_pixels: a.max_megapixels * 1_000_000,
        },
        part: a.part,
        ..Default::default()
    };
    let check = |o: ExtractOptions| {
        o.check().map_err(|e| match e {
            headstart_extract::Error::Invalid { param, problem } => {
                usage(format!("{} {problem}", crate::hints::flag(param)))
            }
            other => usage(other.to_string()),
        })
    };
    // Checked now, before any work; again (cheaply) once the device's batch size is known.
    check(opts.clone())?;
    // The cache folder may sit inside the data folder: never scanned as images.
    let dataset = Dataset::scan_excluding(&a.data_dir, &[&a.cache])?;
    let (resolved, weights) = a.backbone.load_weights(arch)?;
    opts.weights_file = Some(
        std::fs::canonicalize(&resolved.path)
            .unwrap_or_else(|_| resolved.path.clone())
            .display()
            .to_string(),
    );
    let model = a.backbone.backbone(&a.run, arch, &weights, false)?;
    drop(weights);
    if a.batch_size.is_none() {
        opts.batch_size = default_batch(model.device());
    }
    let opts = check(opts)?;
    // Created only now: a usage error or a missing weights file leaves no empty cache behind.
    output_dir(&a.cache, "--cache")?;
    if !a.quiet && !a.json {
        let target = match a.part {
            Some(p) => format!("{} (part {p})", p.dir(&a.cache).display()),
            None => a.cache.display().to_string(),
        };
        eprintln!(
            "extract: {} images in {} classes, {} → {} ({} + {} views, weights {}, on {}{})",
            dataset.items.len(),
            dataset.classes.len(),
            a.data_dir.display(),
            target,
            arch,
            a.views,
            resolved.source,
            device_name(model.device()),
            if a.run.dtype.is_f32() {
                String::new()
            } else {
                format!(" in {}", a.run.dtype)
            }
        );
    }
    let bar = Bar::new("extract", a.quiet || a.json);
    headstart_backbone::device::reset_peak_memory(model.device());
    let report = extract(&dataset, &model, &resolved.sha256, &a.cache, &opts, &bar)?;
    for n in &report.notes {
        eprintln!("note: {n}");
    }
    if !report.skipped.is_empty() && !a.json {
        eprintln!("skipped {} file(s):", report.skipped.len());
        for s in &report.skipped {
            eprintln!("  {}: {}", s.path, s.reason);
        }
    }
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["device"] = device_name(model.device()).into();
        v["dtype"] = a.run.dtype.name().into();
        v["gpu_peak_memory_bytes"] = headstart_backbone::device::peak_memory(model.device()).into();
        print_json(&v)?;
    } else {
        println!(
            "{} images ok, {} skipped, {} views, {} rows in {} shards, {:.1} s, {:.1} images/s ({} processed, {} reused{})",
            report.images_ok,
            report.images_skipped,
            report.views,
            report.rows,
            report.shards,
            report.seconds,
            report.images_per_second,
            report.images_processed,
            report.images_reused,
            if report.images_stale > 0 { format!(", {} stale", report.images_stale) } else { String::new() }
        );
    }
    if let Some(p) = a.part {
        if !a.json && !a.quiet {
            eprintln!(
                "part {p}: {} of the {} images; when every part is done: headstart cache merge {}",
                report.images_in_part,
                dataset.items.len(),
                a.cache.display()
            );
        }
    } else if !report.empty_classes.is_empty() {
        return Err(headstart_extract::Error::EmptyClasses {
            classes: report.empty_classes,
            without_files: report.classes_without_files,
        }
        .into());
    }
    Ok(())
}
