//! `headstart classify`: ImageNet top-k with the backbone's own classifier.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use headstart_backbone::imagenet::class_name;
use headstart_backbone::preprocess::{eval_input_from_file, DecodeLimits};
use headstart_backbone::Backbone;
use rayon::prelude::*;
use serde_json::json;

use crate::common::{device, print_json, usage, BackboneArgs};

/// Classify images with the backbone's ImageNet classifier: the one-line check that the weights
/// are right (a daisy photo should come out as class 985 "daisy").
///
/// Example: headstart classify --backbone efficientnet-lite0 --weights lite0.pth photo.jpg
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    backbone: BackboneArgs,
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
    let arch = a.backbone.architecture()?;
    for p in &a.images {
        if !p.exists() {
            return Err(usage(format!("{}: no such file", p.display())));
        }
    }
    let (_, weights) = a.backbone.load_weights(arch)?;
    let dev = device(a.backbone.device)?;
    let model = Backbone::load(arch, &weights, true, &dev).context("these weights have no ImageNet classifier (`fc`/`_fc`), so `classify` cannot run; `extract` only needs the features")?;
    let cfg = model.config().preprocess.clone();
    let s = cfg.input_size as usize;
    let limits = DecodeLimits::default();
    let mut out = Vec::new();
    let mut failed = 0;
    for chunk in a.images.chunks(a.batch_size as usize) {
        let inputs: Vec<_> = chunk
            .par_iter()
            .map(|p| eval_input_from_file(p, &cfg, &limits).map_err(|e| e.to_string()))
            .collect();
        let ok: Vec<&[f32]> = inputs
            .iter()
            .filter_map(|r| r.as_ref().ok().map(|v| v.as_slice()))
            .collect();
        let mut probs = if ok.is_empty() {
            Vec::new()
        } else {
            let x = Tensor::from_vec(ok.concat(), (ok.len(), 3, s, s), &Device::Cpu)?;
            let (_, logits) = model.forward(&x)?;
            let logits = logits.context("no classifier")?.to_device(&Device::Cpu)?;
            candle_core::Tensor::to_vec2::<f32>(&softmax(&logits)?)?
        }
        .into_iter();
        for (p, r) in chunk.iter().zip(inputs) {
            match r {
                Err(e) => {
                    failed += 1;
                    out.push(json!({"path": p.display().to_string(), "error": e}));
                }
                Ok(_) => {
                    let pr = probs.next().unwrap_or_default();
                    let mut idx: Vec<usize> = (0..pr.len()).collect();
                    idx.sort_by(|&x, &y| pr[y].total_cmp(&pr[x]));
                    let top: Vec<_> = idx
                        .into_iter()
                        .take(a.top_k as usize)
                        .map(|i| json!({"index": i, "label": class_name(i), "score": pr[i]}))
                        .collect();
                    out.push(json!({"path": p.display().to_string(), "top": top}));
                }
            }
        }
    }
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

fn softmax(t: &Tensor) -> candle_core::Result<Tensor> {
    let max = t.max_keepdim(1)?;
    let e = t.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(1)?)
}
