//! `headstart classify`: ImageNet top-k with the backbone's own classifier.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::Device;
use headstart_backbone::batch::{run_on_files, softmax_rows, top_k};
use headstart_backbone::imagenet::class_name;
use headstart_backbone::preprocess::DecodeLimits;
use serde_json::json;

use crate::common::{print_json, usage, BackboneArgs, RunArgs};

/// Classify images with the backbone's ImageNet classifier: the one-line check that the weights
/// are right (a daisy photo should come out as class 985 "daisy").
///
/// Example: headstart classify --backbone efficientnet-lite0 --weights lite0.pth photo.jpg
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    backbone: BackboneArgs,
    #[command(flatten)]
    run: RunArgs,
    /// How many classes to show per image.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=1000))]
    top_k: u16,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    /// Print a JSON list of {"path", "top": [{"index", "label", "score"}]} instead of text.
    #[arg(long)]
    json: bool,
    /// Image files.
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
}

/// Runs the command.
pub fn run(a: Args) -> Result<()> {
    a.run.threads.apply()?;
    let arch = a.backbone.architecture()?;
    if !arch.has_imagenet_head() {
        return Err(usage(format!(
            "--backbone {arch}: {} has no ImageNet classifier ({} is a feature extractor), so `classify` cannot run it; classify with resnet18/34/50 or efficientnet-lite0, or train a head on its features: `headstart extract DATA --backbone {arch} …` then `headstart train-head`",
            arch,
            match arch.transformer() {
                Some(headstart_core::config::TransformerFamily::Clip) => "CLIP's image tower",
                _ => "DINOv2",
            }
        )));
    }
    for p in &a.images {
        if !p.exists() {
            return Err(usage(format!("{}: no such file", p.display())));
        }
    }
    let (_, weights) = a.backbone.load_weights(arch)?;
    let model = a.backbone.backbone(&a.run, arch, &weights, true).context("these weights have no ImageNet classifier (`fc`/`_fc`), so `classify` cannot run; `extract` only needs the features")?;
    let cfg = model.config().preprocess.clone();
    let results = run_on_files::<_, headstart_backbone::Error>(
        &a.images,
        &cfg,
        &DecodeLimits::default(),
        a.batch_size as usize,
        &mut |x| {
            let (_, logits) = model.forward(x)?;
            let logits = logits
                .ok_or_else(|| headstart_backbone::Error::Input("no classifier".into()))?
                .to_device(&Device::Cpu)?;
            Ok(softmax_rows(&logits)?.to_vec2::<f32>()?)
        },
        &headstart_core::progress::NoProgress,
    )?;
    let mut failed = 0;
    let out: Vec<serde_json::Value> = a
        .images
        .iter()
        .zip(results)
        .map(|(p, r)| match r {
            Ok(pr) => {
                let top: Vec<_> = top_k(&pr, a.top_k as usize)
                    .into_iter()
                    .map(|i| json!({"index": i, "label": class_name(i), "score": pr[i]}))
                    .collect();
                json!({"path": p.display().to_string(), "top": top})
            }
            Err(e) => {
                failed += 1;
                json!({"path": p.display().to_string(), "error": e.to_string()})
            }
        })
        .collect();
    if a.json {
        print_json(&out)?;
    } else {
        for r in &out {
            println!("{}", r["path"].as_str().unwrap_or_default());
            match r["top"].as_array() {
                Some(top) => {
                    for (k, t) in top.iter().enumerate() {
                        println!(
                            "  {}. {:<30} {:>4}  {:.4}",
                            k + 1,
                            t["label"].as_str().unwrap_or_default(),
                            t["index"],
                            t["score"].as_f64().unwrap_or(0.0)
                        );
                    }
                }
                None => println!("  error: {}", r["error"].as_str().unwrap_or_default()),
            }
        }
    }
    if failed > 0 {
        eprintln!("{failed} of {} image(s) could not be read", a.images.len());
    }
    Ok(())
}
