//! The predict crate on its own: image collection, prediction with a head, evaluation.

use std::path::PathBuf;

use candle_core::Device;
use headstart_backbone::weights::WeightMap;
use headstart_backbone::Architecture;
use headstart_head::{HeadCheckpoint, HeadMetadata, LinearHead};
use headstart_predict::{collect_images, evaluate, Error, Predictor};
use headstart_testkit::shared;

fn lite0() -> WeightMap {
    WeightMap::from_file(
        &shared("weights/efficientnet-lite0/efficientnet-lite0-57934424.pth"),
        None,
    )
    .unwrap()
}

/// A seeded random head over the flower classes, for the Lite0 features.
fn predictor(weights: &WeightMap) -> Predictor {
    let classes: Vec<String> = ["daisy", "dandelion", "rose", "sunflower", "tulip"]
        .map(String::from)
        .to_vec();
    let head = HeadCheckpoint {
        head: LinearHead::init(classes.len(), 1280, 7).unwrap(),
        meta: HeadMetadata {
            classes,
            backbone: Architecture::EfficientNetLite0.config(),
            weights_sha256: weights_sha(),
            feature_dim: 1280,
            config: None,
            val_metrics: None,
            weights_file: None,
        },
    };
    Predictor::new(head, weights, &weights_sha(), false, &Device::Cpu).unwrap()
}

fn weights_sha() -> String {
    "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db".into()
}

#[test]
fn collect_images_walks_folders_like_a_dataset_scan() {
    let d = tempfile::tempdir().unwrap();
    for p in [
        "b/y.png",
        "a/x.jpg",
        "a/.hidden.jpg",
        "a/notes.txt",
        "a/deep/z.jpeg",
    ] {
        let p = d.path().join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }
    std::os::unix::fs::symlink(d.path().join("a"), d.path().join("a/deep/loop")).unwrap();
    let explicit = d.path().join("a/notes.txt");
    let got = collect_images(&[d.path().to_path_buf(), explicit.clone()]).unwrap();
    let rel: Vec<PathBuf> = got
        .iter()
        .map(|p| p.strip_prefix(d.path()).unwrap().to_path_buf())
        .collect();
    // Sorted, hidden and non-image files skipped, the loop entered once; an explicit file is
    // kept whatever its extension.
    assert_eq!(
        rel,
        ["a/deep/z.jpeg", "a/x.jpg", "b/y.png", "a/notes.txt"].map(PathBuf::from)
    );
    let missing = d.path().join("nope.jpg");
    assert!(matches!(
        collect_images(&[missing]),
        Err(Error::MissingPath(_))
    ));
}

#[test]
fn predictions_are_ranked_probabilities_and_bad_files_do_not_stop_the_run() {
    let w = lite0();
    let p = predictor(&w);
    let d = tempfile::tempdir().unwrap();
    let broken = d.path().join("broken.jpg");
    std::fs::write(&broken, b"not a jpeg").unwrap();
    let mut daisies: Vec<PathBuf> = std::fs::read_dir(shared("data/flowers/daisy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    daisies.sort();
    let mut paths = daisies[..3].to_vec();
    paths.insert(1, broken);
    paths.push(PathBuf::from("/dev/zero")); // refused as not a regular file, never read
    let counter = Counter::default();
    let preds = p.predict(&paths, 2, 3, &counter).unwrap();
    let done = counter.0.load(std::sync::atomic::Ordering::Relaxed) as usize;
    assert_eq!(done, paths.len());
    assert_eq!(preds.len(), 5);
    for (i, pr) in preds.iter().enumerate() {
        match i {
            1 | 4 => assert!(pr.top.is_none() && pr.error.is_some(), "{pr:?}"),
            _ => {
                let top = pr.top.as_ref().unwrap();
                assert_eq!(top.len(), 3);
                assert!(top.windows(2).all(|w| w[0].score >= w[1].score));
                assert!(top.iter().all(|s| (0.0..=1.0).contains(&s.score)));
            }
        }
    }
    assert!(preds[4]
        .error
        .as_ref()
        .unwrap()
        .contains("not a regular file"));
}

#[test]
fn evaluating_a_folder_with_nothing_to_score_is_an_error() {
    let w = lite0();
    let p = predictor(&w);
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("cactus")).unwrap();
    std::fs::copy(
        shared("data/flowers/daisy").join(
            std::fs::read_dir(shared("data/flowers/daisy"))
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .file_name(),
        ),
        d.path().join("cactus/1.jpg"),
    )
    .unwrap();
    let err = evaluate(
        &p,
        d.path(),
        headstart_data::folder::Split::Val,
        8,
        None,
        &headstart_core::progress::NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("no image of the head's classes") && err.contains("cactus"),
        "{err}"
    );
}

/// Counts what a run reports done.
#[derive(Default)]
struct Counter(std::sync::atomic::AtomicU64);

impl headstart_core::progress::Progress for Counter {
    fn advance(&self, n: u64) {
        self.0.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn test_time_augmentation_averages_the_probabilities_of_every_view() {
    use headstart_backbone::preprocess::augment::{Tta, TtaPlan};
    let w = lite0();
    let mut p = predictor(&w);
    let mut daisies: Vec<PathBuf> = std::fs::read_dir(shared("data/flowers/daisy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    daisies.sort();
    let d = tempfile::tempdir().unwrap();
    let broken = d.path().join("broken.jpg");
    std::fs::write(&broken, b"not a jpeg").unwrap();
    let paths = vec![daisies[0].clone(), broken, daisies[1].clone()];
    let plan = TtaPlan {
        tta: Tta::Crops(2),
        ..Default::default()
    };
    p.tta = plan;
    let k = 5;
    // Batches of 3 rows for 4 views a file: every file's views straddle two forward passes.
    let preds = p
        .predict(&paths, 3, k, &headstart_core::progress::NoProgress)
        .unwrap();
    assert!(preds[1].error.is_some(), "a bad file is named, not fatal");
    let cfg = p.backbone.config().preprocess.clone();
    for i in [0, 2] {
        // The mean, view by view, of the probabilities of the plan's inputs.
        let img = headstart_backbone::preprocess::decode_rgb(
            &std::fs::read(&paths[i]).unwrap(),
            &p.limits,
        )
        .unwrap();
        let name = paths[i].file_name().unwrap().as_encoded_bytes();
        let x = plan.inputs(&img, name, &cfg);
        let s = cfg.input_size as usize;
        let t = candle_core::Tensor::from_vec(x, (plan.views(), 3, s, s), &Device::Cpu).unwrap();
        let per_view = p.probabilities(&t).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(per_view.len(), 4);
        let top = preds[i].top.as_ref().unwrap();
        for sc in top {
            let mean: f32 = per_view.iter().map(|v| v[sc.index]).sum::<f32>() / 4.0;
            assert!((mean - sc.score).abs() < 1e-5, "{} vs {}", mean, sc.score);
        }
        // The views do differ (or the average would be a no-op).
        assert!(per_view[0] != per_view[2]);
        // And without TTA the score is the eval view's alone.
        let mut q = predictor(&w);
        q.tta = TtaPlan::default();
        let plain = q
            .predict(
                &paths[i..i + 1],
                3,
                k,
                &headstart_core::progress::NoProgress,
            )
            .unwrap();
        let first = &plain[0].top.as_ref().unwrap()[0];
        assert!((per_view[0][first.index] - first.score).abs() < 1e-5);
    }
}
