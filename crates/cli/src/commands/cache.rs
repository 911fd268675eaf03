//! `headstart cache …`: inspect and verify caches.

use std::path::PathBuf;

use anyhow::Result;
use headstart_cache::{FeatureCache, ImageStatus};
use serde_json::json;

use crate::common::{print_json, require_dir};

/// Inspect and verify feature caches (`verify`, `info`).
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Re-hash every shard and check the manifest's structure. Exit code 1 if anything is wrong.
    Verify {
        /// The cache directory.
        #[arg(value_name = "CACHE_DIR")]
        cache: PathBuf,
        /// Print {"ok": bool, "problems": [{"file", "check", "message"}]}.
        #[arg(long)]
        json: bool,
    },
    /// Summarise a cache: backbone, settings, classes, images, rows.
    Info {
        /// The cache directory.
        #[arg(value_name = "CACHE_DIR")]
        cache: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the command.
pub fn run(c: Command) -> Result<()> {
    match c {
        Command::Verify { cache, json } => {
            require_dir(&cache, "CACHE_DIR")?;
            let problems = FeatureCache::verify_dir(&cache);
            if json {
                print_json(
                    &json!({"cache": cache, "ok": problems.is_empty(), "problems": problems}),
                )?;
            } else if problems.is_empty() {
                println!("{}: ok", cache.display());
            } else {
                for p in &problems {
                    println!("{}: {} check failed: {}", p.file, p.check, p.message);
                }
            }
            if problems.is_empty() {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "{}: {} problem(s) found",
                    cache.display(),
                    problems.len()
                ))
            }
        }
        Command::Info { cache, json } => {
            require_dir(&cache, "CACHE_DIR")?;
            let c = FeatureCache::open(&cache)?;
            let m = &c.manifest;
            let count = |s: ImageStatus| m.images.iter().filter(|e| e.status == s).count();
            let info = json!({
                "cache": cache,
                "backbone": m.settings.backbone.name,
                "weights_sha256": m.settings.weights_sha256,
                "views": m.settings.augment.views,
                "seed": m.settings.seed,
                "dtype": m.settings.dtype.name(),
                "feature_dim": m.settings.feature_dim,
                "classes": m.classes,
                "images_ok": count(ImageStatus::Ok),
                "images_skipped": count(ImageStatus::Skipped),
                "images_stale": count(ImageStatus::Stale),
                "rows": m.rows,
                "shards": m.shards.len(),
            });
            if json {
                print_json(&info)
            } else {
                for (k, v) in info.as_object().expect("object") {
                    println!("{k:<15} {v}");
                }
                Ok(())
            }
        }
    }
}
