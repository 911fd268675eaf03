//! `headstart weights`: where the weights come from.

use anyhow::Result;
use serde_json::json;

use crate::common::{print_json, BackboneArgs};

/// Show where a backbone's weights come from, their sha256 and tensor count.
///
/// Resolution order (offline first): --weights PATH; the Hugging Face cache ($HF_HOME, default
/// ~/.cache/huggingface); the torch hub cache ($TORCH_HOME/hub/checkpoints, default
/// ~/.cache/torch); a download from the Hugging Face hub ($HF_ENDPOINT), skipped when
/// HF_HUB_OFFLINE=1.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    backbone: BackboneArgs,
    /// Print a JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub fn run(a: Args) -> Result<()> {
    let arch = a.backbone.architecture()?;
    let (resolved, map) = a.backbone.load_weights(arch)?;
    // Build the network from them (candle ops: cheap, no engine transforms): a file for another
    // architecture fails here, naming the tensor and both shapes.
    let model = headstart_backbone::Backbone::load_with_engine(
        arch,
        &map,
        false,
        &candle_core::Device::Cpu,
        headstart_backbone::Engine::Candle,
    )?;
    let cfg = model.config();
    if a.json {
        print_json(&json!({
            "backbone": arch.name(),
            "source": resolved.source.to_string(),
            "path": resolved.path,
            "sha256": resolved.sha256,
            "tensors": map.file_tensors,
            "model_tensors": map.len(),
            "stripped_prefix": map.stripped_prefix,
            "fits": true,
            "feature_dim": cfg.feature_dim,
            "sizes": cfg.sizes,
            "config_json": map.config_path,
        }))
    } else {
        println!("backbone  {}", arch.name());
        println!("source    {}", resolved.source);
        println!("path      {}", resolved.path.display());
        println!("sha256    {}", resolved.sha256);
        println!(
            "tensors   {} ({} without num_batches_tracked)",
            map.file_tensors,
            map.len()
        );
        if !map.stripped_prefix.is_empty() {
            println!("prefix    {} (stripped)", map.stripped_prefix);
        }
        println!(
            "fits      yes: every tensor {} needs is there, with its shape",
            arch.name()
        );
        println!("features  {} wide", cfg.feature_dim);
        if let Some(sizes) = &cfg.sizes {
            let from = match &map.config_path {
                Some(p) => format!("from {}", p.display()),
                None => format!(
                    "the hub model's ({} has no config.json beside it)",
                    resolved.path.display()
                ),
            };
            println!("sizes     {sizes} ({from})");
        }
        Ok(())
    }
}
