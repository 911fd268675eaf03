//! DINOv2 and CLIP through the binary: extract → train-head → predict → eval with the fixtures'
//! weights (their config.json beside them sizes the models), and `classify` refusing clearly.

mod common;

use std::path::Path;

use common::*;

fn dataset(root: &Path) {
    link_photos(root, &["daisy", "rose", "tulip"], 0..5);
}

#[test]
fn dinov2_and_clip_run_the_whole_flow_from_local_files() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    dataset(&data);
    for (name, dir, width) in [
        ("dinov2-small", "dinov2", 192),
        ("clip-vit-b32", "clip", 48),
    ] {
        let w = shared(&format!("fixtures/{dir}/model.safetensors"));
        let w = w.to_str().unwrap();
        let cache = d.path().join(format!("cache-{name}"));
        let head = d.path().join(format!("head-{name}"));
        let (c, h, data_s) = (
            cache.to_str().unwrap(),
            head.to_str().unwrap(),
            data.to_str().unwrap(),
        );
        let out = ok(&[
            "extract",
            data_s,
            "--cache",
            c,
            "--backbone",
            name,
            "--weights",
            w,
            "--views",
            "1",
            "--json",
            "--quiet",
        ]);
        let r: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(r["images_ok"], 15, "{name}");
        let info: serde_json::Value =
            serde_json::from_str(&ok(&["cache", "info", c, "--json"])).unwrap();
        assert_eq!(info["backbone"], name);
        assert_eq!(info["feature_dim"], width);
        ok(&[
            "train-head",
            "--cache",
            c,
            "--out",
            h,
            "--epochs",
            "3",
            "--json",
        ]);
        let photo = std::fs::read_dir(data.join("rose"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let pred: serde_json::Value = serde_json::from_str(&ok(&[
            "predict",
            "--head",
            h,
            "--weights",
            w,
            "--format",
            "json",
            photo.to_str().unwrap(),
        ]))
        .unwrap();
        assert!(
            pred.to_string().contains("rose") || pred.to_string().contains("daisy"),
            "{pred}"
        );
        ok(&["eval", "--head", h, "--weights", w, data_s, "--json"]);
        // classify needs an ImageNet classifier: a usage error saying what to do instead.
        let out = headstart(&[
            "classify",
            "--backbone",
            name,
            "--weights",
            w,
            photo.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("no ImageNet classifier") && err.contains("train-head"),
            "{err}"
        );
    }
}

#[test]
fn without_weights_offline_the_hub_repository_is_named() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    dataset(&data);
    let out = headstart(&[
        "extract",
        data.to_str().unwrap(),
        "--cache",
        d.path().join("c").to_str().unwrap(),
        "--backbone",
        "dinov2-base",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("facebook/dinov2-base") && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );
}
