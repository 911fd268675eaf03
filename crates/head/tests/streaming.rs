//! Training from the shards (over the memory budget) gives the same head as training in memory,
//! and L-BFGS, which needs every row in memory, says so.

use headstart_cache::{
    AugmentConfig, CacheIndex, CacheSettings, CacheWriter, FeatureDType, ImageEntry, ImageStatus,
    ViewMeta,
};
use headstart_core::config::{Architecture, AugmentParams};
use headstart_core::rng::SplitMix64;
use headstart_head::{
    train_head, LbfgsParams, SgdParams, Solver, TrainConfig, TrainLimits, TrainReport,
};

const DIM: usize = 16;
const VIEWS: u32 = 2;

fn write_cache(dir: &std::path::Path, dtype: FeatureDType) {
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
        dtype,
    };
    let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let mut w = CacheWriter::open(dir, settings, classes, 20, false).unwrap();
    let mut rng = SplitMix64::new(3, 4);
    let views: Vec<ViewMeta> = (0..=VIEWS)
        .map(|v| ViewMeta {
            view: v,
            crop: [0, 0, 1, 1],
            flip: false,
        })
        .collect();
    for i in 0..150usize {
        let label = i % 3;
        let feats: Vec<f32> = (0..(VIEWS as usize + 1) * DIM)
            .map(|k| if k % DIM == label { 2.0 } else { 0.0 } + rng.unit() as f32 - 0.5)
            .collect();
        let e = ImageEntry {
            path: format!("{label}/{i:04}.jpg"),
            path_bytes_hex: None,
            label,
            split: None,
            bytes: 1,
            sha256: format!("{i:064x}"),
            status: ImageStatus::Ok,
            reason: None,
        };
        if i % 17 == 5 {
            w.add_skipped(e, "corrupt".into()).unwrap();
        } else {
            w.add_image(e, &views, &feats).unwrap();
        }
    }
    w.finish().unwrap();
}

fn train(
    dir: &std::path::Path,
    config: &TrainConfig,
    budget: u64,
) -> headstart_head::Result<TrainReport> {
    let cache = CacheIndex::open(dir).unwrap();
    train_head(
        &cache,
        &config.clone().check()?,
        &TrainLimits {
            memory_budget: budget,
        },
        &mut |_| {},
    )
}

fn weights(r: &TrainReport) -> Vec<f32> {
    r.head.weight.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn streamed_sgd_trains_the_same_head_as_in_memory() {
    for dtype in [FeatureDType::F32, FeatureDType::F16] {
        let d = tempfile::tempdir().unwrap();
        write_cache(d.path(), dtype);
        let config = TrainConfig {
            solver: Solver::Sgd(SgdParams {
                lr: 0.05,
                epochs: 4,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mem = train(d.path(), &config, u64::MAX).unwrap();
        let disk = train(d.path(), &config, 1).unwrap();
        assert!(!mem.rows_streamed && disk.rows_streamed);
        assert_eq!(weights(&mem), weights(&disk));
        // Validation is one chunk either way here, so even its loss is the same.
        assert_eq!(mem.history, disk.history);
        assert_eq!(mem.split, disk.split);
        assert!(mem.history.last().unwrap().val_accuracy.unwrap() > 0.9);
    }
}

#[test]
fn lbfgs_over_the_budget_names_the_budget() {
    let d = tempfile::tempdir().unwrap();
    write_cache(d.path(), FeatureDType::F32);
    let config = TrainConfig {
        solver: Solver::Lbfgs(LbfgsParams::default()),
        ..Default::default()
    };
    let err = train(d.path(), &config, 1).unwrap_err().to_string();
    assert!(
        err.contains("memory budget") && err.contains("SGD"),
        "{err}"
    );
    assert!(train(d.path(), &config, u64::MAX).is_ok());
}

#[test]
fn a_damaged_shard_is_named_by_the_streaming_reader_too() {
    let d = tempfile::tempdir().unwrap();
    write_cache(d.path(), FeatureDType::F32);
    let s = d.path().join("shard-00002.safetensors");
    let mut b = std::fs::read(&s).unwrap();
    let n = b.len();
    b[n - 3] ^= 1;
    std::fs::write(&s, b).unwrap();
    let err = train(d.path(), &TrainConfig::default(), 1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("shard-00002.safetensors") && err.contains("checksum"),
        "{err}"
    );
}
