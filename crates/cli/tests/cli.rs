//! End-to-end tests of the `headstart` binary on the shared photos and weights.

use std::path::{Path, PathBuf};

mod common;

use common::*;
use serde_json::Value;

fn sorted_photos(class: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(shared("data/flowers").join(class))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// Links photos `range` of every class into `dir/<class>/`.
fn link_subset(dir: &Path, range: std::ops::Range<usize>) {
    link_photos(dir, &CLASSES, range);
}

#[test]
fn classify_says_daisy_for_most_daisies() {
    let photos: Vec<String> = sorted_photos("daisy")[..60]
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let w = lite0().display().to_string();
    let mut args = vec![
        "classify",
        "--backbone",
        "efficientnet-lite0",
        "--weights",
        &w,
        "--json",
    ];
    args.extend(photos.iter().map(String::as_str));
    let v: Value = serde_json::from_str(&ok(&args)).unwrap();
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 60);
    let daisies = list.iter().filter(|r| r["top"][0]["index"] == 985).count();
    assert_eq!(list[0]["top"].as_array().unwrap().len(), 5);
    assert_eq!(
        list.iter().find(|r| r["top"][0]["index"] == 985).unwrap()["top"][0]["label"],
        "daisy"
    );
    println!("{daisies} of 60 daisies classified as ImageNet 985");
    assert!(daisies >= 48, "{daisies} of 60");
}

#[test]
fn weights_command_reports_source_hash_and_count() {
    let w = lite0().display().to_string();
    let v: Value = serde_json::from_str(&ok(&[
        "weights",
        "--backbone",
        "efficientnet-lite0",
        "--weights",
        &w,
        "--json",
    ]))
    .unwrap();
    assert_eq!(
        v["sha256"],
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
    );
    assert_eq!(v["tensors"], 296);
    // Nothing resolvable offline: one error listing every place and the fix.
    let out = headstart(&["weights", "--backbone", "resnet18"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("torch hub cache")
            && err.contains("HF_HUB_OFFLINE")
            && err.contains("--weights"),
        "{err}"
    );
}

#[test]
fn bad_command_line_values_exit_with_code_2() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let data = shared("data/flowers").display().to_string();
    let f = file.display().to_string();
    let fresh = d.path().join("fresh-cache").display().to_string();
    let missing_grid = d.path().join("missing/x.png").display().to_string();
    let dir = d.path().display().to_string();
    let cases: Vec<Vec<&str>> = vec![
        vec!["extract", &data, "--cache", "/tmp/x", "--views", "-1"],
        vec!["extract", &data, "--cache", "/tmp/x", "--views", "many"],
        vec!["extract", &data, "--cache", "/tmp/x", "--batch-size", "0"],
        vec!["extract", "/definitely/missing", "--cache", "/tmp/x"],
        vec!["extract", &data, "--cache", &f],
        vec![
            "train-head",
            "--cache",
            "/definitely/missing",
            "--out",
            "/tmp/y",
        ],
        vec!["train-head", "--cache", &data, "--out", &f],
        vec!["predict", "--head", "/definitely/missing", "x.jpg"],
        vec!["extract", &data, "--cache", "/tmp/x", "--backbone", "vgg16"],
        vec!["extract", &data, "--cache", &fresh, "--batch-size", "0"],
        vec!["extract", &data, "--cache", &fresh, "--shard-size", "2"],
        vec!["show", &data, "--grid", &missing_grid],
        vec![
            "predict",
            "--head",
            "/definitely/missing",
            "--grid",
            &dir,
            "x.jpg",
        ],
        vec!["fetch-flowers", "--out", &fresh, "--sha256", "not-a-digest"],
    ];
    for args in cases {
        let out = headstart(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.trim().is_empty());
        // The OS error is said once, not twice.
        assert!(err.matches("os error").count() <= 1, "{args:?}: {err}");
    }
    // A usage error leaves no empty cache folder behind.
    assert!(!std::path::Path::new(&fresh).exists());
}

#[test]
fn extract_train_predict_eval_end_to_end_with_lite0() {
    let d = tempfile::tempdir().unwrap();
    let (train_dir, test_dir) = (d.path().join("train"), d.path().join("held-back"));
    // 40 photos per class to train on, 40 others per class held back.
    link_subset(&train_dir, 0..40);
    link_subset(&test_dir, 80..120);
    let w = lite0().display().to_string();
    let cache = d.path().join("cache").display().to_string();
    let head = d.path().join("head").display().to_string();
    let td = train_dir.display().to_string();

    let ex: Value = serde_json::from_str(&ok(&[
        "extract",
        &td,
        "--cache",
        &cache,
        "--backbone",
        "efficientnet-lite0",
        "--weights",
        &w,
        "--views",
        "1",
        "--json",
        "--quiet",
    ]))
    .unwrap();
    assert_eq!(ex["images_ok"], 200);
    assert_eq!(ex["rows"], 400);
    assert_eq!(
        ok(&["cache", "verify", &cache]).trim(),
        format!("{cache}: ok")
    );

    let tr: Value = serde_json::from_str(&ok(&[
        "train-head",
        "--cache",
        &cache,
        "--out",
        &head,
        "--solver",
        "lbfgs",
        "--json",
    ]))
    .unwrap();
    assert_eq!(tr["solver"], "lbfgs");
    for f in [
        "head.safetensors",
        "history.json",
        "history.csv",
        "curves.png",
        "report.json",
        "report.txt",
        "validation.json",
        "run.json",
    ] {
        assert!(Path::new(&head).join(f).is_file(), "{f} missing");
    }
    let curves = image::open(Path::new(&head).join("curves.png")).unwrap();
    assert_eq!((curves.width(), curves.height()), (1200, 480));

    // Held-back photos through predict.
    let grid = d.path().join("pred.png").display().to_string();
    let tdir = test_dir.display().to_string();
    let preds: Value = serde_json::from_str(&ok(&[
        "predict",
        "--head",
        &head,
        "--weights",
        &w,
        "--format",
        "json",
        "--grid",
        &grid,
        &tdir,
    ]))
    .unwrap();
    let list = preds.as_array().unwrap();
    assert_eq!(list.len(), 200);
    let correct = list
        .iter()
        .filter(|p| {
            let path = p["path"].as_str().unwrap();
            let class = Path::new(path)
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap();
            p["top"][0]["label"] == class
        })
        .count();
    let top1 = correct as f64 / 200.0;
    println!("held-back top-1 {top1:.3}");
    assert!(top1 >= 0.85, "top-1 {top1}");
    let s: f64 = list[0]["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["score"].as_f64().unwrap())
        .sum();
    assert!(s > 0.0 && s <= 1.0 + 1e-6);
    // At most 64 thumbnails, 8 per row, two title lines each.
    let g = image::open(&grid).unwrap();
    assert_eq!(
        (g.width(), g.height()),
        (8 * 168 + 8, 8 * (168 + 2 * 17 + 4) + 8)
    );

    // eval agrees with predict image by image.
    let ev: Value = serde_json::from_str(&ok(&[
        "eval",
        "--head",
        &head,
        "--weights",
        &w,
        &tdir,
        "--json",
    ]))
    .unwrap();
    assert_eq!(ev["n"], 200);
    assert!((ev["accuracy"].as_f64().unwrap() - top1).abs() < 1e-12);
    for p in ev["predictions"].as_array().unwrap() {
        let q = list.iter().find(|q| q["path"] == p["path"]).unwrap();
        assert_eq!(q["top"][0]["label"], p["label"]);
    }

    // Test-time augmentation: the mean over the eval view and its mirror image (scores move,
    // labels mostly stay), named in eval's JSON.
    let five: Vec<String> = list[..5]
        .iter()
        .map(|p| p["path"].as_str().unwrap().to_string())
        .collect();
    let mut args = vec![
        "predict",
        "--head",
        &head,
        "--weights",
        &w,
        "--format",
        "json",
        "--tta",
        "flip",
    ];
    args.extend(five.iter().map(String::as_str));
    let tta: Value = serde_json::from_str(&ok(&args)).unwrap();
    let tta = tta.as_array().unwrap();
    assert_eq!(tta.len(), 5);
    let moved = tta
        .iter()
        .zip(list)
        .filter(|(a, b)| a["top"][0]["score"] != b["top"][0]["score"])
        .count();
    assert!(moved > 0, "TTA changed no score");
    let agree = tta
        .iter()
        .zip(list)
        .filter(|(a, b)| a["top"][0]["label"] == b["top"][0]["label"])
        .count();
    assert!(agree >= 4, "{agree} of 5 labels kept");
    let out = headstart(&[
        "predict",
        "--head",
        &head,
        "--weights",
        &w,
        "--tta",
        "crops:0",
        &five[0],
    ]);
    assert_eq!(out.status.code(), Some(2));

    // A head used with other weights is refused.
    let fixture = shared("fixtures/resnet18/weights.safetensors")
        .display()
        .to_string();
    let out = headstart(&["predict", "--head", &head, "--weights", &fixture, &tdir]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not the ones this head was trained on"));

    // Same inputs and seed → byte-identical head.
    let head2 = d.path().join("head2").display().to_string();
    ok(&[
        "train-head",
        "--cache",
        &cache,
        "--out",
        &head2,
        "--solver",
        "lbfgs",
        "--json",
    ]);
    let head3 = d.path().join("head3").display().to_string();
    ok(&["train-head", "--cache", &cache, "--out", &head3, "--json"]);
    let head4 = d.path().join("head4").display().to_string();
    ok(&["train-head", "--cache", &cache, "--out", &head4, "--json"]);
    let read = |h: &str| std::fs::read(Path::new(h).join("head.safetensors")).unwrap();
    assert_eq!(read(&head), read(&head2));
    assert_eq!(read(&head3), read(&head4));

    // show draws a grid of the dataset.
    let shown = d.path().join("show.png").display().to_string();
    ok(&[
        "show",
        &td,
        "--grid",
        &shown,
        "--rows",
        "2",
        "--cols",
        "3",
        "--augmented",
    ]);
    let s = image::open(&shown).unwrap();
    assert_eq!(
        (s.width(), s.height()),
        (3 * 168 + 8, 2 * (168 + 17 + 4) + 8)
    );

    // A flipped byte in a shard is caught by verify and refused by train-head.
    let shard = Path::new(&cache).join("shard-00000.safetensors");
    let mut bytes = std::fs::read(&shard).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 1;
    std::fs::write(&shard, &bytes).unwrap();
    let out = headstart(&["cache", "verify", &cache, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["problems"][0]["file"], "shard-00000.safetensors");
    let out = headstart(&["train-head", "--cache", &cache, "--out", &head2]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("shard-00000.safetensors"));
}

/// The layouts and settings that broke promises under attack (issue 11): split folders, a cache
/// inside the data folder, a class whose only file is broken, a diverging learning rate, an
/// output folder with foreign files.
#[test]
fn adversarial_layouts_and_settings_get_clear_outcomes() {
    let d = tempfile::tempdir().unwrap();
    let w = lite0().display().to_string();
    // data/{train,val,test}/<class>/: 3 + 2 + 2 photos per class.
    let data = d.path().join("data");
    for (split, range) in [("train", 0..3), ("val", 3..5), ("test", 5..7)] {
        link_subset(&data.join(split), range);
    }
    let data_s = data.display().to_string();
    // The cache inside the data folder, extracted twice: never a class of its own.
    let cache = data.join("cache");
    let cache_s = cache.display().to_string();
    let extract = |cache: &str| {
        ok(&[
            "extract",
            &data_s,
            "--cache",
            cache,
            "--backbone",
            "efficientnet-lite0",
            "--weights",
            &w,
            "--views",
            "0",
            "--json",
            "--quiet",
        ])
    };
    extract(&cache_s);
    let v: Value = serde_json::from_str(&extract(&cache_s)).unwrap();
    assert_eq!(v["images_ok"], 35, "{v}");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(cache.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["classes"],
        serde_json::json!(CLASSES),
        "{manifest}"
    );
    let head = d.path().join("head");
    let head_s = head.display().to_string();
    ok(&[
        "train-head",
        "--cache",
        &cache_s,
        "--out",
        &head_s,
        "--json",
    ]);
    let val: Value = serde_json::from_str(&ok(&[
        "eval",
        "--head",
        &head_s,
        "--weights",
        &w,
        &data_s,
        "--json",
    ]))
    .unwrap();
    let test: Value = serde_json::from_str(&ok(&[
        "eval",
        "--head",
        &head_s,
        "--weights",
        &w,
        &data_s,
        "--split",
        "test",
        "--json",
    ]))
    .unwrap();
    assert_eq!(
        (val["n"].as_u64(), test["n"].as_u64()),
        (Some(10), Some(10))
    );

    // A diverging learning rate stops with the epoch, leaving the previous head whole.
    let before = std::fs::read(head.join("head.safetensors")).unwrap();
    let out = headstart(&[
        "train-head",
        "--cache",
        &cache_s,
        "--out",
        &head_s,
        "--lr",
        "1e38",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("diverged"), "{err}");
    assert_eq!(
        std::fs::read(head.join("head.safetensors")).unwrap(),
        before
    );
    assert!(
        headstart(&[
            "train-head",
            "--cache",
            &cache_s,
            "--out",
            &head_s,
            "--lr",
            "1e39"
        ])
        .status
        .code()
            == Some(2)
    );

    // --out with someone else's files: refused before anything is replaced.
    let busy = d.path().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("thesis.tex"), b"x").unwrap();
    let out = headstart(&[
        "train-head",
        "--cache",
        &cache_s,
        "--out",
        &busy.display().to_string(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(busy.join("thesis.tex").exists());

    // A class whose only file is broken: extract says so; train-head refuses, naming it.
    let flat = d.path().join("flat");
    link_subset(&flat, 0..3);
    std::fs::create_dir_all(flat.join("weeds")).unwrap();
    std::fs::write(flat.join("weeds/broken.jpg"), b"not a jpeg").unwrap();
    let c2 = d.path().join("c2").display().to_string();
    let out = headstart(&[
        "extract",
        &flat.display().to_string(),
        "--cache",
        &c2,
        "--backbone",
        "efficientnet-lite0",
        "--weights",
        &w,
        "--views",
        "0",
        "--quiet",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("weeds"));
    let out = headstart(&[
        "train-head",
        "--cache",
        &c2,
        "--out",
        &d.path().join("h2").display().to_string(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("weeds"), "{err}");
}
