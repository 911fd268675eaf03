//! Parity with PyTorch/torchvision on the shared fixtures (‖out − ref‖ / ‖ref‖ ≤ 1e-4).

use candle_core::{Device, Tensor};
use headstart_backbone::weights::WeightMap;
use headstart_backbone::{Architecture, Backbone, Engine};
mod common;

use common::{expected, rel_err, shared};

fn check(arch: Architecture, weights: &str, fixture: &str) {
    let w = WeightMap::from_file(&shared(weights), None).unwrap();
    let model = Backbone::load(arch, &w, true, &Device::Cpu).unwrap();
    let exp = expected(fixture);
    let (features, logits) = model.forward(&exp["input"]).unwrap();
    let ef = rel_err(&features, &exp["features"]);
    let el = rel_err(&logits.unwrap(), &exp["logits"]);
    println!("{arch} from {weights}: features rel err {ef:.2e}, logits rel err {el:.2e}");
    assert!(ef <= 1e-4, "features rel err {ef}");
    assert!(el <= 1e-4, "logits rel err {el}");
}

#[test]
fn resnet18_matches_torchvision_from_safetensors() {
    check(
        Architecture::ResNet18,
        "fixtures/resnet18/weights.safetensors",
        "fixtures/resnet18/expected.safetensors",
    );
}

#[test]
fn resnet18_matches_torchvision_from_prefixed_zip_pth() {
    let w = WeightMap::from_file(&shared("fixtures/resnet18/weights-prefixed.pth"), None).unwrap();
    assert_eq!(w.stripped_prefix, "backbone.");
    check(
        Architecture::ResNet18,
        "fixtures/resnet18/weights-prefixed.pth",
        "fixtures/resnet18/expected.safetensors",
    );
}

#[test]
fn efficientnet_lite0_matches_reference_from_legacy_pth() {
    check(
        Architecture::EfficientNetLite0,
        "weights/efficientnet-lite0/efficientnet-lite0-57934424.pth",
        "fixtures/efficientnet-lite0/expected.safetensors",
    );
}

#[test]
fn resnet18_eval_features_match_on_reference_inputs() {
    // The fixture's own preprocessed photos through our network: isolates the network from decoding.
    let w = WeightMap::from_file(&shared("fixtures/resnet18/weights.safetensors"), None).unwrap();
    let model = Backbone::load(Architecture::ResNet18, &w, false, &Device::Cpu).unwrap();
    let exp = expected("fixtures/resnet18/expected.safetensors");
    let f = model.features(&exp["eval_input"]).unwrap();
    let e = rel_err(&f, &exp["eval_features"]);
    assert!(e <= 1e-4, "eval features rel err {e}");
    assert!(model.logits_from_features(&f).unwrap().is_none());
}

#[test]
fn wrong_architecture_names_the_tensor_and_both_shapes() {
    let w = WeightMap::from_file(&shared("fixtures/resnet18/weights.safetensors"), None).unwrap();
    let err = Backbone::load(Architecture::ResNet50, &w, false, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("layer1.0.conv1.weight"), "{err}");
    assert!(
        err.contains("[64, 64, 1, 1]") && err.contains("[64, 64, 3, 3]"),
        "{err}"
    );
    let err = Backbone::load(Architecture::EfficientNetLite0, &w, false, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing tensor `_conv_stem.weight`"), "{err}");
}

/// The ten photos of a CNN fixture through our decoder and eval transform.
fn our_eval_batch(fixture: &str, arch: Architecture) -> Tensor {
    let batch = common::our_eval_batch(fixture, arch);
    assert_eq!(batch.dims()[0], 10);
    batch
}

#[test]
fn resnet18_eval_features_from_our_decoding_are_within_2_percent_per_image() {
    let w = WeightMap::from_file(&shared("fixtures/resnet18/weights.safetensors"), None).unwrap();
    let model = Backbone::load(Architecture::ResNet18, &w, false, &Device::Cpu).unwrap();
    let exp = expected("fixtures/resnet18/expected.safetensors");
    let f = model
        .features(&our_eval_batch(
            "fixtures/resnet18/expected.safetensors",
            Architecture::ResNet18,
        ))
        .unwrap();
    for i in 0..10 {
        let e = rel_err(&f.get(i).unwrap(), &exp["eval_features"].get(i).unwrap());
        println!("photo {i}: eval features rel err {e:.2e}");
        assert!(e <= 0.02, "photo {i}: {e}");
    }
}

#[test]
fn lite0_top1_from_our_decoding_equals_the_reference_for_all_ten_photos() {
    let w = WeightMap::from_file(
        &shared("weights/efficientnet-lite0/efficientnet-lite0-57934424.pth"),
        None,
    )
    .unwrap();
    let model = Backbone::load(Architecture::EfficientNetLite0, &w, true, &Device::Cpu).unwrap();
    let exp = expected("fixtures/efficientnet-lite0/expected.safetensors");
    let (_, logits) = model
        .forward(&our_eval_batch(
            "fixtures/efficientnet-lite0/expected.safetensors",
            Architecture::EfficientNetLite0,
        ))
        .unwrap();
    let ours = logits.unwrap().argmax(1).unwrap().to_vec1::<u32>().unwrap();
    let theirs = exp["eval_logits"]
        .argmax(1)
        .unwrap()
        .to_vec1::<u32>()
        .unwrap();
    assert_eq!(ours, theirs);
}

/// torchvision names and shapes of a ResNet (`bottleneck` = ResNet-50 style).
fn resnet_tensors(layers: [usize; 4], bottleneck: bool) -> Vec<(String, Vec<usize>)> {
    let mut v = Vec::new();
    let mut conv_bn = |conv: String, bn: String, cout: usize, cin: usize, k: usize| {
        v.push((format!("{conv}.weight"), vec![cout, cin, k, k]));
        for p in ["weight", "bias", "running_mean", "running_var"] {
            v.push((format!("{bn}.{p}"), vec![cout]));
        }
    };
    conv_bn("conv1".into(), "bn1".into(), 64, 3, 7);
    let expansion = if bottleneck { 4 } else { 1 };
    let mut cin = 64;
    for (li, &n) in layers.iter().enumerate() {
        let width = 64 << li;
        let cout = width * expansion;
        for b in 0..n {
            let p = format!("layer{}.{b}.", li + 1);
            let shapes: Vec<(usize, usize, usize)> = if bottleneck {
                vec![(width, cin, 1), (width, width, 3), (cout, width, 1)]
            } else {
                vec![(width, cin, 3), (width, width, 3)]
            };
            for (i, (o, c, k)) in shapes.into_iter().enumerate() {
                conv_bn(
                    format!("{p}conv{}", i + 1),
                    format!("{p}bn{}", i + 1),
                    o,
                    c,
                    k,
                );
            }
            if b == 0 && (li > 0 || cin != cout) {
                conv_bn(
                    format!("{p}downsample.0"),
                    format!("{p}downsample.1"),
                    cout,
                    cin,
                    1,
                );
            }
            cin = cout;
        }
    }
    v
}

#[test]
fn resnet34_and_resnet50_build_from_torchvision_names_and_give_their_feature_widths() {
    for (arch, layers, bottleneck, dim) in [
        (Architecture::ResNet34, [3, 4, 6, 3], false, 512),
        (Architecture::ResNet50, [3, 4, 6, 3], true, 2048),
    ] {
        let tensors: Vec<(String, Tensor)> = resnet_tensors(layers, bottleneck)
            .into_iter()
            .map(|(n, s)| {
                let t = if n.ends_with("running_var") {
                    Tensor::ones(s, candle_core::DType::F32, &Device::Cpu).unwrap()
                } else {
                    (Tensor::randn(0f32, 1., s.clone(), &Device::Cpu).unwrap() * 0.05).unwrap()
                };
                (format!("module.{n}"), t)
            })
            .collect();
        let w = WeightMap::from_tensors(tensors, "synthetic".into(), None).unwrap();
        assert_eq!(w.stripped_prefix, "module.");
        let model = Backbone::load(arch, &w, false, &Device::Cpu).unwrap();
        let x = Tensor::randn(0f32, 1., (1, 3, 64, 64), &Device::Cpu).unwrap();
        assert_eq!(model.features(&x).unwrap().dims(), &[1, dim]);
        assert_eq!(model.config().feature_dim, dim);
    }
}

#[test]
fn truncated_or_garbled_safetensors_are_errors_not_panics() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("ok.safetensors");
    let t = Tensor::arange(0f32, 64., &Device::Cpu)
        .unwrap()
        .reshape((8, 8))
        .unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("conv1.weight".to_string(), t)]),
        &src,
    )
    .unwrap();
    let good = std::fs::read(&src).unwrap();
    let bad = d.path().join("bad.safetensors");
    for cut in 0..good.len() {
        std::fs::write(&bad, &good[..cut]).unwrap();
        assert!(
            WeightMap::from_file(&bad, None).is_err(),
            "cut at {cut} accepted"
        );
    }
    let mut flipped = good.clone();
    flipped[0] ^= 0x7f; // header length
    std::fs::write(&bad, &flipped).unwrap();
    let err = WeightMap::from_file(&bad, None).unwrap_err().to_string();
    assert!(err.contains("bad.safetensors"), "{err}");
}

/// Random torchvision-named ResNet weights with non-trivial batch-norm statistics.
fn random_resnet(layers: [usize; 4], bottleneck: bool) -> WeightMap {
    let dim = if bottleneck { 2048 } else { 512 };
    let tensors: Vec<(String, Tensor)> = resnet_tensors(layers, bottleneck)
        .into_iter()
        .map(|(n, s)| {
            let t = if n.ends_with("running_var") {
                Tensor::rand(0.5f32, 1.5, s, &Device::Cpu).unwrap()
            } else if n.contains("bn") && n.ends_with(".weight") {
                Tensor::rand(0.5f32, 1.0, s, &Device::Cpu).unwrap()
            } else {
                let fan_in: usize = s.iter().skip(1).product::<usize>().max(1);
                (Tensor::randn(0f32, 1., s, &Device::Cpu).unwrap() * (2.0 / fan_in as f64).sqrt())
                    .unwrap()
            };
            (n, t)
        })
        .chain([
            (
                "fc.weight".to_string(),
                (Tensor::randn(0f32, 1., (1000, dim), &Device::Cpu).unwrap() * 0.05).unwrap(),
            ),
            (
                "fc.bias".to_string(),
                Tensor::randn(0f32, 1., 1000, &Device::Cpu).unwrap(),
            ),
        ])
        .collect();
    WeightMap::from_tensors(tensors, "synthetic".into(), None).unwrap()
}

#[test]
fn cpu_engine_equals_candle_ops_for_resnet18_34_50() {
    for (arch, layers, bottleneck) in [
        (Architecture::ResNet18, [2, 2, 2, 2], false),
        (Architecture::ResNet34, [3, 4, 6, 3], false),
        (Architecture::ResNet50, [3, 4, 6, 3], true),
    ] {
        let w = random_resnet(layers, bottleneck);
        let engine = Backbone::load(arch, &w, true, &Device::Cpu).unwrap();
        let candle =
            Backbone::load_with_engine(arch, &w, true, &Device::Cpu, Engine::Candle).unwrap();
        // 3 images at two sizes: odd sizes exercise partial Winograd tiles and padding.
        for size in [96, 75] {
            let x = Tensor::randn(0f32, 1., (3, 3, size, size), &Device::Cpu).unwrap();
            let (fe, le) = engine.forward(&x).unwrap();
            let (fc, lc) = candle.forward(&x).unwrap();
            let (ef, el) = (rel_err(&fe, &fc), rel_err(&le.unwrap(), &lc.unwrap()));
            println!("{arch} {size}×{size}: engine vs candle features {ef:.2e}, logits {el:.2e}");
            assert!(ef < 1e-5 && el < 1e-5, "{arch} {size}: {ef} {el}");
        }
    }
}

#[test]
fn cpu_engine_equals_candle_ops_for_lite0() {
    let w = WeightMap::from_file(
        &shared("weights/efficientnet-lite0/efficientnet-lite0-57934424.pth"),
        None,
    )
    .unwrap();
    let arch = Architecture::EfficientNetLite0;
    let engine = Backbone::load(arch, &w, false, &Device::Cpu).unwrap();
    let candle = Backbone::load_with_engine(arch, &w, false, &Device::Cpu, Engine::Candle).unwrap();
    for size in [64, 77] {
        let x = Tensor::randn(0f32, 1., (2, 3, size, size), &Device::Cpu).unwrap();
        let e = rel_err(&engine.features(&x).unwrap(), &candle.features(&x).unwrap());
        println!("lite0 {size}×{size}: engine vs candle features {e:.2e}");
        assert!(e < 1e-5, "{size}: {e}");
    }
}

/// `Backbone` is public API: calling it from inside rayon tasks (as a user's own parallel loop
/// would) must neither panic nor change the numbers.
#[test]
fn backbone_is_reentrant_from_inside_a_rayon_pool() {
    use rayon::prelude::*;
    let w = WeightMap::from_file(&shared("fixtures/resnet18/weights.safetensors"), None).unwrap();
    let model = Backbone::load(Architecture::ResNet18, &w, false, &Device::Cpu).unwrap();
    let x = Tensor::randn(0f32, 1., (2, 3, 64, 64), &Device::Cpu).unwrap();
    let want = model.features(&x).unwrap().to_vec2::<f32>().unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    for _ in 0..5 {
        let got: Vec<Vec<Vec<f32>>> = pool.install(|| {
            (0..8)
                .into_par_iter()
                .map(|_| model.features(&x).unwrap().to_vec2::<f32>().unwrap())
                .collect()
        });
        for g in got {
            assert_eq!(g, want);
        }
    }
}
