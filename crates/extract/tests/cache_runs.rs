//! End-to-end extraction runs: determinism, batch/thread independence, resume, incremental
//! add, settings refusal, Python readability.

mod common;

use common::*;
use headstart_cache::FeatureCache;
use headstart_extract::{extract, Dataset, ExtractOptions, NoProgress};

fn opts() -> ExtractOptions {
    ExtractOptions {
        views: 2,
        batch_size: 8,
        shard_size: 9,
        ..Default::default()
    }
}

fn run(
    data: &std::path::Path,
    cache: &std::path::Path,
    o: &ExtractOptions,
) -> headstart_extract::ExtractReport {
    let ds = Dataset::scan(data).unwrap();
    extract(
        &ds,
        resnet18(),
        SHA,
        cache,
        &o.clone().check().unwrap(),
        &NoProgress,
    )
    .unwrap()
}

fn rel_diff(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

#[test]
fn two_runs_are_byte_identical_and_batch_size_and_threads_do_not_matter() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    make_dataset(&data, &["ant", "bee"], 4);
    let (a, b, c) = (d.path().join("a"), d.path().join("b"), d.path().join("c"));
    let r = run(&data, &a, &opts());
    assert_eq!((r.images_ok, r.rows, r.shards), (8, 24, 3));
    run(&data, &b, &opts());
    assert_eq!(snapshot(&a), snapshot(&b));
    // Batch size 32 and a single thread: same features within 1e-5.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        run(
            &data,
            &c,
            &ExtractOptions {
                batch_size: 32,
                ..opts()
            }
            .check()
            .unwrap(),
        )
    });
    let fa = FeatureCache::open(&a).unwrap().load().unwrap();
    let fc = FeatureCache::open(&c).unwrap().load().unwrap();
    assert_eq!(fa.image, fc.image);
    assert_eq!(fa.view, fc.view);
    let e = rel_diff(&fc.features, &fa.features);
    assert!(e <= 1e-5, "relative difference {e}");
}

#[test]
fn deleting_the_last_shard_then_rerunning_restores_it() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    make_dataset(&data, &["ant", "bee"], 4);
    let cache = d.path().join("cache");
    run(&data, &cache, &opts());
    let before = snapshot(&cache);
    // Simulate a kill before the last shard was recorded: the shard and its journal commit
    // are gone, and the manifest (written only when a run finishes) was never written.
    let m = headstart_cache::Manifest::read(&cache).unwrap();
    let last = m.shards.last().unwrap().clone();
    std::fs::remove_file(cache.join(&last.file)).unwrap();
    let journal = cache.join("journal");
    let mut commits: Vec<_> = std::fs::read_dir(&journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    commits.sort();
    std::fs::remove_file(commits.last().unwrap()).unwrap();
    std::fs::remove_file(cache.join("manifest.json")).unwrap();
    let r = run(&data, &cache, &opts());
    assert_eq!(r.images_processed, last.rows / 3);
    assert_eq!(r.images_reused, 8 - last.rows / 3);
    assert_eq!(snapshot(&cache), before);
}

#[test]
fn new_images_are_added_incrementally_and_changes_go_stale() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    make_dataset(&data, &["ant", "bee"], 3);
    let cache = d.path().join("cache");
    run(&data, &cache, &opts());
    picture(50, 50, 99).save(data.join("ant/new.png")).unwrap();
    picture(60, 50, 98)
        .save(data.join("bee/img00.png"))
        .unwrap(); // changed content
    let r = run(&data, &cache, &opts());
    assert_eq!(r.images_processed, 2);
    assert_eq!(r.images_reused, 5);
    assert_eq!(r.images_stale, 1);
    assert_eq!(r.images_ok, 7);
    let rows = FeatureCache::open(&cache).unwrap().load().unwrap();
    assert_eq!(rows.len(), 7 * 3);
    // A third run has nothing to do.
    let r = run(&data, &cache, &opts());
    assert_eq!((r.images_processed, r.images_reused), (0, 7));
}

#[test]
fn a_different_configuration_is_refused_with_what_differs() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    make_dataset(&data, &["ant", "bee"], 2);
    let cache = d.path().join("cache");
    run(&data, &cache, &opts());
    let ds = Dataset::scan(&data).unwrap();
    let err = extract(
        &ds,
        resnet18(),
        SHA,
        &cache,
        &ExtractOptions {
            views: 3,
            seed: 7,
            ..opts()
        }
        .check()
        .unwrap(),
        &NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("views: cache has 2, this run has 3"), "{err}");
    assert!(err.contains("seed: cache has 43, this run has 7"), "{err}");
    let err = extract(
        &ds,
        resnet18(),
        &"0".repeat(64),
        &cache,
        &opts().check().unwrap(),
        &NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("weights sha256"), "{err}");
    let r = extract(
        &ds,
        resnet18(),
        SHA,
        &cache,
        &ExtractOptions {
            views: 3,
            force: true,
            ..opts()
        }
        .check()
        .unwrap(),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(r.rows, 4 * 4);
}

#[test]
fn python_can_read_the_cache_as_documented() {
    // `just test` points HEADSTART_PYTHON at a python with numpy and safetensors
    // (scripts/python-env.sh installs them once); without one the test fails, unless skipping is
    // asked for by name.
    let python = std::env::var("HEADSTART_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&python)
        .args(["-c", "import numpy, safetensors.numpy"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var_os("HEADSTART_SKIP_PYTHON").is_some() {
            eprintln!("SKIPPED (HEADSTART_SKIP_PYTHON is set): {python} has no numpy/safetensors");
            return;
        }
        panic!(
            "{python} cannot import numpy and safetensors: run the suite with `just test` (it installs them once, scripts/python-env.sh), or `pip install numpy safetensors`, or set HEADSTART_SKIP_PYTHON=1 to skip this test"
        );
    }
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    make_dataset(&data, &["ant", "bee"], 2);
    let cache = d.path().join("cache");
    run(&data, &cache, &opts());
    // The snippet from docs/cache-format.md.
    let script = r#"
import json, sys
from pathlib import Path
import numpy as np
from safetensors.numpy import load_file

cache = Path(sys.argv[1])
manifest = json.loads((cache / "manifest.json").read_text())
shards = [load_file(cache / s["file"]) for s in manifest["shards"]]
X = np.concatenate([s["features"] for s in shards]).astype(np.float32)
y = np.concatenate([s["label"] for s in shards])
image = np.concatenate([s["image"] for s in shards])
view = np.concatenate([s["view"] for s in shards])
ok = np.array([manifest["images"][i]["status"] == "ok" for i in image], dtype=bool)
X, y, image, view = X[ok], y[ok], image[ok], view[ok]
print(X.shape[0], X.shape[1], int((view == 0).sum()), manifest["classes"][int(y[0])])
"#;
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&cache)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "12 512 4 ant");
}

#[cfg(unix)]
#[test]
fn non_utf8_names_that_look_alike_are_distinct_files() {
    use std::os::unix::ffi::OsStrExt;
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    make_dataset(&data, &["ant", "bee"], 1);
    for (i, name) in [&b"ant/\xfe.png"[..], b"ant/\xff.png"].iter().enumerate() {
        picture(40, 40, 50 + i as u32)
            .save(data.join(std::ffi::OsStr::from_bytes(name)))
            .unwrap();
    }
    let cache = d.path().join("cache");
    let r = run(&data, &cache, &opts());
    assert_eq!((r.images_ok, r.images_stale), (4, 0));
    let r = run(&data, &cache, &opts());
    assert_eq!(
        (r.images_processed, r.images_reused, r.images_stale),
        (0, 4, 0)
    );
}
