//! A full disk while writing a shard: the error names the file and the OS error, the partial file
//! is removed, and the manifest never records the shard. Runs on a 256 KiB tmpfs when the test can
//! mount one (root on Linux), else is skipped with a message.

use std::path::{Path, PathBuf};
use std::process::Command;

use headstart_cache::*;
use headstart_core::config::{Architecture, AugmentParams, Interpolation};

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn settings() -> CacheSettings {
    CacheSettings {
        max_pixels: headstart_cache::DEFAULT_MAX_PIXELS,
        weights_file: None,
        feature_dim: 512,
        backbone: Architecture::ResNet18.config(),
        weights_sha256: "ab".repeat(32),
        augment: AugmentConfig {
            views: 0,
            crop_size: 224,
            params: AugmentParams {
                scale: [0.08, 1.0],
                ratio: [0.75, 4.0 / 3.0],
                hflip_p: 0.5,
                interpolation: Interpolation::Bilinear,
            },
            sampler: "test".into(),
        },
        seed: 1,
        dtype: FeatureDType::F32,
    }
}

#[test]
fn a_full_disk_fails_cleanly_and_records_nothing() {
    let d = tempfile::tempdir().unwrap();
    let Some(_fs) = Tmpfs::mount(d.path(), "256k") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root on Linux)");
        return;
    };
    let cache = d.path().join("cache");
    let mut w = CacheWriter::open(
        &cache,
        settings(),
        vec!["a".into(), "b".into()],
        1000,
        false,
    )
    .unwrap();
    // 200 rows × 512 f32 = 400 KiB: more than the filesystem holds.
    for i in 0..200 {
        let e = ImageEntry {
            path: format!("a/{i}.jpg"),
            path_bytes_hex: None,
            label: 0,
            split: None,
            bytes: 1,
            sha256: format!("{i:064x}"),
            status: ImageStatus::Ok,
            reason: None,
        };
        w.add_image(
            e,
            &[ViewMeta {
                view: 0,
                crop: [0, 0, 1, 1],
                flip: false,
            }],
            &vec![0.5f32; 512],
        )
        .unwrap();
    }
    let err = w.commit_shard().unwrap_err().to_string();
    assert!(err.contains("shard-00000.safetensors"), "{err}");
    assert!(err.to_lowercase().contains("no space"), "{err}");
    drop(w);
    let left: Vec<String> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.iter()
            .all(|n| !n.contains("shard") && !n.contains(".tmp-")),
        "{left:?}"
    );
    // No manifest was ever committed, so the directory is not (yet) a cache.
    assert!(FeatureCache::open(&cache).is_err());
}
