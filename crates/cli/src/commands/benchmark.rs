//! `headstart benchmark`: forward-pass throughput on this machine.

use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use headstart_backbone::device::{peak_memory, reset_peak_memory, synchronize};
use serde_json::json;

use crate::common::{device_name, print_json, BackboneArgs, RunArgs};

/// Time the backbone's forward pass at each batch size, the way `extract` runs it: a batch of
/// random 224×224 pixels copied to the device, the forward pass, the pooled features copied
/// back. Prints images/s (median, min and max of --reps repetitions, after --warmup batches)
/// and, on a GPU, the peak device memory.
///
/// Example: headstart benchmark --backbone resnet18 --weights w.safetensors --device cuda --batch-sizes 64,256 --dtype bf16
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    backbone: BackboneArgs,
    #[command(flatten)]
    run: RunArgs,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "32", value_parser = clap::value_parser!(u32).range(1..=65536))]
    batch_sizes: Vec<u32>,
    /// Timed repetitions per batch size.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    reps: u32,
    /// Untimed batches before timing (kernel loading, allocator warm-up).
    #[arg(long, default_value_t = 2)]
    warmup: u32,
    /// Images timed per repetition at least (small batches run several forwards).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    min_images: u32,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub fn run(a: Args) -> Result<()> {
    a.run.threads.apply()?;
    let arch = a.backbone.architecture()?;
    let (_, weights) = a.backbone.load_weights(arch)?;
    let model = a.backbone.backbone(&a.run, arch, &weights, false)?;
    drop(weights);
    let side = model.config().preprocess.input_size as usize;
    let dev = model.device().clone();
    let mut rows = Vec::new();
    for &batch in &a.batch_sizes {
        let batch = batch as usize;
        let x = Tensor::randn(0f32, 1., (batch, 3, side, side), &Device::Cpu)?;
        let step = || -> Result<()> {
            let f = model.features(&x)?;
            f.to_device(&Device::Cpu)?
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            Ok(())
        };
        for _ in 0..a.warmup {
            step()?;
        }
        synchronize(&dev)?;
        reset_peak_memory(&dev);
        let iters = (a.min_images as usize).div_ceil(batch).max(1);
        let mut rates = Vec::with_capacity(a.reps as usize);
        for _ in 0..a.reps {
            let t = Instant::now();
            for _ in 0..iters {
                step()?;
            }
            synchronize(&dev)?;
            rates.push((iters * batch) as f64 / t.elapsed().as_secs_f64());
        }
        rates.sort_by(|p, q| p.total_cmp(q));
        let n = rates.len();
        let median = if n % 2 == 1 {
            rates[n / 2]
        } else {
            (rates[n / 2 - 1] + rates[n / 2]) / 2.0
        };
        rows.push(json!({
            "batch": batch,
            "images_per_rep": iters * batch,
            "median": median,
            "min": rates[0],
            "max": rates[n - 1],
            "peak_memory_bytes": peak_memory(&dev),
        }));
    }
    let result = json!({
        "backbone": arch.name(),
        "device": device_name(&dev),
        "dtype": a.run.dtype.name(),
        "reps": a.reps,
        "results": rows,
    });
    if a.json {
        return print_json(&result);
    }
    println!(
        "{} on {} ({}), images/s, median of {} (min–max):",
        arch.name(),
        device_name(&dev),
        a.run.dtype,
        a.reps
    );
    for r in result["results"].as_array().into_iter().flatten() {
        let mem = r["peak_memory_bytes"]
            .as_u64()
            .map(|b| format!(", peak memory {:.2} GiB", b as f64 / (1u64 << 30) as f64))
            .unwrap_or_default();
        println!(
            "  batch {:>5}: {:>9.1}  ({:.1}–{:.1}){mem}",
            r["batch"],
            r["median"].as_f64().unwrap_or(0.0),
            r["min"].as_f64().unwrap_or(0.0),
            r["max"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}
