//! `audit`, `neighbors` and `map` on real photos: exact and near duplicates (byte copies,
//! re-encoded and resized copies), leakage across a train/val folder split, planted label flips
//! ranked near the top, determinism whatever the threads, and bad inputs (an empty cache, one
//! class, a class with one image, a cache being written) refused or noted without a half-written
//! output folder.

mod common;

use std::path::{Path, PathBuf};

use common::{extract_args, headstart, ok, shared, CLASSES};
use headstart_cache::{
    AugmentConfig, CacheSettings, CacheWriter, FeatureDType, ImageEntry, ImageStatus, ViewMeta,
};
use headstart_core::config::{Architecture, AugmentParams};
use serde_json::Value;

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The shared photos of `class`, sorted.
fn photos(class: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(shared("data/flowers").join(class))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn link(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(from, to).unwrap();
}

/// A JPEG re-encoding of `from` at `scale` of its size and `quality`, as a copy saved by another
/// program would be.
fn reencode(from: &Path, to: &Path, scale: f32, quality: u8) {
    let img = image::open(from).unwrap().to_rgb8();
    let (w, h) = (
        (img.width() as f32 * scale).round() as u32,
        (img.height() as f32 * scale).round() as u32,
    );
    let small = image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle);
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(&small)
        .unwrap();
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::write(to, out).unwrap();
}

/// The planted problems of [`dataset`].
struct Planted {
    /// Files that are byte copies of another file of the same class (train/daisy).
    exact: (String, String),
    /// A resized, re-encoded copy in val/ of a photo in train/ (same class): leakage.
    leak: (String, String),
    /// A byte copy of a dandelion photo filed as daisy: conflicting labels.
    conflict: (String, String),
    /// Photos filed under the wrong class: (path, true class).
    flips: Vec<(String, &'static str)>,
}

/// train/ and val/ folders of real photos (16 + 4 per class), with planted duplicates, leakage and
/// label flips.
fn dataset(root: &Path) -> Planted {
    for class in CLASSES {
        let p = photos(class);
        for (k, photo) in p.iter().take(20).enumerate() {
            let side = if k < 16 { "train" } else { "val" };
            link(
                photo,
                &root.join(side).join(class).join(photo.file_name().unwrap()),
            );
        }
    }
    let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    let daisy = photos("daisy");
    std::fs::copy(&daisy[0], root.join("train/daisy/copy-of-first.jpg")).unwrap();
    let rose = photos("rose");
    reencode(&rose[0], &root.join("val/rose/resaved.jpg"), 0.9, 85);
    let dandelion = photos("dandelion");
    std::fs::copy(&dandelion[1], root.join("train/daisy/was-dandelion.jpg")).unwrap();
    let sunflower = photos("sunflower");
    // Flips of photos that show their class plainly (a close-up, a row of flowers): a wide field
    // with a path, which a head from 16 photos a class may well call a tulip field, would test
    // the photo, not the audit.
    let flips = vec![
        (sunflower[40].clone(), "tulip", "sunflower"),
        (sunflower[43].clone(), "tulip", "sunflower"),
        (rose[40].clone(), "daisy", "rose"),
    ];
    let mut flipped = Vec::new();
    for (photo, wrong, truth) in flips {
        let rel = format!("train/{wrong}/{}", name(&photo));
        link(&photo, &root.join(&rel));
        flipped.push((rel, truth));
    }
    Planted {
        exact: (
            format!("train/daisy/{}", name(&daisy[0])),
            "train/daisy/copy-of-first.jpg".into(),
        ),
        leak: (
            format!("train/rose/{}", name(&rose[0])),
            "val/rose/resaved.jpg".into(),
        ),
        conflict: (
            format!("train/dandelion/{}", name(&dandelion[1])),
            "train/daisy/was-dandelion.jpg".into(),
        ),
        flips: flipped,
    }
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// The cluster holding both paths, if any.
fn cluster_of<'a>(audit: &'a Value, a: &str, b: &str) -> Option<&'a Value> {
    audit["duplicates"].as_array().unwrap().iter().find(|d| {
        let paths: Vec<&str> = d["paths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        paths.contains(&a) && paths.contains(&b)
    })
}

#[test]
fn audit_finds_the_planted_problems_and_is_deterministic() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("flowers");
    let planted = dataset(&data);
    let cache = t.path().join("cache");
    let mut args = extract_args(&data, &cache, &[]);
    let at = args.iter().position(|a| a == "--views").unwrap();
    args[at + 1] = "3".into();
    ok(&args);

    let out = t.path().join("audit");
    let summary = ok(&[
        "audit",
        "--cache",
        &s(&cache),
        "--data",
        &s(&data),
        "--out",
        &s(&out),
        "--threads",
        "1",
    ]);
    let audit = read_json(&out.join("audit.json"));

    // Exact copy: one cluster, byte-identical, same side and class.
    let exact =
        cluster_of(&audit, &planted.exact.0, &planted.exact.1).expect("the byte copy is found");
    assert_eq!(exact["exact"], true);
    assert_eq!(exact["similarity"], 1.0);
    assert_eq!(exact["cross_split"], false);
    assert_eq!(exact["cross_class"], false);
    // The resized, re-encoded copy in val/ of a train/ photo: a near duplicate that leaks.
    let leak =
        cluster_of(&audit, &planted.leak.0, &planted.leak.1).expect("the re-encoded copy is found");
    assert_eq!(leak["exact"], false);
    assert_eq!(leak["cross_split"], true, "{leak}");
    assert!(leak["similarity"].as_f64().unwrap() >= headstart_audit::DEFAULT_DUP_THRESHOLD as f64);
    assert!(leak["similarity"].as_f64().unwrap() < 1.0);
    // The same bytes under two classes.
    let conflict = cluster_of(&audit, &planted.conflict.0, &planted.conflict.1)
        .expect("the relabelled copy is found");
    assert_eq!(conflict["cross_class"], true);
    assert_eq!(conflict["exact"], true);
    // Flagged clusters come first.
    let first = &audit["duplicates"][0];
    assert!(first["cross_split"] == true || first["cross_class"] == true);
    // No distinct photos are called duplicates: the planted clusters, and one pair that the
    // shared photos hold themselves — two shots of the same sunflower, seconds apart
    // (docs/audit.md), which land on both sides of the folder split.
    let same_flower = cluster_of(
        &audit,
        "train/sunflower/14741866338_bdc8bfc8d5_n.jpg",
        "val/sunflower/14925398301_55a180f919_n.jpg",
    )
    .expect("the two shots of one sunflower are found");
    assert_eq!(same_flower["cross_split"], true);
    assert_eq!(
        audit["duplicates"].as_array().unwrap().len(),
        4,
        "{}",
        audit["duplicates"]
    );

    // Every planted flip is a label issue near the top, with its true class suggested.
    let issues = audit["label_issues"].as_array().unwrap();
    let top: Vec<String> = issues
        .iter()
        .take(8)
        .map(|i| {
            format!(
                "{} {} → {} {}",
                i["path"], i["label"], i["suggested"], i["score"]
            )
        })
        .collect();
    for (path, truth) in &planted.flips {
        let at = issues.iter().position(|i| i["path"] == path.as_str());
        let at = at.unwrap_or_else(|| panic!("{path} not flagged; top: {top:?}"));
        assert!(at < 8, "{path} ranked {at}; top: {top:?}");
        assert_eq!(issues[at]["suggested"], *truth);
        assert!(issues[at]["score"].as_f64().unwrap() > 0.5);
    }
    // Most suspicious first.
    let scores: Vec<f64> = issues
        .iter()
        .map(|i| i["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    // Outliers are ranked too.
    let outliers: Vec<f64> = audit["outliers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["score"].as_f64().unwrap())
        .collect();
    assert!(outliers.windows(2).all(|w| w[0] >= w[1]));

    // The CSV has one row per finding, the page embeds thumbnails and nothing from the network.
    let csv = std::fs::read_to_string(out.join("audit.csv")).unwrap();
    let findings = audit["duplicates"].as_array().unwrap().len() + issues.len() + outliers.len();
    assert_eq!(csv.lines().count(), 1 + findings);
    assert!(csv.starts_with("kind,paths,labels,splits,score,suggestion\n"));
    assert!(csv.contains("duplicate-leaking,"));
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("data:image/jpeg;base64,"));
    assert!(!html.contains("http://") && !html.contains("https://"));
    // The summary names counts and the leak.
    assert!(
        summary.contains("duplicates: 4 clusters (2 byte-identical)"),
        "{summary}"
    );
    assert!(summary.contains("LEAKS"), "{summary}");

    // Determinism: another run, other threads, same bytes (the folder is replaced as a whole).
    let out2 = t.path().join("audit2");
    ok(&[
        "audit",
        "--cache",
        &s(&cache),
        "--data",
        &s(&data),
        "--out",
        &s(&out2),
        "--threads",
        "2",
        "--quiet",
    ]);
    for f in ["audit.json", "audit.csv", "report.html"] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(out2.join(f)).unwrap(),
            "{f} differs"
        );
    }
    // Rerunning into the same folder replaces it; --json prints the same document.
    let printed = ok(&[
        "audit",
        "--cache",
        &s(&cache),
        "--out",
        &s(&out2),
        "--json",
        "--data",
        &s(&data),
    ]);
    assert_eq!(
        printed.trim_end().as_bytes(),
        std::fs::read(out.join("audit.json")).unwrap().as_slice()
    );

    // neighbors: a cached photo finds itself first, at similarity 1; its byte copy next.
    let q = data.join(&planted.exact.0);
    let n: Value = serde_json::from_str(&ok(&[
        "neighbors",
        "--cache",
        &s(&cache),
        "--weights",
        &s(&common::lite0()),
        "--k",
        "3",
        "--json",
        &s(&q),
    ]))
    .unwrap();
    let nb = n[0]["neighbors"].as_array().unwrap();
    assert_eq!(nb.len(), 3);
    let top2: Vec<&str> = nb[..2]
        .iter()
        .map(|x| x["path"].as_str().unwrap())
        .collect();
    assert!(
        top2.contains(&planted.exact.0.as_str()) && top2.contains(&planted.exact.1.as_str()),
        "{top2:?}"
    );
    assert!(
        (nb[0]["similarity"].as_f64().unwrap() - 1.0).abs() < 1e-4,
        "{nb:?}"
    );
    assert_eq!(nb[0]["label"], "daisy");
    let grid = t.path().join("nb.png");
    ok(&[
        "neighbors",
        "--cache",
        &s(&cache),
        "--weights",
        &s(&common::lite0()),
        "--k",
        "4",
        "--data",
        &s(&data),
        "--grid",
        &s(&grid),
        &s(&q),
    ]);
    assert!(std::fs::read(&grid).unwrap().starts_with(b"\x89PNG"));

    // map: PNG and hover page, flagged images ringed.
    let png = t.path().join("map.png");
    let page = t.path().join("map.html");
    for method in ["pca", "tsne"] {
        ok(&[
            "map",
            "--cache",
            &s(&cache),
            "--out",
            &s(&png),
            "--html",
            &s(&page),
            "--audit",
            &s(&out),
            "--data",
            &s(&data),
            "--method",
            method,
            "--quiet",
        ]);
        assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
        let h = std::fs::read_to_string(&page).unwrap();
        assert_eq!(
            h.matches("<circle").count(),
            audit["summary"]["images"].as_u64().unwrap() as usize
        );
        assert!(h.contains("flagged by the audit") && h.contains("data:image/jpeg;base64,"));
    }
}

/// A synthetic cache: `per_class[c]` images of class `c` (noisy one-hot features).
fn synthetic(
    dir: &Path,
    classes: &[&str],
    per_class: &[usize],
    finish: bool,
) -> Option<CacheWriter> {
    const DIM: usize = 16;
    let settings = CacheSettings {
        max_pixels: headstart_cache::DEFAULT_MAX_PIXELS,
        weights_file: None,
        feature_dim: DIM,
        backbone: Architecture::ResNet18.config(),
        weights_sha256: "0".repeat(64),
        augment: AugmentConfig {
            views: 0,
            crop_size: 224,
            params: AugmentParams::default(),
            sampler: "test".into(),
        },
        seed: 1,
        dtype: FeatureDType::F32,
    };
    let names: Vec<String> = classes.iter().map(|s| s.to_string()).collect();
    let mut w = CacheWriter::open(dir, settings, names, 64, false).unwrap();
    let view = [ViewMeta {
        view: 0,
        crop: [0, 0, 1, 1],
        flip: false,
    }];
    let mut rng = headstart_core::rng::SplitMix64::new(7, 1);
    let mut i = 0usize;
    for (label, &n) in per_class.iter().enumerate() {
        for _ in 0..n {
            let feats: Vec<f32> = (0..DIM)
                .map(|k| if k == label { 1.0 } else { 0.0 } + rng.unit() as f32)
                .collect();
            let e = ImageEntry {
                path: format!("{}/{i:04}.jpg", classes[label]),
                path_bytes_hex: None,
                label,
                split: None,
                bytes: 1,
                sha256: format!("{i:064x}"),
                status: ImageStatus::Ok,
                reason: None,
            };
            w.add_image(e, &view, &feats).unwrap();
            i += 1;
        }
    }
    if finish {
        w.finish().unwrap();
        None
    } else {
        Some(w)
    }
}

#[test]
fn bad_caches_are_refused_or_noted_and_nothing_is_half_written() {
    let t = tempfile::tempdir().unwrap();
    let audit = |cache: &Path, out: &Path| {
        headstart(&["audit", "--cache", &s(cache), "--out", &s(out), "--quiet"])
    };

    // An empty cache: refused, no folder.
    let empty = t.path().join("empty");
    synthetic(&empty, &["a", "b"], &[0, 0], true);
    let out = t.path().join("out-empty");
    let r = audit(&empty, &out);
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("no usable image"), "{err}");
    assert!(!out.exists());
    let png = t.path().join("m.png");
    let r = headstart(&["map", "--cache", &s(&empty), "--out", &s(&png), "--quiet"]);
    assert_eq!(r.status.code(), Some(1));
    assert!(!png.exists());

    // One class: duplicates and outliers still, label issues skipped with a note.
    let one = t.path().join("one");
    synthetic(&one, &["only"], &[12], true);
    let out = t.path().join("out-one");
    let r = audit(&one, &out);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let a = read_json(&out.join("audit.json"));
    assert_eq!(a["label_issues"].as_array().unwrap().len(), 0);
    assert!(
        a["notes"][0].as_str().unwrap().contains("one class only"),
        "{a}"
    );

    // A class with one image: noted, and that image is an outlier (nothing to compare it with).
    let lone = t.path().join("lone");
    synthetic(&lone, &["a", "b", "c"], &[10, 10, 1], true);
    let out = t.path().join("out-lone");
    let r = audit(&lone, &out);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let a = read_json(&out.join("audit.json"));
    assert!(
        a["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("single image: c")),
        "{a}"
    );
    assert!(
        a["outliers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["path"] == "c/0020.jpg" && o["score"] == 1.0),
        "{a}"
    );

    // A cache being written: refused, naming the lock; no folder.
    let busy = t.path().join("busy");
    let writer = synthetic(&busy, &["a", "b"], &[5, 5], false);
    let out = t.path().join("out-busy");
    let r = audit(&busy, &out);
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("in use by another headstart process"), "{err}");
    assert!(!out.exists());
    drop(writer);

    // An output folder with other files is not replaced; bad flags are usage errors.
    let foreign = t.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), b"mine").unwrap();
    let r = audit(&one, &foreign);
    assert_eq!(r.status.code(), Some(2));
    assert_eq!(std::fs::read(foreign.join("notes.txt")).unwrap(), b"mine");
    let r = headstart(&[
        "audit",
        "--cache",
        &s(&one),
        "--out",
        &s(&t.path().join("x")),
        "--dup-threshold",
        "1.5",
    ]);
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("--dup-threshold"));
}
