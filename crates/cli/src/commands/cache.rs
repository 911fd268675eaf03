//! `headstart cache …`: inspect and verify caches.

use std::path::PathBuf;

use anyhow::Result;
use headstart_cache::partition::{parts_status, Part, PartsStatus};
use headstart_cache::{FeatureCache, ImageStatus, MergeOptions, Problem};
use serde_json::json;

use crate::common::{print_json, require_dir};

/// Inspect, verify and merge feature caches (`verify`, `info`, `merge`).
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
    /// Summarise a cache: backbone, settings, classes, images, rows (and, for a partitioned
    /// cache, which parts are finished).
    Info {
        /// The cache directory.
        #[arg(value_name = "CACHE_DIR")]
        cache: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Combine the parts written by `extract --part I/N` into one cache at CACHE_DIR's top
    /// level, in the order a single run writes (the result equals a single-process run's cache
    /// byte for byte). Refuses while a part is missing, unfinished or still running, or when
    /// parts were made with different settings, naming them. Idempotent and crash-safe: rerun
    /// it after a crash.
    Merge {
        /// The partitioned cache directory (the --cache of the parts).
        #[arg(value_name = "CACHE_DIR")]
        cache: PathBuf,
        /// Rows per merged shard (default: the parts' --shard-size).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        shard_size: Option<u32>,
        /// Delete CACHE_DIR/parts/ once the merged cache is safely written.
        #[arg(long)]
        remove_parts: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
    },
}

fn parts_json(cache: &std::path::Path, s: &PartsStatus) -> serde_json::Value {
    json!({
        "parts": s.record.parts,
        "finished": s.finished,
        "unfinished": s.unfinished,
        "missing": s.missing,
        "merged": headstart_cache::Manifest::path_in(cache).is_file(),
    })
}

/// Problems of an unmerged partitioned cache: each finished part's shards, and the parts that
/// are not finished.
fn verify_parts(cache: &std::path::Path, s: &PartsStatus) -> Vec<Problem> {
    let part = |index| Part {
        index,
        count: s.record.parts,
    };
    let mut out = Vec::new();
    for &i in &s.finished {
        for mut p in FeatureCache::verify_dir(&part(i).dir(cache)) {
            p.file = format!("parts/{}/{}", part(i).dir_name(), p.file);
            out.push(p);
        }
    }
    for (list, what) in [
        (&s.unfinished, "unfinished (interrupted or still running)"),
        (&s.missing, "never started"),
    ] {
        for &i in list {
            out.push(Problem {
                file: format!("parts/{}", part(i).dir_name()),
                check: "part".into(),
                message: format!("part {} is {what}", part(i)),
            });
        }
    }
    out
}

/// `cache info` for a person: one `key  value` line each, strings unquoted, lists joined,
/// absent values left out (the JSON form keeps every key).
fn print_info_text(info: &serde_json::Value) {
    for (k, v) in info.as_object().expect("an object") {
        let shown = match v {
            serde_json::Value::Null => continue,
            serde_json::Value::String(s) => headstart_core::text::for_terminal(s).into_owned(),
            serde_json::Value::Array(a) => a
                .iter()
                .map(|x| match x {
                    serde_json::Value::String(s) => {
                        headstart_core::text::for_terminal(s).into_owned()
                    }
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", "),
            serde_json::Value::Object(o) if k == "partitioned" => {
                let list = |key: &str| {
                    o.get(key)
                        .and_then(|v| v.as_array())
                        .map(|a| {
                            a.iter()
                                .map(|x| x.to_string())
                                .collect::<Vec<_>>()
                                .join(" ")
                        })
                        .unwrap_or_default()
                };
                format!(
                    "{} parts (finished: {}; merged: {})",
                    o.get("parts").map(|v| v.to_string()).unwrap_or_default(),
                    list("finished"),
                    o.get("merged").and_then(|v| v.as_bool()).unwrap_or(false)
                )
            }
            other => other.to_string(),
        };
        println!("{:<15} {shown}", k.replace('_', " "));
    }
}

/// Runs the command.
pub fn run(c: Command) -> Result<()> {
    match c {
        Command::Verify { cache, json } => {
            require_dir(&cache, "CACHE_DIR")?;
            let status = parts_status(&cache)?;
            let merged = headstart_cache::Manifest::path_in(&cache).is_file();
            let problems = match &status {
                Some(s) if !merged => verify_parts(&cache, s),
                _ => FeatureCache::verify_dir(&cache),
            };
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
                if let (Some(s), false, false) = (&status, merged, json) {
                    eprintln!(
                        "note: every part is sound but not merged yet: run `headstart cache merge {}` ({} parts)",
                        cache.display(),
                        s.record.parts
                    );
                }
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
            let status = parts_status(&cache)?;
            if let (Some(s), false) = (
                &status,
                headstart_cache::Manifest::path_in(&cache).is_file(),
            ) {
                // Not merged: say where each part stands, and what to run.
                let err = s.not_merged(&cache);
                if json {
                    print_json(
                        &json!({"cache": cache, "partitioned": parts_json(&cache, s), "next": err.to_string()}),
                    )?;
                } else {
                    println!("{err}");
                }
                return Ok(());
            }
            let c = FeatureCache::open(&cache)?;
            let m = &c.manifest;
            let info = json!({
                "cache": cache,
                "backbone": m.settings.backbone.name,
                "weights_sha256": m.settings.weights_sha256,
                "views": m.settings.augment.views,
                "seed": m.settings.seed,
                "dtype": m.settings.dtype.name(),
                "feature_dim": m.settings.feature_dim,
                "classes": m.classes,
                "images_ok": m.count(ImageStatus::Ok),
                "images_skipped": m.count(ImageStatus::Skipped),
                "images_stale": m.count(ImageStatus::Stale),
                "rows": m.rows,
                "shards": m.shards.len(),
                "format_version": m.format_version,
                "partitioned": status.as_ref().map(|s| parts_json(&cache, s)),
            });
            if json {
                print_json(&info)
            } else {
                print_info_text(&info);
                Ok(())
            }
        }
        Command::Merge {
            cache,
            shard_size,
            remove_parts,
            json,
            quiet,
        } => {
            require_dir(&cache, "CACHE_DIR")?;
            let opts = MergeOptions {
                shard_size: shard_size.map(|s| s as usize),
                remove_parts,
            };
            let bar = crate::progress::Bar::new("merge", quiet || json);
            let report = headstart_cache::merge(&cache, &opts, &bar);
            bar.done();
            let report = report?;
            if json {
                print_json(&report)?;
            } else if report.already_merged {
                println!(
                    "{}: already merged ({} images ok, {} rows in {} shards) and parts/ removed: nothing to do",
                    cache.display(),
                    report.images_ok,
                    report.rows,
                    report.shards
                );
            } else {
                println!(
                    "merged {} parts into {}: {} images ok, {} skipped, {} rows in {} shards, {:.1} MB written, {:.1} s{}",
                    report.parts,
                    cache.display(),
                    report.images_ok,
                    report.images_skipped,
                    report.rows,
                    report.shards,
                    report.bytes_written as f64 / 1e6,
                    report.seconds,
                    if report.removed_parts { ", parts/ removed" } else { "" }
                );
            }
            if !report.empty_classes.is_empty() {
                return Err(headstart_extract::Error::EmptyClasses {
                    classes: report.empty_classes,
                    without_files: report.classes_without_files,
                }
                .into());
            }
            Ok(())
        }
    }
}
