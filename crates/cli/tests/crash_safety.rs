//! Kill anywhere, lose nothing: SIGKILLed extractions resume to byte-identical caches, a second
//! writer is locked out, and train-head outputs are never torn.

mod common;

use common::*;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn extract_args(data: &Path, cache: &Path) -> Vec<String> {
    common::extract_args(data, cache, &[])
}

fn dataset(root: &Path) {
    link_photos(root, &["daisy", "rose", "tulip"], 0..8);
}

/// Shards recorded by the journal so far (commit 0 opens the journal; each later one, until the
/// last, records a shard).
fn committed_shards(cache: &Path) -> usize {
    std::fs::read_dir(cache.join("journal"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.starts_with("commit-") && n.ends_with(".json")
                })
                .count()
                .saturating_sub(1)
        })
        .unwrap_or(0)
}

#[test]
fn sigkill_at_any_moment_then_resume_gives_the_same_cache() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    dataset(&data);
    let reference = d.path().join("reference");
    let st = bin()
        .args(extract_args(&data, &reference))
        .status()
        .unwrap();
    assert!(st.success());
    let want = snapshot(&reference);
    assert!(
        want.len() >= 5,
        "expected several shards, got {}",
        want.len() - 1
    );

    // Kill after 0, 1, 2 committed shards, and at pseudo-random moments in between.
    let plans: [(usize, u64); 5] = [(0, 0), (1, 0), (2, 0), (1, 137), (3, 61)];
    for (i, (after_shards, extra_ms)) in plans.iter().enumerate() {
        let cache = d.path().join(format!("killed-{i}"));
        let mut child = bin()
            .args(extract_args(&data, &cache))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while committed_shards(&cache) < *after_shards && t0.elapsed() < Duration::from_secs(120) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(*extra_ms));
        if i == 1 {
            // While it runs, a second writer is refused at once, naming the first.
            let out = bin().args(extract_args(&data, &cache)).output().unwrap();
            if child.try_wait().unwrap().is_none() {
                assert!(!out.status.success());
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(err.contains(&format!("pid {}", child.id())), "{err}");
            }
            // …and a reader never trains on the partial snapshot: train-head is refused too,
            // naming the writer.
            let head = d.path().join("head-while-writing");
            let out = bin()
                .args([
                    "train-head",
                    "--cache",
                    cache.to_str().unwrap(),
                    "--out",
                    head.to_str().unwrap(),
                ])
                .output()
                .unwrap();
            if child.try_wait().unwrap().is_none() {
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(
                    !out.status.success() && err.contains(&format!("pid {}", child.id())),
                    "{err}"
                );
                assert!(!head.join("head.safetensors").exists());
            }
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let out = bin().args(extract_args(&data, &cache)).output().unwrap();
        assert!(
            out.status.success(),
            "resume {i} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            snapshot(&cache),
            want,
            "plan {i}: resumed cache differs from the uninterrupted one"
        );
    }
}

#[test]
fn train_head_outputs_are_old_or_new_never_torn() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    dataset(&data);
    let cache = d.path().join("cache");
    assert!(bin()
        .args(extract_args(&data, &cache))
        .status()
        .unwrap()
        .success());
    let head = d.path().join("head");
    let train = |seed: &str| {
        let mut c = bin();
        c.args([
            "train-head",
            "--cache",
            &cache.display().to_string(),
            "--out",
            &head.display().to_string(),
            "--seed",
            seed,
            "--json",
        ]);
        c
    };
    assert!(train("1").output().unwrap().status.success());
    let files = [
        "head.safetensors",
        "history.json",
        "report.json",
        "run.json",
        "curves.png",
    ];
    for (k, delay) in [3u64, 10, 25, 40, 80, 150].iter().enumerate() {
        let mut child = train(&format!("{}", k + 2))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(*delay));
        let _ = child.kill();
        let _ = child.wait();
        for f in files {
            let bytes = std::fs::read(head.join(f)).unwrap();
            match f {
                "head.safetensors" => assert!(
                    safetensors::SafeTensors::deserialize(&bytes).is_ok(),
                    "torn head after {delay} ms"
                ),
                "curves.png" => assert!(
                    image::load_from_memory(&bytes).is_ok(),
                    "torn png after {delay} ms"
                ),
                _ => assert!(
                    serde_json::from_slice::<serde_json::Value>(&bytes).is_ok(),
                    "torn {f} after {delay} ms"
                ),
            }
        }
    }
}
