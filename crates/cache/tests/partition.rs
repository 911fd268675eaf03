//! Partitioned caches through the library: parts written independently merge into the cache a
//! single run writes (byte for byte); every bad combination is refused by name.

use std::path::Path;

use headstart_cache::partition::{open_part, parts_status};
use headstart_cache::*;
use headstart_core::config::{Architecture, AugmentParams};
use headstart_testkit::cache_files;

fn settings(views: u32) -> CacheSettings {
    CacheSettings {
        max_pixels: headstart_cache::DEFAULT_MAX_PIXELS,
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
        dtype: FeatureDType::F16,
    }
}

fn classes() -> Vec<String> {
    vec!["a".into(), "b".into(), "c".into()]
}

fn path(i: usize) -> String {
    format!("{}/img{i:03}.jpg", ["a", "b", "c"][i % 3])
}

/// The dataset in single-run order (sorted by path), as an extract would see it.
fn dataset(n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    v.sort_by_key(|&i| path(i));
    v
}

fn entry(i: usize) -> ImageEntry {
    ImageEntry {
        path: path(i),
        path_bytes_hex: None,
        label: i % 3,
        split: None,
        bytes: 100 + i as u64,
        sha256: format!("{i:064x}"),
        status: ImageStatus::Ok,
        reason: None,
    }
}

fn views(k: u32) -> Vec<ViewMeta> {
    (0..=k)
        .map(|v| ViewMeta {
            view: v,
            crop: [v as i64, 0, 10, 10],
            flip: v % 2 == 1,
        })
        .collect()
}

/// Writes the images of `part` (all when None) into `dir` the way extract does; stops without
/// finishing (a kill) after `stop_after` images when given.
fn write(dir: &Path, n: usize, part: Option<Part>, k: u32, stop_after: Option<usize>) {
    let target = match part {
        Some(p) => open_part(dir, p, &settings(k), &classes(), 5).unwrap(),
        None => dir.to_path_buf(),
    };
    let mut w = CacheWriter::open(&target, settings(k), classes(), 5, false).unwrap();
    let mut done = 0;
    for i in dataset(n) {
        if part.is_some_and(|p| !p.contains(path(i).as_bytes())) {
            continue;
        }
        if w.lookup(&path(i), &entry(i).sha256) == Lookup::Cached {
            continue;
        }
        if Some(done) == stop_after {
            return;
        }
        done += 1;
        if i % 7 == 3 {
            w.add_skipped(entry(i), "corrupt".into()).unwrap();
        } else {
            let f: Vec<f32> = (0..(k as usize + 1) * 4)
                .map(|x| (i * 10 + x) as f32 / 8.0)
                .collect();
            w.add_image(entry(i), &views(k), &f).unwrap();
        }
    }
    w.finish().unwrap();
}

fn merge_quiet(dir: &Path) -> Result<MergeReport> {
    merge(
        dir,
        &MergeOptions::default(),
        &headstart_core::progress::NoProgress,
    )
}

#[test]
fn parts_merge_into_the_single_run_cache_byte_for_byte() {
    let single = tempfile::tempdir().unwrap();
    write(single.path(), 40, None, 2, None);
    let parted = tempfile::tempdir().unwrap();
    for i in [2, 0, 1] {
        write(parted.path(), 40, Some(Part::new(i, 3).unwrap()), 2, None);
    }
    // Not merged yet: readers say what to run.
    let err = FeatureCache::open(parted.path()).unwrap_err().to_string();
    // In the library's terms (the binary adds the command lines: crates/cli/tests/scale_out.rs).
    assert!(
        err.contains("3 of 3 finished") && err.contains("merge them"),
        "{err}"
    );
    let r = merge_quiet(parted.path()).unwrap();
    assert_eq!(r.parts, 3);
    assert_eq!(r.images_skipped, 40 / 7 + 1);
    let want = cache_files(single.path());
    assert!(want.len() > 3);
    assert_eq!(cache_files(parted.path()), want);
    // Idempotent: a second merge writes the same bytes; after --remove-parts (killed while
    // deleting), a merge finishes the removal and reports the cache as merged.
    merge_quiet(parted.path()).unwrap();
    assert_eq!(cache_files(parted.path()), want);
    let removing = parted.path().join(".parts-removing");
    std::fs::rename(parted.path().join("parts"), &removing).unwrap();
    let again = merge_quiet(parted.path()).unwrap();
    assert!(again.removed_parts && again.rows == r.rows && again.bytes_written == 0);
    assert!(!removing.exists());
    assert_eq!(cache_files(parted.path()), want);
    // Readers take it like any cache.
    let c = FeatureCache::open(parted.path()).unwrap();
    assert!(c.verify().is_empty());
    assert_eq!(c.load().unwrap().len(), r.rows);
}

#[test]
fn a_merge_killed_half_way_reruns_to_the_same_bytes() {
    let d = tempfile::tempdir().unwrap();
    for i in 0..3 {
        write(d.path(), 30, Some(Part::new(i, 3).unwrap()), 1, None);
    }
    merge_quiet(d.path()).unwrap();
    let want = cache_files(d.path());
    // What a kill -9 mid-merge leaves: no manifest (it goes first), some shards written, one
    // half-written temp file, and a shard left over from an older, larger merge.
    std::fs::remove_file(d.path().join("manifest.json")).unwrap();
    std::fs::write(d.path().join("shard-00001.safetensors"), b"half").unwrap();
    std::fs::write(d.path().join(".shard-00002.safetensors.tmp-99"), b"x").unwrap();
    std::fs::write(d.path().join("shard-00099.safetensors"), b"old").unwrap();
    assert!(FeatureCache::open(d.path())
        .unwrap_err()
        .to_string()
        .contains("not merged yet"));
    merge_quiet(d.path()).unwrap();
    assert_eq!(cache_files(d.path()), want);
    assert!(!d.path().join(".shard-00002.safetensors.tmp-99").exists());
}

#[test]
fn missing_and_killed_parts_are_named_and_lose_nothing() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), 30, Some(Part::new(0, 4).unwrap()), 1, None);
    // Part 2 is killed after 4 images (a shard or two committed, no manifest).
    write(d.path(), 30, Some(Part::new(2, 4).unwrap()), 1, Some(4));
    let err = merge_quiet(d.path()).unwrap_err().to_string();
    assert!(err.contains("unfinished or still running: part 2"), "{err}");
    assert!(err.contains("never started: part 1, 3"), "{err}");
    assert!(err.contains("extract part 2, 1, 3"), "{err}");
    let s = parts_status(d.path()).unwrap().unwrap();
    assert_eq!(
        (s.finished, s.unfinished, s.missing),
        (vec![0], vec![2], vec![1, 3])
    );
    // The killed part resumes; the others run; the merge equals a single run.
    for i in 1..4 {
        write(d.path(), 30, Some(Part::new(i, 4).unwrap()), 1, None);
    }
    merge_quiet(d.path()).unwrap();
    let single = tempfile::tempdir().unwrap();
    write(single.path(), 30, None, 1, None);
    assert_eq!(cache_files(d.path()), cache_files(single.path()));
}

#[test]
fn conflicting_parts_are_refused_by_name() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), 12, Some(Part::new(0, 3).unwrap()), 1, None);
    // Another N: the parts would overlap.
    let err = open_part(
        d.path(),
        Part::new(1, 2).unwrap(),
        &settings(1),
        &classes(),
        5,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("partitioned into 3 parts") && err.contains("parts I/3"),
        "{err}"
    );
    // Other settings than the first part's.
    let err = open_part(
        d.path(),
        Part::new(1, 3).unwrap(),
        &settings(2),
        &classes(),
        5,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("partition.json") && err.contains("views: cache has 1, this run has 2"),
        "{err}"
    );
    // The same part twice at once: the second writer is locked out, naming the first.
    let dir = open_part(
        d.path(),
        Part::new(1, 3).unwrap(),
        &settings(1),
        &classes(),
        5,
    )
    .unwrap();
    let first = CacheWriter::open(&dir, settings(1), classes(), 5, false).unwrap();
    let err = CacheWriter::open(&dir, settings(1), classes(), 5, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("in use by another headstart process"), "{err}");
    // A merge while a part is writing is refused, naming the writer.
    let err = merge_quiet(d.path()).unwrap_err().to_string();
    assert!(
        err.contains("0001-of-0003") && err.contains("in use"),
        "{err}"
    );
    drop(first);
    // A whole-dataset run into a partitioned cache, and a part into a single-run cache.
    let err = CacheWriter::open(d.path(), settings(1), classes(), 5, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("partitioned into 3 parts") && err.contains("parts I/3"),
        "{err}"
    );
    let single = tempfile::tempdir().unwrap();
    write(single.path(), 6, None, 1, None);
    let err = open_part(
        single.path(),
        Part::new(0, 2).unwrap(),
        &settings(1),
        &classes(),
        5,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("single (unpartitioned) run"), "{err}");
    // Merging what is not partitioned says so.
    assert!(merge_quiet(single.path())
        .unwrap_err()
        .to_string()
        .contains("nothing to merge"));
}

#[test]
fn a_part_with_other_settings_written_by_hand_is_refused_at_merge() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), 12, Some(Part::new(0, 2).unwrap()), 1, None);
    // Part 1 written around open_part's check, with 2 views.
    let dir = Part::new(1, 2).unwrap().dir(d.path());
    let mut w = CacheWriter::open(&dir, settings(2), classes(), 5, false).unwrap();
    w.add_image(entry(1), &views(2), &[0.0; 12]).unwrap();
    w.finish().unwrap();
    let err = merge_quiet(d.path()).unwrap_err().to_string();
    assert!(
        err.contains("0001-of-0002") && err.contains("views"),
        "{err}"
    );
}

#[test]
fn a_version_1_cache_is_read_and_resumed() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), 10, None, 1, None);
    // Make it look like version 1: no journal, format_version 1, pretty JSON.
    std::fs::remove_dir_all(d.path().join("journal")).unwrap();
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("manifest.json")).unwrap()).unwrap();
    m["format_version"] = 1.into();
    std::fs::write(
        d.path().join("manifest.json"),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();
    let before = FeatureCache::open(d.path()).unwrap().load().unwrap();
    assert_eq!(
        FeatureCache::open(d.path())
            .unwrap()
            .manifest
            .format_version,
        1
    );
    // Resumed with more images: old rows kept, new ones appended, now version 2.
    write(d.path(), 16, None, 1, None);
    let c = FeatureCache::open(d.path()).unwrap();
    assert_eq!(c.manifest.format_version, 2);
    let after = c.load().unwrap();
    assert!(after.len() > before.len());
    assert_eq!(
        &after.features[..before.features.len()],
        &before.features[..]
    );
}
