//! Writer → reader round trips, resume, settings checks and corruption detection.

use std::collections::HashMap;
use std::path::Path;

use headstart_cache::*;
use headstart_core::config::{Architecture, AugmentParams, Interpolation};
use headstart_testkit::snapshot;

fn settings(seed: u64, dtype: FeatureDType) -> CacheSettings {
    let backbone = Architecture::ResNet18.config();
    CacheSettings {
        max_pixels: headstart_cache::DEFAULT_MAX_PIXELS,
        weights_file: None,
        feature_dim: 4,
        backbone,
        weights_sha256: "ab".repeat(32),
        augment: AugmentConfig {
            views: 2,
            crop_size: 224,
            params: AugmentParams {
                scale: [0.08, 1.0],
                ratio: [0.75, 4.0 / 3.0],
                hflip_p: 0.5,
                interpolation: Interpolation::Bilinear,
            },
            sampler: "test".into(),
        },
        seed,
        dtype,
    }
}

fn entry(i: usize) -> ImageEntry {
    ImageEntry {
        path: format!("c{}/img{i:03}.jpg", i % 2),
        path_bytes_hex: None,
        label: i % 2,
        split: None,
        bytes: 100 + i as u64,
        sha256: format!("{i:064x}"),
        status: ImageStatus::Ok,
        reason: None,
    }
}

fn views() -> Vec<ViewMeta> {
    (0..3)
        .map(|v| ViewMeta {
            view: v,
            crop: [0, 0, 10, 10],
            flip: v == 2,
        })
        .collect()
}

fn feats(i: usize) -> Vec<f32> {
    (0..12).map(|k| (i * 100 + k) as f32 * 0.5).collect()
}

fn write(dir: &Path, n: usize, stop_after: Option<usize>) {
    let classes = vec!["a".to_string(), "b".to_string()];
    let mut w = CacheWriter::open(dir, settings(1, FeatureDType::F32), classes, 7, false).unwrap();
    for i in 0..n {
        let e = entry(i);
        if w.lookup(&e.path, &e.sha256) == Lookup::Cached {
            continue;
        }
        if Some(i) == stop_after {
            return; // simulate a kill: drop without finish
        }
        if i == 3 {
            w.add_skipped(e, "corrupt".into()).unwrap();
        } else {
            w.add_image(e, &views(), &feats(i)).unwrap();
        }
    }
    w.finish().unwrap();
}

#[test]
fn rows_round_trip_and_shards_hold_whole_images() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), 10, None);
    let c = FeatureCache::open(d.path()).unwrap();
    // 9 ok images × 3 views = 27 rows; shard size 7 → 2 images (6 rows) per shard.
    assert_eq!(c.manifest.rows, 27);
    assert!(c.manifest.shards.iter().all(|s| s.rows == 6 || s.rows == 3));
    assert_eq!(c.manifest.images[3].status, ImageStatus::Skipped);
    let rows = c.load().unwrap();
    assert_eq!(rows.len(), 27);
    assert_eq!(rows.row(0), &feats(0)[..4]);
    assert_eq!(rows.view[..3], [0, 1, 2]);
    assert!(c.verify().is_empty());
}

#[test]
fn killed_run_resumes_to_identical_bytes() {
    let a = tempfile::tempdir().unwrap();
    write(a.path(), 10, None);
    for stop in [0, 1, 2, 5, 9] {
        let b = tempfile::tempdir().unwrap();
        write(b.path(), 10, Some(stop));
        write(b.path(), 10, None);
        assert_eq!(snapshot(a.path()), snapshot(b.path()), "stopped at {stop}");
    }
}

#[test]
fn different_settings_are_refused_with_the_difference_named() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), 4, None);
    let classes = vec!["a".to_string(), "b".to_string()];
    let err = CacheWriter::open(
        d.path(),
        settings(2, FeatureDType::F16),
        classes.clone(),
        7,
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("seed: cache has 1, this run has 2"), "{err}");
    assert!(
        err.contains("dtype: cache has f32, this run has f16"),
        "{err}"
    );
    // The `--force` fix is the binary's to add (crates/cli/src/hints.rs); forcing discards it:
    let w = CacheWriter::open(d.path(), settings(2, FeatureDType::F16), classes, 7, true).unwrap();
    assert!(w.manifest().images.is_empty());
}

#[test]
fn corrupt_and_truncated_shards_are_named() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), 10, None);
    let s0 = d.path().join("shard-00000.safetensors");
    let mut bytes = std::fs::read(&s0).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0x40;
    std::fs::write(&s0, &bytes).unwrap();
    let s1 = d.path().join("shard-00001.safetensors");
    let b1 = std::fs::read(&s1).unwrap();
    std::fs::write(&s1, &b1[..b1.len() / 2]).unwrap();
    let c = FeatureCache::open(d.path()).unwrap();
    let problems = c.verify();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(problems[0].file, "shard-00000.safetensors");
    assert_eq!(problems[0].check, "sha256");
    assert_eq!(problems[1].file, "shard-00001.safetensors");
    let err = c.load().unwrap_err().to_string();
    assert!(
        err.contains("shard-00000.safetensors") && err.contains("checksum"),
        "{err}"
    );
}

#[test]
fn removed_and_changed_files_go_stale_and_their_rows_are_dropped() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), 6, None);
    let classes = vec!["a".to_string(), "b".to_string()];
    let mut w =
        CacheWriter::open(d.path(), settings(1, FeatureDType::F32), classes, 7, false).unwrap();
    let mut present: HashMap<String, String> =
        (0..6).map(|i| (entry(i).path, entry(i).sha256)).collect();
    present.remove(&entry(0).path);
    present.insert(entry(1).path, "ff".repeat(32));
    assert_eq!(w.mark_stale(&present), 2);
    let mut changed = entry(1);
    changed.sha256 = "ff".repeat(32);
    assert_eq!(w.lookup(&changed.path, &changed.sha256), Lookup::New);
    w.add_image(changed, &views(), &feats(42)).unwrap();
    let m = w.finish().unwrap();
    assert_eq!(m.images.len(), 7);
    let rows = FeatureCache::open(d.path()).unwrap().load().unwrap();
    // 6 images − 1 skipped − 2 stale + 1 re-added = 4 images × 3 views.
    assert_eq!(rows.len(), 12);
    assert_eq!(rows.row(rows.len() - 3), &feats(42)[..4]);
}

#[test]
fn manifest_parser_rejects_garbage_without_panicking() {
    for bad in [
        &b""[..],
        b"{}",
        b"[1,2]",
        b"{\"format\": 3}",
        b"\xff\xfe",
        b"{\"format\":\"headstart-feature-cache\"",
    ] {
        assert!(Manifest::parse(bad).is_err());
    }
    let d = tempfile::tempdir().unwrap();
    write(d.path(), 4, None);
    let good = std::fs::read(d.path().join("manifest.json")).unwrap();
    for cut in (0..good.len()).step_by(37) {
        assert!(Manifest::parse(&good[..cut]).is_err());
    }
    let s = String::from_utf8(good)
        .unwrap()
        .replace("\"rows\": 9", "\"rows\": 10");
    assert!(Manifest::parse(s.as_bytes())
        .unwrap_err()
        .to_string()
        .contains("rows"));
}

#[test]
fn a_damaged_shard_is_recomputed_by_the_next_run() {
    let a = tempfile::tempdir().unwrap();
    write(a.path(), 10, None);
    let want = snapshot(a.path());
    let b = tempfile::tempdir().unwrap();
    write(b.path(), 10, None);
    let s1 = b.path().join("shard-00001.safetensors");
    let mut bytes = std::fs::read(&s1).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&s1, &bytes).unwrap();
    assert!(!FeatureCache::open(b.path()).unwrap().verify().is_empty());
    write(b.path(), 10, None);
    let got = snapshot(b.path());
    for ((na, a), (nb, b)) in want.iter().zip(&got) {
        assert_eq!(na, nb);
        assert!(
            a == b,
            "{na} differs:\n{}\n---\n{}",
            String::from_utf8_lossy(a),
            String::from_utf8_lossy(b)
        );
    }
    assert_eq!(want.len(), got.len());
}
