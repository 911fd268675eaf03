//! A cache is untrusted input (issue 17), at the library level: shards rewritten while they are
//! read, non-finite features, rows that are not where the layout puts them.

use std::path::Path;

use headstart_cache::rows::{load_rows, Selection, SideRows, ViewSelection};
use headstart_cache::*;
use headstart_core::config::{Architecture, AugmentParams};

fn settings(views: u32) -> CacheSettings {
    CacheSettings {
        max_pixels: DEFAULT_MAX_PIXELS,
        weights_file: None,
        feature_dim: 4,
        backbone: Architecture::ResNet18.config(),
        weights_sha256: "ab".repeat(32),
        augment: AugmentConfig {
            views,
            crop_size: 224,
            params: AugmentParams::default(),
            sampler: "test".into(),
        },
        seed: 1,
        dtype: FeatureDType::F32,
    }
}

/// `n` images of two classes, `views` augmented views each, features from `f(image, view)`.
fn write(dir: &Path, n: usize, views: u32, f: impl Fn(usize, usize) -> f32) {
    let mut w =
        CacheWriter::open(dir, settings(views), vec!["a".into(), "b".into()], 6, false).unwrap();
    for i in 0..n {
        let e = ImageEntry {
            path: format!("{}/{i}.jpg", ["a", "b"][i % 2]),
            path_bytes_hex: None,
            label: i % 2,
            split: None,
            bytes: 1,
            sha256: format!("{i:064x}"),
            status: ImageStatus::Ok,
            reason: None,
        };
        let metas: Vec<ViewMeta> = (0..=views)
            .map(|v| ViewMeta {
                view: v,
                crop: [0, 0, 1, 1],
                flip: false,
            })
            .collect();
        let mut feats = Vec::new();
        for v in 0..=views as usize {
            feats.extend((0..4).map(|k| f(i, v) + k as f32));
        }
        w.add_image(e, &metas, &feats).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn a_shard_rewritten_while_rows_stream_from_it_is_refused() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), 6, 0, |i, _| i as f32);
    let cache = CacheIndex::open(d.path()).unwrap();
    let all: Vec<usize> = (0..6).collect();
    // A budget of 0: the rows stay on disk and are read one by one.
    let rows = load_rows(
        &cache,
        &Selection {
            train: &all,
            val: &[],
            views: ViewSelection::All,
            with_images: false,
        },
        0,
    )
    .unwrap();
    let SideRows::Disk(train) = rows.train else {
        panic!("expected rows left on disk");
    };
    let mut out = Vec::new();
    train.gather(&[0, 1], &mut out).unwrap();
    // The same bytes but one, written in place: same size, same name, another file version.
    let shard = d.path().join(&cache.shards()[0].file);
    let mut bytes = std::fs::read(&shard).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&shard, &bytes).unwrap();
    let err = train.gather(&[2], &mut out).unwrap_err().to_string();
    assert!(
        err.contains("changed after its checksum was verified"),
        "{err}"
    );
    assert!(err.contains(&cache.shards()[0].file), "{err}");
}

#[test]
fn non_finite_features_are_a_damaged_shard() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), 4, 0, |i, _| if i == 2 { f32::NAN } else { 1.0 });
    let problems = FeatureCache::open(d.path()).unwrap().verify();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].check, "values");
    assert!(problems[0].message.contains("non-finite"), "{problems:?}");
}

#[test]
fn verify_finds_rows_that_are_not_one_per_view_of_each_image() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), 4, 1, |i, v| (i * 10 + v) as f32);
    assert!(FeatureCache::open(d.path()).unwrap().verify().is_empty());
    // The manifest claims no augmented views: every image now has one row too many.
    let path = Manifest::path_in(d.path());
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    m["augment"]["views"] = 0.into();
    std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
    let problems = FeatureCache::open(d.path()).unwrap().verify();
    assert_eq!(problems.len(), 4, "{problems:?}");
    assert!(
        problems
            .iter()
            .all(|p| p.check == "index" && p.message.contains("not one for each")),
        "{problems:?}"
    );
}
