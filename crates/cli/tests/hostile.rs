//! Caches, heads and data folders are untrusted input (issue 17): what a hostile or damaged one
//! can and cannot make headstart do, through the binary. Every case here broke a promise before:
//! a write outside the folder, a wrong label, a crash, a hang or unbounded memory.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{bin, extract_args, headstart, link_photos, lite0, ok, CLASSES};
use serde_json::Value;

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `cmd` with a deadline: a hang is a test failure, not a stuck suite.
fn within(mut cmd: Command, secs: u64) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("hung for {secs} s: {}", err(&out));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run(args: &[String]) -> Output {
    within(
        {
            let mut c = bin();
            c.args(args);
            c
        },
        120,
    )
}

/// Four photos of two classes, extracted (views 0) into `cache`.
fn small_cache(root: &Path) -> (PathBuf, PathBuf) {
    let data = root.join("data");
    link_photos(&data, &CLASSES[..2], 0..2);
    let cache = root.join("cache");
    ok(&extract_args(&data, &cache, &[]));
    (data, cache)
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn write_json(p: &Path, v: &Value) {
    std::fs::write(p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

#[test]
fn a_lock_file_planted_as_a_link_never_touches_its_target() {
    let d = tempfile::tempdir().unwrap();
    let (data, cache) = small_cache(d.path());
    let precious = d.path().join("precious.txt");
    std::fs::write(&precious, b"keep me").unwrap();
    // Writer: extract into the cache.
    std::fs::remove_file(cache.join(".headstart.lock")).unwrap();
    symlink(&precious, cache.join(".headstart.lock")).unwrap();
    let out = run(&extract_args(&data, &cache, &[]));
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert!(err(&out).contains("symbolic link"), "{}", err(&out));
    // Reader: train-head on the cache (with a lock link to a file that does not exist yet).
    let planted = d.path().join("planted");
    std::fs::remove_file(cache.join(".headstart.lock")).unwrap();
    symlink(&planted, cache.join(".headstart.lock")).unwrap();
    let head = d.path().join("head");
    let out = run(&[
        "train-head".into(),
        "--cache".into(),
        s(&cache),
        "--out".into(),
        s(&head),
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(!planted.exists(), "a reader created the link's target");
    // A head folder's lock.
    std::fs::remove_file(cache.join(".headstart.lock")).unwrap();
    std::fs::create_dir_all(&head).unwrap();
    let _ = std::fs::remove_file(head.join(".headstart.lock"));
    symlink(&precious, head.join(".headstart.lock")).unwrap();
    let out = run(&[
        "train-head".into(),
        "--cache".into(),
        s(&cache),
        "--out".into(),
        s(&head),
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(std::fs::read(&precious).unwrap(), b"keep me");
}

#[test]
fn links_inside_a_cache_are_not_followed_out_of_it() {
    let d = tempfile::tempdir().unwrap();
    let (data, cache) = small_cache(d.path());
    // A journal/ that is a link to a folder outside: no commit is written there.
    let outside = d.path().join("outside-journal");
    std::fs::rename(cache.join("journal"), &outside).unwrap();
    symlink(&outside, cache.join("journal")).unwrap();
    let before: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    // One more photo of a known class: a run that commits.
    let extra = common::shared("data/flowers/daisy");
    let mut photos: Vec<PathBuf> = std::fs::read_dir(&extra)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    photos.sort();
    symlink(
        &photos[5],
        data.join("daisy").join(photos[5].file_name().unwrap()),
    )
    .unwrap();
    let out = run(&extract_args(&data, &cache, &[]));
    assert!(out.status.success(), "{}", err(&out));
    let after: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        before.len(),
        after.len(),
        "commits written through the link: {}",
        err(&out)
    );
    // The link was replaced by a journal of the cache's own (rebuilt from its manifest).
    assert!(std::fs::symlink_metadata(cache.join("journal"))
        .unwrap()
        .is_dir());
    // A shard that is a link to a copy outside: refused as such, its target's hash never shown.
    let d2 = tempfile::tempdir().unwrap();
    let (_, cache2) = small_cache(d2.path());
    let shard = cache2.join("shard-00000.safetensors");
    let copy = d2.path().join("copy.safetensors");
    std::fs::rename(&shard, &copy).unwrap();
    symlink(&copy, &shard).unwrap();
    let out = run(&["cache".into(), "verify".into(), s(&cache2), "--json".into()]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false, "{v}");
    assert!(v.to_string().contains("symbolic link"), "{v}");
    assert!(!v.to_string().contains("sha256 is"), "{v}");
    let out = run(&[
        "train-head".into(),
        "--cache".into(),
        s(&cache2),
        "--out".into(),
        s(&d2.path().join("h")),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err(&out).contains("shard-00000.safetensors"),
        "{}",
        err(&out)
    );
}

#[test]
fn a_linked_part_folder_is_foreign_to_the_merge() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    link_photos(&data, &CLASSES[..2], 0..3);
    let cache = d.path().join("cache");
    for p in ["0/2", "1/2"] {
        ok(&extract_args(&data, &cache, &["--part", p]));
    }
    let part1 = cache.join("parts/0001-of-0002");
    let elsewhere = d.path().join("elsewhere");
    std::fs::rename(&part1, &elsewhere).unwrap();
    symlink(&elsewhere, &part1).unwrap();
    let out = run(&["cache".into(), "merge".into(), s(&cache)]);
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert!(err(&out).contains("0001-of-0002"), "{}", err(&out));
    // Another decode limit in one part: refused, as every other setting is.
    std::fs::remove_file(&part1).unwrap();
    let out = run(&extract_args(
        &data,
        &cache,
        &["--part", "1/2", "--max-megapixels", "50"],
    ));
    assert_eq!(out.status.code(), Some(1));
    assert!(err(&out).contains("max megapixels"), "{}", err(&out));
}

#[test]
fn the_cache_is_never_a_class_folder_or_the_data_folder() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    link_photos(&data, &CLASSES[..3], 0..2);
    for cache in [data.join("daisy"), data.clone()] {
        let out = run(&extract_args(&data, &cache, &[]));
        assert_ne!(out.status.code(), Some(0), "{}", err(&out));
        assert!(err(&out).contains("output folder"), "{}", err(&out));
    }
    // Nothing was written into the class folder.
    assert!(!data.join("daisy/manifest.json").exists());
    assert!(!data.join("daisy/journal").exists());
}

#[test]
fn a_link_into_another_class_is_not_followed() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    link_photos(&data, &CLASSES[..2], 0..2);
    symlink("../dandelion", data.join("daisy/more")).unwrap();
    let cache = d.path().join("cache");
    let out = run(&extract_args(&data, &cache, &[]));
    assert!(out.status.success(), "{}", err(&out));
    assert!(err(&out).contains("not followed"), "{}", err(&out));
    let m = read_json(&cache.join("manifest.json"));
    let daisies = m["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["label"] == 0)
        .count();
    assert_eq!(daisies, 2, "{m}");
}

#[test]
fn lying_manifests_and_partition_records_are_refused_cleanly() {
    let d = tempfile::tempdir().unwrap();
    let (_, cache) = small_cache(d.path());
    let manifest = cache.join("manifest.json");
    let good = read_json(&manifest);
    for (key, value, words) in [
        ("views", Value::from(4294967295u64), "augmented views"),
        ("feature_dim", Value::from(1u64 << 62), "feature width"),
    ] {
        let mut m = good.clone();
        if key == "views" {
            m["augment"]["views"] = value;
        } else {
            m["feature_dim"] = value;
        }
        write_json(&manifest, &m);
        // The journal says otherwise: readers read the manifest of a finished cache.
        for args in [
            vec!["cache".to_string(), "verify".into(), s(&cache)],
            vec!["cache".into(), "info".into(), s(&cache)],
            vec![
                "train-head".into(),
                "--cache".into(),
                s(&cache),
                "--out".into(),
                s(&d.path().join("h")),
            ],
        ] {
            let out = run(&args);
            assert_ne!(out.status.code(), Some(0), "{args:?}");
            assert!(!err(&out).contains("panicked"), "{args:?}: {}", err(&out));
            let all = format!("{}{}", err(&out), String::from_utf8_lossy(&out.stdout));
            assert!(all.contains(words), "{args:?}: {all}");
        }
    }
    write_json(&manifest, &good);
    // A partition record with an absurd part count.
    let pd = tempfile::tempdir().unwrap();
    let data = pd.path().join("data");
    link_photos(&data, &CLASSES[..2], 0..2);
    let pcache = pd.path().join("cache");
    ok(&extract_args(&data, &pcache, &["--part", "0/2"]));
    let rec = pcache.join("partition.json");
    let mut r = read_json(&rec);
    for parts in [
        Value::from(u64::MAX),
        Value::from(1_000_000_000_000u64),
        Value::from(100_000_000u64),
    ] {
        r["parts"] = parts;
        write_json(&rec, &r);
        let out = run(&["cache".into(), "info".into(), s(&pcache)]);
        assert_eq!(out.status.code(), Some(1), "{}", err(&out));
        assert!(err(&out).contains("at most 100000"), "{}", err(&out));
        assert!(out.stdout.len() < 10_000);
    }
    let out = headstart(&[
        "extract",
        "x",
        "--cache",
        "y",
        "--part",
        "0/18446744073709551615",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", err(&out));
}

#[test]
fn fifos_devices_and_torn_commits_never_hang_or_block() {
    let d = tempfile::tempdir().unwrap();
    let (data, cache) = small_cache(d.path());
    let shard = cache.join("shard-00000.safetensors");
    let kept = d.path().join("kept.safetensors");
    std::fs::rename(&shard, &kept).unwrap();
    mkfifo(&shard);
    for args in [
        vec!["cache".to_string(), "verify".into(), s(&cache)],
        vec![
            "train-head".into(),
            "--cache".into(),
            s(&cache),
            "--out".into(),
            s(&d.path().join("h")),
        ],
    ] {
        let out = run(&args);
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        assert!(
            format!("{}{}", err(&out), String::from_utf8_lossy(&out.stdout)).contains("FIFO"),
            "{args:?}: {}",
            err(&out)
        );
    }
    // extract: the FIFO shard is damage, recomputed.
    let out = run(&extract_args(&data, &cache, &[]));
    assert!(out.status.success(), "{}", err(&out));
    // A shard linked to /dev/zero is refused, not read until memory runs out.
    std::fs::remove_file(&shard).unwrap();
    symlink("/dev/zero", &shard).unwrap();
    let out = run(&["cache".into(), "verify".into(), s(&cache)]);
    assert_ne!(out.status.code(), Some(0));
    std::fs::remove_file(&shard).unwrap();
    std::fs::copy(&kept, &shard).unwrap();
    // A FIFO as a journal commit: extract does not hang (the commit is damage).
    let mut commits: Vec<PathBuf> = std::fs::read_dir(cache.join("journal"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    commits.sort();
    let commit = commits.last().unwrap().clone();
    std::fs::remove_file(&commit).unwrap();
    mkfifo(&commit);
    let out = run(&extract_args(&data, &cache, &[]));
    assert!(!err(&out).contains("panicked"), "{}", err(&out));
    let _ = std::fs::remove_file(&commit);
}

#[test]
fn a_torn_last_commit_is_repaired_not_a_reason_to_start_over() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    link_photos(&data, &CLASSES[..2], 0..4);
    let cache = d.path().join("cache");
    // Shards of 2 rows: several commits.
    let mut args = extract_args(&data, &cache, &[]);
    let at = args.iter().position(|a| a == "--shard-size").unwrap();
    args[at + 1] = "2".into();
    ok(&args);
    let commits: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = std::fs::read_dir(cache.join("journal"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        v.sort();
        v
    };
    assert!(commits.len() >= 3, "{commits:?}");
    // The manifest is intact and the last commit is empty: the journal is rebuilt from it.
    std::fs::write(commits.last().unwrap(), b"").unwrap();
    let out = run(&args);
    assert!(out.status.success(), "{}", err(&out));
    assert!(err(&out).contains("rebuilt"), "{}", err(&out));
    let v: Value = serde_json::from_str(&ok(&["cache", "info", &s(&cache), "--json"])).unwrap();
    assert_eq!(v["images_ok"], 8, "{v}");
    // An interrupted run (no manifest) whose last commit is torn: the commit is dropped and its
    // shard computed again; every other shard is kept.
    std::fs::remove_file(cache.join("manifest.json")).unwrap();
    let commits: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = std::fs::read_dir(cache.join("journal"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        v.sort();
        v
    };
    if commits.len() >= 2 {
        std::fs::write(commits.last().unwrap(), b"{\"comm").unwrap();
    }
    let out = run(&args);
    assert!(out.status.success(), "{}", err(&out));
    let v: Value = serde_json::from_str(&ok(&["cache", "info", &s(&cache), "--json"])).unwrap();
    assert_eq!(v["images_ok"], 8, "{v}");
}

#[test]
fn hostile_transformer_configs_are_refused_before_anything_is_built() {
    let d = tempfile::tempdir().unwrap();
    let fixture = common::shared("fixtures/dinov2");
    let dir = d.path().join("w");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixture.join("model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    let base = read_json(&fixture.join("config.json"));
    for (edit, words) in [
        (
            serde_json::json!({"layer_norm_eps": -1.0}),
            "layer_norm_eps",
        ),
        (
            serde_json::json!({"patch_size": 300, "image_size": 600}),
            "smaller than one 300×300 patch",
        ),
        (serde_json::json!({"image_size": 14u64 << 32}), "image_size"),
        (
            serde_json::json!({"patch_size": 1, "image_size": 518}),
            "attention",
        ),
    ] {
        let mut c = base.clone();
        for (k, v) in edit.as_object().unwrap() {
            c[k] = v.clone();
        }
        write_json(&dir.join("config.json"), &c);
        let out = run(&[
            "weights".into(),
            "--backbone".into(),
            "dinov2-small".into(),
            "--weights".into(),
            s(&dir.join("model.safetensors")),
        ]);
        assert_eq!(out.status.code(), Some(1), "{edit}: {}", err(&out));
        assert!(!err(&out).contains("panicked"), "{edit}: {}", err(&out));
        assert!(err(&out).contains(words), "{edit}: {}", err(&out));
        assert!(
            err(&out).contains("dinov2-small"),
            "names the model: {}",
            err(&out)
        );
    }
    std::fs::write(dir.join("config.json"), b"{not json").unwrap();
    let out = run(&[
        "weights".into(),
        "--backbone".into(),
        "dinov2-small".into(),
        "--weights".into(),
        s(&dir.join("model.safetensors")),
    ]);
    assert!(
        err(&out).contains("sizes the dinov2-small model"),
        "{}",
        err(&out)
    );
    assert!(
        !err(&out).contains("not a readable weights file"),
        "{}",
        err(&out)
    );
}

#[test]
fn too_many_threads_is_capped_or_refused_never_a_panic() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    link_photos(&data, &CLASSES[..2], 0..2);
    // A transformer's forward pass uses candle's own thread pool too: 500 threads of each under a
    // 2 GB address-space limit once panicked in it.
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!(
            "ulimit -v 2000000; exec '{}' extract '{}' --cache '{}' --backbone dinov2-small --weights '{}' --views 0 --threads 500",
            env!("CARGO_BIN_EXE_headstart"),
            data.display(),
            d.path().join("cache").display(),
            common::shared("fixtures/dinov2/model.safetensors").display()
        ))
        .env("HF_HUB_OFFLINE", "1");
    let out = within(c, 120);
    assert!(!err(&out).contains("panicked"), "{}", err(&out));
    assert!(matches!(out.status.code(), Some(0..=2)), "{}", err(&out));
}

#[test]
fn eval_says_when_it_scores_training_images_and_refuses_a_missing_test_split() {
    let d = tempfile::tempdir().unwrap();
    let (data, cache) = small_cache(d.path());
    let head = d.path().join("head");
    ok(&[
        "train-head",
        "--cache",
        &s(&cache),
        "--out",
        &s(&head),
        "--solver",
        "lbfgs",
        "--l2",
        "1e-3",
    ]);
    let w = s(&lite0());
    let out = run(&[
        "eval".into(),
        "--head".into(),
        s(&head),
        "--weights".into(),
        w.clone(),
        s(&data),
        "--split".into(),
        "test".into(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert!(err(&out).contains("no test split"), "{}", err(&out));
    let out = run(&[
        "eval".into(),
        "--head".into(),
        s(&head),
        "--weights".into(),
        w.clone(),
        s(&data),
    ]);
    assert!(out.status.success(), "{}", err(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("were in the head's training split"), "{text}");
    let out = run(&[
        "eval".into(),
        "--head".into(),
        s(&head),
        "--weights".into(),
        w,
        s(&data),
        "--json".into(),
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["in_training"].as_array().unwrap().len() >= 2, "{v}");
}

#[test]
fn class_names_cannot_forge_output_lines() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    link_photos(&data, &CLASSES[..2], 0..2);
    let evil = "tulip\u{1b}[2J\nfake 1.000";
    std::fs::rename(data.join("dandelion"), data.join(evil)).unwrap();
    let cache = d.path().join("cache");
    ok(&extract_args(&data, &cache, &[]));
    let head = d.path().join("head");
    let out = run(&[
        "train-head".into(),
        "--cache".into(),
        s(&cache),
        "--out".into(),
        s(&head),
    ]);
    assert!(out.status.success(), "{}", err(&out));
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), err(&out));
    assert!(!all.contains('\u{1b}'), "{all}");
    let report = std::fs::read_to_string(head.join("report.txt")).unwrap();
    assert!(
        !report.contains('\u{1b}') && !report.contains("\nfake"),
        "{report}"
    );
    let out = run(&[
        "predict".into(),
        "--head".into(),
        s(&head),
        "--weights".into(),
        s(&lite0()),
        s(&data),
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(!table.contains('\u{1b}'), "{table}");
    assert!(!table.lines().any(|l| l.starts_with("fake")), "{table}");
    // JSON keeps the exact name.
    let out = run(&[
        "predict".into(),
        "--head".into(),
        s(&head),
        "--weights".into(),
        s(&lite0()),
        "--format".into(),
        "json".into(),
        s(&data),
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\\u001b[2J"));
}

#[test]
fn a_merge_with_shards_smaller_than_an_image_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    link_photos(&data, &CLASSES[..2], 0..2);
    let cache = d.path().join("cache");
    for p in ["0/2", "1/2"] {
        ok(&extract_args(&data, &cache, &["--part", p]));
    }
    let out = run(&[
        "cache".into(),
        "merge".into(),
        s(&cache),
        "--shard-size".into(),
        "1".into(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert!(
        err(&out).contains("cannot hold the 2 rows of one image"),
        "{}",
        err(&out)
    );
}
