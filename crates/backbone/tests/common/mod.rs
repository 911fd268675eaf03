//! Shared helpers of the parity tests.
#![allow(dead_code)]

use candle_core::{Device, Tensor};
use headstart_backbone::Architecture;
pub use headstart_testkit::shared;

/// The tensors of a fixture file.
pub fn expected(rel: &str) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(shared(rel), &Device::Cpu).expect("fixture readable")
}

/// ‖t‖₂.
pub fn l2_norm(t: &Tensor) -> f32 {
    t.sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .sqrt()
}

/// ‖out − ref‖₂ / ‖ref‖₂.
pub fn rel_err(out: &Tensor, reference: &Tensor) -> f32 {
    assert_eq!(out.dims(), reference.dims());
    l2_norm(&(out - reference).unwrap()) / l2_norm(reference)
}

/// The photos named in a fixture's `eval_images` metadata (relative to `../shared`, or to
/// `../shared/data` in the transformer fixtures), through our decoder and `arch`'s eval
/// transform, as an `[n, 3, 224, 224]` batch.
pub fn our_eval_batch(fixture: &str, arch: Architecture) -> Tensor {
    let bytes = std::fs::read(shared(fixture)).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let list = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("eval_images"))
        .expect("eval_images metadata")
        .clone();
    let paths: Vec<String> = serde_json::from_str(&list).unwrap();
    let cfg = arch.config().preprocess;
    let mut data = Vec::new();
    for p in &paths {
        let rel = if p.starts_with("data/") {
            p.clone()
        } else {
            format!("data/{p}")
        };
        let b = std::fs::read(shared(&rel)).unwrap();
        data.extend(
            headstart_backbone::preprocess::eval_input(&b, &cfg, &Default::default()).unwrap(),
        );
    }
    Tensor::from_vec(data, (paths.len(), 3, 224, 224), &Device::Cpu).unwrap()
}
