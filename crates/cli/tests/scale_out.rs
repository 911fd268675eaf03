//! Partitioned extraction through the binary: three concurrent processes write one cache, the
//! merge equals a single-process run row for row (and byte for byte), and bad `--part` use is
//! refused with a clear message.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Output, Stdio};

use common::*;
use headstart_cache::FeatureCache;

/// Lite0 with small settings, one thread per process (three run at once), then `extra`.
fn extract_args(data: &Path, cache: &Path, extra: &[&str]) -> Vec<String> {
    let mut more = vec!["--threads", "1"];
    more.extend_from_slice(extra);
    common::extract_args(data, cache, &more)
}

fn run(args: &[String]) -> Output {
    headstart(args)
}

fn dataset(root: &Path) {
    link_photos(root, &["daisy", "rose", "tulip"], 0..7);
    // A file every run must skip, and name.
    std::fs::write(root.join("rose/broken.jpg"), b"\xff\xd8\xff\xe0 not really").unwrap();
}

/// (path, view) → features of every usable row.
fn rows(cache: &Path) -> HashMap<(String, i64), Vec<f32>> {
    let c = FeatureCache::open(cache).unwrap();
    let r = c.load().unwrap();
    (0..r.len())
        .map(|i| {
            let path = c.manifest.images[r.image[i] as usize].path.clone();
            ((path, r.view[i]), r.row(i).to_vec())
        })
        .collect()
}

#[test]
fn three_concurrent_parts_merge_into_the_single_process_cache() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    dataset(&data);
    let parted = d.path().join("parted");
    // Three processes at once into one cache directory.
    let children: Vec<_> = (0..3)
        .map(|i| {
            bin()
                .args(extract_args(&data, &parted, &["--part", &format!("{i}/3")]))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "part {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Before the merge, readers say exactly what to run.
    let head = d.path().join("head");
    let out = run(&[
        "train-head".into(),
        "--cache".into(),
        parted.display().to_string(),
        "--out".into(),
        head.display().to_string(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("headstart cache merge {}", parted.display())),
        "{err}"
    );
    let out = run(&[
        "cache".into(),
        "info".into(),
        parted.display().to_string(),
        "--json".into(),
    ]);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        info["partitioned"]["finished"],
        serde_json::json!([0, 1, 2])
    );
    // Merge, then compare with one process over the whole folder.
    let out = run(&[
        "cache".into(),
        "merge".into(),
        parted.display().to_string(),
        "--json".into(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["parts"], 3);
    assert_eq!(report["images_skipped"], 1);
    let single = d.path().join("single");
    let out = run(&extract_args(&data, &single, &[]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (a, b) = (rows(&single), rows(&parted));
    assert_eq!(a.len(), 21 * 2);
    assert_eq!(a.len(), b.len());
    for (key, fa) in &a {
        assert_eq!(Some(fa), b.get(key), "row {key:?} differs");
    }
    // Stronger: the very same files.
    assert_eq!(cache_files(&single), cache_files(&parted));

    // kill -9 during a merge (two rows per shard, so it takes a while), then rerun: same bytes.
    let fine = || -> Vec<String> {
        [
            "cache",
            "merge",
            &parted.display().to_string(),
            "--shard-size",
            "2",
            "--quiet",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let out = run(&fine());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = cache_files(&parted);
    for delay_ms in [0u64, 2, 5, 8, 12, 16, 25] {
        let mut child = bin()
            .args(fine())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let out = run(&fine());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(cache_files(&parted), want, "killed after {delay_ms} ms");
    }
    // Back to the parts' shard size for training below.
    let out = run(&["cache".into(), "merge".into(), parted.display().to_string()]);
    assert!(out.status.success());
    assert_eq!(cache_files(&single), cache_files(&parted));
    let out = run(&[
        "train-head".into(),
        "--cache".into(),
        parted.display().to_string(),
        "--out".into(),
        head.display().to_string(),
        "--epochs".into(),
        "2".into(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_part_use_is_refused_clearly() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    dataset(&data);
    let cache = d.path().join("c");
    for (spec, says) in [
        ("3/3", "must be below 3"),
        ("0/0", "at least 1"),
        ("2", "expected I/N"),
        (
            "auto/3",
            "neither SLURM_ARRAY_TASK_ID nor JOB_COMPLETION_INDEX is set",
        ),
    ] {
        let out = run(&extract_args(&data, &cache, &["--part", spec]));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--part {spec}: {err}");
        assert!(err.contains(says), "--part {spec}: {err}");
    }
    let out = bin()
        .args(extract_args(&data, &cache, &["--part", "auto/3"]))
        .env("SLURM_ARRAY_TASK_ID", "3")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--array=0-2"));
    assert!(!cache.exists(), "usage errors create nothing");

    // Part 0 through the Slurm variable, then part 1 with other settings.
    let out = bin()
        .args(extract_args(&data, &cache, &["--part", "auto/3"]))
        .env("SLURM_ARRAY_TASK_ID", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(cache.join("parts/0000-of-0003/manifest.json").is_file());
    let out = run(&extract_args(
        &data,
        &cache,
        &["--part", "1/3", "--seed", "7"],
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("seed: cache has 43, this run has 7") && err.contains("partition.json"),
        "{err}"
    );
    // Another N into the same cache.
    let out = run(&extract_args(&data, &cache, &["--part", "1/2"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("partitioned into 3 parts"), "{err}");
    // A whole-dataset run into the partitioned cache.
    let out = run(&extract_args(&data, &cache, &[]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--part I/3"), "{err}");
    // A whole-dataset run into one part's folder would put every image into that part.
    let part0 = cache.join("parts/0000-of-0003");
    let out = run(&extract_args(&data, &part0, &[]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&format!("--cache {} --part 0/3", cache.display())),
        "{err}"
    );
    // A merge with parts missing names them and the commands.
    let out = run(&["cache".into(), "merge".into(), cache.display().to_string()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("never started: part 1, 2") && err.contains("--part I/3` for I in 1, 2"),
        "{err}"
    );
    // Nothing committed was lost on the way.
    let out = run(&[
        "cache".into(),
        "verify".into(),
        cache.display().to_string(),
        "--json".into(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = v["problems"].as_array().unwrap();
    assert!(problems.iter().all(|p| p["check"] == "part"), "{v}");
    assert_eq!(problems.len(), 2);
}
