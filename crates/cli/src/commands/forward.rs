//! `headstart forward`: the backbone on tensors from a file, for parity checks against PyTorch.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use serde_json::json;

use crate::common::{
    default_batch, output_file, print_json, require_file, usage, BackboneArgs, RunArgs,
};

/// Run the backbone on preprocessed image tensors read from a .safetensors file and write the
/// features: the check that headstart computes what PyTorch computes, on identical inputs
/// (save `x` [N, 3, H, W] from Python with `safetensors.torch.save_file({"input": x}, "in.st")`,
/// then compare `input.features` with your model's output).
///
/// Example: headstart forward --backbone resnet18 --weights w.safetensors --input in.st --out out.st
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    backbone: BackboneArgs,
    #[command(flatten)]
    run: RunArgs,
    /// The .safetensors file holding the inputs.
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// Names of the tensors to run (default: every [N, 3, H, W] tensor in the file).
    #[arg(long = "tensor", value_name = "NAME")]
    tensors: Vec<String>,
    /// Where to write `<name>.features` [N, D] (f32), and `<name>.logits` with --logits.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Also the ImageNet logits (CNNs with their classifier).
    #[arg(long)]
    logits: bool,
    /// Rows per forward pass [default: 32 on the CPU, 256 on a GPU].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: Option<u32>,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub fn run(a: Args) -> Result<()> {
    a.run.threads.apply()?;
    require_file(&a.input, "--input")?;
    output_file(&a.out, "--out")?;
    let arch = a.backbone.architecture()?;
    let inputs = candle_core::safetensors::load(&a.input, &Device::Cpu).with_context(|| {
        format!(
            "--input {}: not a readable .safetensors file",
            a.input.display()
        )
    })?;
    let mut names: Vec<String> = if a.tensors.is_empty() {
        inputs
            .iter()
            .filter(|(_, t)| t.rank() == 4 && t.dim(1).ok() == Some(3))
            .map(|(k, _)| k.clone())
            .collect()
    } else {
        a.tensors.clone()
    };
    names.sort();
    if names.is_empty() {
        return Err(usage(format!(
            "--input {}: no [N, 3, H, W] tensor in it (name one with --tensor)",
            a.input.display()
        )));
    }
    let (resolved, weights) = a.backbone.load_weights(arch)?;
    let model = a.backbone.backbone(&a.run, arch, &weights, a.logits)?;
    drop(weights);
    let batch = a
        .batch_size
        .map_or_else(|| default_batch(model.device()), |b| b as usize);
    let mut out: HashMap<String, Tensor> = HashMap::new();
    let mut summary = Vec::new();
    for name in &names {
        let x = inputs
            .get(name)
            .ok_or_else(|| usage(format!("--tensor {name}: not in {}", a.input.display())))?
            .to_dtype(DType::F32)?;
        let (n, c, _, _) = x.dims4().map_err(|_| {
            usage(format!(
                "--tensor {name}: expected [N, 3, H, W], found {:?}",
                x.dims()
            ))
        })?;
        if c != 3 {
            return Err(usage(format!("--tensor {name}: {c} channels, expected 3")));
        }
        let mut feats = Vec::new();
        let mut logits = Vec::new();
        for i0 in (0..n).step_by(batch) {
            let xb = x.narrow(0, i0, batch.min(n - i0))?;
            let (f, l) = model.forward(&xb)?;
            feats.push(f.to_device(&Device::Cpu)?.to_dtype(DType::F32)?);
            if let Some(l) = l.filter(|_| a.logits) {
                logits.push(l.to_device(&Device::Cpu)?.to_dtype(DType::F32)?);
            }
        }
        let f = Tensor::cat(&feats, 0)?;
        summary.push(json!({"tensor": name, "rows": n, "features": f.dim(1)?}));
        out.insert(format!("{name}.features"), f);
        if !logits.is_empty() {
            out.insert(format!("{name}.logits"), Tensor::cat(&logits, 0)?);
        }
    }
    candle_core::safetensors::save(&out, &a.out)
        .with_context(|| format!("--out {}: cannot write", a.out.display()))?;
    if a.json {
        print_json(&json!({
            "backbone": arch.name(),
            "weights_sha256": resolved.sha256,
            "device": crate::common::device_name(model.device()),
            "dtype": a.run.dtype.name(),
            "out": a.out,
            "tensors": summary,
        }))?;
    } else {
        for s in &summary {
            println!(
                "{}: {} rows → {}.features [{}, {}]",
                s["tensor"].as_str().unwrap_or(""),
                s["rows"],
                s["tensor"].as_str().unwrap_or(""),
                s["rows"],
                s["features"]
            );
        }
        println!("→ {}", a.out.display());
    }
    Ok(())
}
