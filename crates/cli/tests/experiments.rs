//! Experiments on a cache: sweeps (deterministic whatever the threads, resumable after a kill,
//! refusing other arguments), compare (McNemar on shared images), and `train-head --from`
//! reproducing a head byte for byte. The cache is synthetic (written with the cache crate), so
//! these run in seconds without a backbone.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{bin, headstart, ok};
use headstart_cache::{
    AugmentConfig, CacheSettings, CacheWriter, FeatureDType, ImageEntry, ImageStatus, ViewMeta,
};
use headstart_core::config::{Architecture, AugmentParams};
use headstart_core::rng::SplitMix64;
use serde_json::Value;

const DIM: usize = 24;
const VIEWS: u32 = 2;

/// A cache of `images` images over 3 classes (noisy one-hot features, so heads differ), with
/// `VIEWS` augmented views each; `seed` changes the features.
fn write_cache(dir: &Path, images: usize, seed: u64) {
    let settings = CacheSettings {
        max_pixels: headstart_cache::DEFAULT_MAX_PIXELS,
        weights_file: None,
        feature_dim: DIM,
        backbone: Architecture::ResNet18.config(),
        weights_sha256: "0".repeat(64),
        augment: AugmentConfig {
            views: VIEWS,
            crop_size: 224,
            params: AugmentParams::default(),
            sampler: "test".into(),
        },
        seed: 1,
        dtype: FeatureDType::F32,
    };
    let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let mut w = CacheWriter::open(dir, settings, classes, 64, false).unwrap();
    let mut rng = SplitMix64::new(seed, 4);
    let views: Vec<ViewMeta> = (0..=VIEWS)
        .map(|v| ViewMeta {
            view: v,
            crop: [0, 0, 1, 1],
            flip: false,
        })
        .collect();
    for i in 0..images {
        let label = i % 3;
        let feats: Vec<f32> = (0..(VIEWS as usize + 1) * DIM)
            .map(|k| if k % DIM == label { 1.0 } else { 0.0 } + 2.0 * (rng.unit() as f32 - 0.5))
            .collect();
        let e = ImageEntry {
            path: format!("{label}/{i:05}.jpg"),
            path_bytes_hex: None,
            label,
            split: None,
            bytes: 1,
            sha256: format!("{i:064x}"),
            status: ImageStatus::Ok,
            reason: None,
        };
        w.add_image(e, &views, &feats).unwrap();
    }
    w.finish().unwrap();
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// The scores of a leaderboard (what must not depend on threads or interruptions).
fn scores(board: &Value) -> Vec<(Value, Value, Value, Value)> {
    board["configurations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["settings"].clone(),
                c["accuracy"]["scores"].clone(),
                c["macro_f1"]["scores"].clone(),
                c["accuracy_tta"].clone(),
            )
        })
        .collect()
}

fn sweep_args(cache: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "sweep",
        "--cache",
        &s(cache),
        "--out",
        &s(out),
        "--lr",
        "0.001,0.01,0.1",
        "--epochs",
        "3,6",
        "--solver",
        "sgd,lbfgs",
        "--l2",
        "0.01,swept",
        "--seeds",
        "1,2",
        "--folds",
        "4",
        "--val-tta",
        "--quiet",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    v.extend(extra.iter().map(|x| x.to_string()));
    v
}

#[test]
fn sweeps_score_the_same_whatever_the_threads_and_publish_the_best() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    write_cache(&cache, 240, 1);
    let one = d.path().join("one");
    let two = d.path().join("two");
    let a = json(&ok(&[sweep_args(
        &cache,
        &one,
        &["--threads", "1", "--json"],
    )]
    .concat()));
    let b = json(&ok(&[sweep_args(
        &cache,
        &two,
        &["--threads", "2", "--json"],
    )]
    .concat()));
    assert_eq!(scores(&a), scores(&b));
    assert_eq!(a["best"], b["best"]);
    // The contract's keys: 3 × 2 SGD + 2 L-BFGS configurations, 4 folds × 2 seeds each.
    let configs = a["configurations"].as_array().unwrap();
    assert_eq!(configs.len(), 8);
    for c in configs {
        for k in ["accuracy", "macro_f1"] {
            let sm = &c[k];
            assert_eq!(sm["scores"].as_array().unwrap().len(), 8, "{c}");
            let [lo, hi] = [
                sm["ci95"][0].as_f64().unwrap(),
                sm["ci95"][1].as_f64().unwrap(),
            ];
            let mean = sm["mean"].as_f64().unwrap();
            assert!(lo <= mean && mean <= hi && sm["std"].as_f64().unwrap() >= 0.0);
        }
        assert!(c["seconds"].as_f64().unwrap() >= 0.0);
        assert!(c["settings"]["solver"].is_string());
        assert!(
            c["accuracy_tta"]["mean"].is_number(),
            "--val-tta with views: {c}"
        );
    }
    let best = a["best"].as_u64().unwrap() as usize;
    let means: Vec<f64> = configs
        .iter()
        .map(|c| c["accuracy"]["mean"].as_f64().unwrap())
        .collect();
    assert!(means.iter().all(|&m| m <= means[best]));
    // The files, and the refitted best as an ordinary head that compare and --from read.
    for f in [
        "leaderboard.json",
        "leaderboard.csv",
        "sweep.png",
        "sweep.json",
    ] {
        assert!(one.join(f).is_file(), "{f}");
    }
    let csv = std::fs::read_to_string(one.join("leaderboard.csv")).unwrap();
    assert_eq!(csv.lines().count(), 9);
    assert!(csv
        .lines()
        .nth(1)
        .unwrap()
        .starts_with(&format!("1,{best},")));
    let head = one.join("best");
    for f in headstart_head::HEAD_FILES {
        assert!(head.join(f).is_file(), "best/{f}");
    }
    assert!(a["refit"]["val_accuracy"].as_f64().unwrap() > 0.4);
    let text = ok(&["train-head", "--from", &s(&head.join("run.json"))]);
    assert!(text.contains("byte-identical"), "{text}");

    // A repeated seed (or grid value) would count scores twice: refused before any work.
    let mut twice = sweep_args(&cache, &d.path().join("twice"), &[]);
    let i = twice.iter().position(|x| x == "--seeds").unwrap();
    twice[i + 1] = "1,1".into();
    let out = headstart(&twice);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--seeds"));
    // More folds than training images: refused, naming both.
    let mut many = sweep_args(&cache, &d.path().join("many"), &["--val-fraction", "0.9"]);
    let i = many.iter().position(|x| x == "--folds").unwrap();
    many[i + 1] = "100".into();
    let out = headstart(&many);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("fewer than the 100 folds"));

    // The same folder with other arguments: refused, naming what differs.
    let mut other = sweep_args(&cache, &one, &[]);
    let i = other.iter().position(|x| x == "--folds").unwrap();
    other[i + 1] = "3".into();
    let out = headstart(&other);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("folds") && err.contains('4') && err.contains('3'),
        "{err}"
    );
}

#[test]
fn a_killed_sweep_resumes_to_the_same_leaderboard() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    write_cache(&cache, 300, 2);
    let args = |out: &Path| {
        let mut v = sweep_args(&cache, out, &["--threads", "1", "--no-refit", "--json"]);
        // Slow enough jobs that the kill lands mid-sweep.
        let i = v.iter().position(|x| x == "3,6").unwrap();
        v[i] = "20,30".into();
        v
    };
    let reference = d.path().join("reference");
    let want = json(&ok(&args(&reference)));
    let results = |dir: &Path| {
        std::fs::read_dir(dir.join("results"))
            .map(|r| r.count())
            .unwrap_or(0)
    };
    let jobs = 8 * 8;
    let mut interrupted = 0;
    for (k, after) in [1usize, 9, 30].into_iter().enumerate() {
        let out = d.path().join(format!("killed-{k}"));
        let mut child = bin()
            .args(args(&out))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while results(&out) < after && t0.elapsed() < Duration::from_secs(120) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let done = results(&out);
        if done < jobs {
            interrupted += 1;
        }
        let got = json(&ok(&args(&out)));
        assert_eq!(scores(&got), scores(&want), "kill after {done} results");
        assert_eq!(got["best"], want["best"]);
    }
    assert!(interrupted > 0, "no kill landed before the sweep finished");
}

fn train(cache: &Path, out: &Path, extra: &[&str]) -> Value {
    let mut v = vec![
        "train-head".to_string(),
        "--cache".into(),
        s(cache),
        "--out".into(),
        s(out),
        "--json".into(),
    ];
    v.extend(extra.iter().map(|x| x.to_string()));
    json(&ok(&v))
}

#[test]
fn compare_names_the_differences_and_tests_them_on_shared_images() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    write_cache(&cache, 300, 3);
    let (a, b) = (d.path().join("sgd"), d.path().join("lbfgs"));
    let ta = train(&cache, &a, &["--epochs", "2", "--val-tta"]);
    train(&cache, &b, &["--solver", "lbfgs"]);
    assert!(ta["val_accuracy_tta"].is_number(), "{ta}");
    let c = json(&ok(&["compare", &s(&a), &s(&b), "--json"]));
    let heads = c["heads"].as_array().unwrap();
    assert_eq!(heads.len(), 2);
    let p = c["mcnemar_p"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p));
    assert_eq!(c["pairs"][0]["shared_images"], 60);
    assert_eq!(c["pairs"][0]["same_images"], true);
    let differing: Vec<&str> = c["differing_settings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(differing.contains(&"solver.sgd.lr"), "{differing:?}");
    assert!(
        !differing.contains(&"cache_manifest_sha256"),
        "{differing:?}"
    );
    for h in heads {
        let acc = &h["accuracy"];
        let v = acc["value"].as_f64().unwrap();
        assert!(acc["ci95"][0].as_f64().unwrap() <= v && v <= acc["ci95"][1].as_f64().unwrap());
        assert_eq!(h["per_class"].as_array().unwrap().len(), 3);
        assert_eq!(h["n"], 60);
    }
    assert!(heads[0]["accuracy_tta"]["value"].is_number());
    // Text: the table and the test.
    let text = ok(&["compare", &s(&a), &s(&b)]);
    assert!(
        text.contains("McNemar") && text.contains("per-class F1"),
        "{text}"
    );
    // A head without validation.json (an older one) still compares, with a note.
    std::fs::remove_file(b.join("validation.json")).unwrap();
    let c = json(&ok(&["compare", &s(&a), &s(&b), "--json"]));
    assert!(c.get("mcnemar_p").is_none());
    assert!(c["notes"][0].as_str().unwrap().contains("validation.json"));
    // One head is not a comparison.
    assert_eq!(headstart(&["compare", &s(&a)]).status.code(), Some(2));
}

#[test]
fn from_run_json_reproduces_the_head_byte_for_byte_or_names_the_cause() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    write_cache(&cache, 150, 4);
    let head = d.path().join("head");
    train(&cache, &head, &["--epochs", "4", "--lr", "0.01"]);
    let copy = d.path().join("copy");
    let r = json(&ok(&[
        "train-head",
        "--from",
        &s(&head.join("run.json")),
        "--out",
        &s(&copy),
        "--json",
    ]));
    assert_eq!(r["identical"], true, "{r}");
    let bytes = |p: &PathBuf| std::fs::read(p.join("head.safetensors")).unwrap();
    assert_eq!(bytes(&head), bytes(&copy));
    // The head folder itself works as --from too.
    assert!(ok(&["train-head", "--from", &s(&head)]).contains("byte-identical"));
    // Another cache: the bytes differ and the message names the cache.
    let other = d.path().join("other");
    write_cache(&other, 150, 5);
    let out = headstart(&[
        "train-head",
        "--from",
        &s(&head.join("run.json")),
        "--cache",
        &s(&other),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("differs") && err.contains("not the one the head was trained on"),
        "{err}"
    );
    // Training flags do not mix with --from; --out cannot be the head itself.
    let out = headstart(&["train-head", "--from", &s(&head), "--lr", "0.1"]);
    assert_eq!(out.status.code(), Some(2));
    let out = headstart(&["train-head", "--from", &s(&head), "--out", &s(&head)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is the head being reproduced"));
}
