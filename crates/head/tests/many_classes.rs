//! A cache of many classes (iNaturalist has 10,000) trains in memory that grows with the rows,
//! not with the square of the classes: 25,000 classes once needed a 3 GB confusion matrix.

use headstart_cache::{
    AugmentConfig, CacheIndex, CacheSettings, CacheWriter, FeatureDType, ImageEntry, ImageStatus,
    ViewMeta,
};
use headstart_core::config::{Architecture, AugmentParams};
use headstart_head::{train_head, SgdParams, Solver, TrainConfig, TrainLimits};

#[test]
fn thousands_of_classes_train_without_a_dense_confusion_matrix() {
    // 5,000 classes keep the test quick (the report alone is checked at 70,000 in metrics.rs);
    // densely, their confusion matrix would already take 200 MB.
    const CLASSES: usize = 5_000;
    const DIM: usize = 8;
    let d = tempfile::tempdir().unwrap();
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
        dtype: FeatureDType::F16,
    };
    let names: Vec<String> = (0..CLASSES).map(|c| format!("c{c:05}")).collect();
    let mut w = CacheWriter::open(d.path(), settings, names, 4096, false).unwrap();
    let view = [ViewMeta {
        view: 0,
        crop: [0, 0, 1, 1],
        flip: false,
    }];
    for i in 0..2 * CLASSES {
        let label = i % CLASSES;
        let feats: Vec<f32> = (0..DIM).map(|k| ((label >> k) & 1) as f32).collect();
        let e = ImageEntry {
            path: format!("c{label:05}/{i}.jpg"),
            path_bytes_hex: None,
            label,
            split: None,
            bytes: 1,
            sha256: format!("{i:064x}"),
            status: ImageStatus::Ok,
            reason: None,
        };
        w.add_image(e, &view, &feats).unwrap();
    }
    w.finish().unwrap();
    let cache = CacheIndex::open(d.path()).unwrap();
    let config = TrainConfig {
        solver: Solver::Sgd(SgdParams {
            epochs: 1,
            batch_size: 512,
            ..Default::default()
        }),
        val_fraction: 0.5,
        ..Default::default()
    };
    let r = train_head(
        &cache,
        &config.check().unwrap(),
        &TrainLimits::default(),
        &mut |_| {},
    )
    .unwrap();
    assert!(r.report.confusion.is_empty());
    assert_eq!(
        r.report
            .confusion_sparse
            .iter()
            .map(|x| x[2])
            .sum::<usize>(),
        r.report.n
    );
    assert_eq!(r.report.per_class.len(), CLASSES);
}
