//! Writes a synthetic cache through the writer API (no backbone) and reports what writing it
//! cost: total bytes written, and the time to commit the first and the last 10 shards (the
//! journal keeps a commit's cost proportional to the shard, so the two should match).
//!
//! ```text
//! synthetic_cache DIR [--images N] [--views K] [--dim D] [--dtype f32|f16] [--shard-size S]
//!                     [--classes C] [--seed S]
//! ```
//! Prints one JSON object. Features are class means plus noise, so a head trained on the cache
//! learns something (the streaming-training benchmark uses this too).

use std::time::Instant;

use headstart_cache::{
    AugmentConfig, CacheSettings, CacheWriter, FeatureDType, ImageEntry, ImageStatus, ViewMeta,
};
use headstart_core::config::{Architecture, AugmentParams};
use headstart_core::rng::SplitMix64;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}: bad value {v}"))
        })
        .unwrap_or(default)
}

/// Bytes this process has written through write(2) so far (Linux), temp files included.
fn written_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/io").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
}

fn dir_bytes(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let m = e.metadata().unwrap();
                    if m.is_dir() {
                        dir_bytes(&e.path())
                    } else {
                        m.len()
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first().filter(|a| !a.starts_with("--")) else {
        eprintln!("usage: synthetic_cache DIR [--images N] [--views K] [--dim D] [--dtype f32|f16] [--shard-size S] [--classes C] [--seed S]");
        std::process::exit(2);
    };
    let dir = std::path::PathBuf::from(dir);
    let images: usize = arg(&args, "--images", 1_000_000);
    let views: u32 = arg(&args, "--views", 0);
    let dim: usize = arg(&args, "--dim", 512);
    let shard_size: usize = arg(&args, "--shard-size", 4096);
    let classes: usize = arg(&args, "--classes", 5);
    let seed: u64 = arg(&args, "--seed", 7);
    let dtype = match arg(&args, "--dtype", "f16".to_string()).as_str() {
        "f32" => FeatureDType::F32,
        "f16" => FeatureDType::F16,
        d => panic!("--dtype {d}: f32 or f16"),
    };
    let rows_per_image = views as usize + 1;
    assert!(
        rows_per_image <= shard_size,
        "--shard-size below the rows of one image"
    );
    let settings = CacheSettings {
        max_pixels: headstart_cache::DEFAULT_MAX_PIXELS,
        weights_file: None,
        feature_dim: dim,
        backbone: Architecture::ResNet18.config(),
        weights_sha256: "0".repeat(64),
        augment: AugmentConfig {
            views,
            crop_size: 224,
            params: AugmentParams::default(),
            sampler: "synthetic".into(),
        },
        seed,
        dtype,
    };
    let class_names: Vec<String> = (0..classes).map(|c| format!("class{c:02}")).collect();
    let mut rng = SplitMix64::new(seed, 1);
    let means: Vec<f32> = (0..classes * dim)
        .map(|_| rng.uniform_range(-1.0, 1.0) as f32)
        .collect();
    let wrote_before = written_bytes().unwrap_or(0);
    let started = Instant::now();
    let mut w = CacheWriter::open(&dir, settings, class_names, shard_size, true).unwrap();
    let mut commit_ms: Vec<f64> = Vec::new();
    let mut buffered = 0usize;
    let mut feats = vec![0f32; rows_per_image * dim];
    let view_meta: Vec<ViewMeta> = (0..rows_per_image as u32)
        .map(|v| ViewMeta {
            view: v,
            crop: [0, 0, 224, 224],
            flip: false,
        })
        .collect();
    for i in 0..images {
        if buffered + rows_per_image > shard_size {
            let t = Instant::now();
            w.commit_shard().unwrap();
            commit_ms.push(t.elapsed().as_secs_f64() * 1e3);
            buffered = 0;
        }
        let label = i % classes;
        for (k, f) in feats.iter_mut().enumerate() {
            *f = means[label * dim + k % dim] + (rng.unit() as f32 - 0.5) * 2.0;
        }
        let entry = ImageEntry {
            path: format!("class{label:02}/img_{i:08}.jpg"),
            path_bytes_hex: None,
            label,
            split: None,
            bytes: 40_000 + (i as u64 % 1000),
            sha256: format!("{:064x}", i as u128 * 0x9E37_79B9_7F4A_7C15),
            status: ImageStatus::Ok,
            reason: None,
        };
        w.add_image(entry, &view_meta, &feats).unwrap();
        buffered += rows_per_image;
    }
    let t = Instant::now();
    let m = w.finish().unwrap();
    let finish_ms = t.elapsed().as_secs_f64() * 1e3;
    let seconds = started.elapsed().as_secs_f64();
    let wrote = written_bytes().map(|b| b - wrote_before);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let first10 = &commit_ms[..commit_ms.len().min(10)];
    let last10 = &commit_ms[commit_ms.len().saturating_sub(10)..];
    // Version 1 rewrote the whole pretty-printed manifest after each shard: its size after
    // shard k is about k/shards of the final one, so the rewrites add up to ≈ final × (shards+1)/2.
    let v1_final = serde_json::to_vec_pretty(&m).unwrap().len() as f64 + 1.0;
    let v1_rewrites = v1_final * (m.shards.len() as f64 + 1.0) / 2.0;
    let manifest_bytes = std::fs::metadata(dir.join("manifest.json")).unwrap().len();
    let journal_bytes = dir_bytes(&dir.join("journal"));
    let shard_bytes: u64 = m
        .shards
        .iter()
        .map(|s| std::fs::metadata(dir.join(&s.file)).unwrap().len())
        .sum();
    let out = serde_json::json!({
        "images": images,
        "rows": m.rows,
        "shards": m.shards.len(),
        "dim": dim,
        "dtype": dtype.name(),
        "seconds": seconds,
        "bytes_written": wrote,
        "shard_bytes": shard_bytes,
        "journal_bytes": journal_bytes,
        "manifest_bytes": manifest_bytes,
        "first10_commit_ms": mean(first10),
        "last10_commit_ms": mean(last10),
        "last_over_first": mean(last10) / mean(first10),
        "finish_ms": finish_ms,
        "v1_manifest_rewrite_bytes_estimate": v1_rewrites,
    });
    println!("{out}");
}
