//! Times the forward pass to pooled features:
//! `cargo run --release -p headstart-backbone --example forward_timing -- WEIGHTS [ARCH] [BATCH] [PHOTO_DIR] [--reps N] [--json]`
//! (WEIGHTS `random`: random hub-named weights of a transformer's hub sizes).
//!
//! Two warm-up batches, then `--reps` timed repetitions (default 5), each of at least 32
//! images (`ceil(32 / BATCH)` batches); prints images/s as median, min and max. With PHOTO_DIR
//! the batch is made of real photos through the eval transform, else random pixels.

use std::time::Instant;

use candle_core::{Device, Tensor};
use headstart_backbone::weights::WeightMap;
use headstart_backbone::{Architecture, Backbone};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The allocator settings the `headstart` binary uses (crates/cli/src/common.rs): large
    // temporaries reuse the heap instead of fresh, page-faulting mmaps.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let json = take_flag(&mut args, "--json");
    let reps: usize = take_value(&mut args, "--reps")?.unwrap_or(5).max(1);
    let weights = args
        .first()
        .ok_or("usage: forward_timing WEIGHTS [ARCH] [BATCH] [PHOTO_DIR] [--reps N] [--json]")?;
    let arch = Architecture::from_name(args.get(1).map(String::as_str).unwrap_or("resnet18"))?;
    let batch: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(32);
    // `random`: hub-named random weights of the named model's sizes (speed does not depend on
    // the values), for the transformers whose real weights this machine cannot download.
    let w = if weights == "random" {
        let sizes = headstart_backbone::models::vit::VitConfig::builtin(arch)
            .ok_or("random weights are for the transformer backbones")?;
        let tensors = headstart_backbone::models::vit::hub_tensor_shapes(&sizes)
            .into_iter()
            .map(|(k, s)| Ok((k, Tensor::randn(0f32, 0.02, s.as_slice(), &Device::Cpu)?)))
            .collect::<Result<Vec<_>, candle_core::Error>>()?;
        WeightMap::from_tensors(tensors, "random".into(), None)?
    } else {
        WeightMap::from_file(std::path::Path::new(weights), None)?
    };
    let model = Backbone::load(arch, &w, false, &Device::Cpu)?;
    let x = match args.get(3) {
        Some(dir) => {
            let cfg = arch.config().preprocess;
            let mut files: Vec<_> = walk(std::path::Path::new(dir))?;
            files.sort();
            let mut v = Vec::new();
            for f in files.iter().cycle().take(batch) {
                let b = std::fs::read(f)?;
                v.extend(headstart_backbone::preprocess::eval_input(
                    &b,
                    &cfg,
                    &Default::default(),
                )?);
            }
            Tensor::from_vec(v, (batch, 3, 224, 224), &Device::Cpu)?
        }
        None => Tensor::randn(0f32, 1., (batch, 3, 224, 224), &Device::Cpu)?,
    };
    for _ in 0..2 {
        model.features(&x)?;
    }
    let iters = 32usize.div_ceil(batch);
    let mut rates = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        for _ in 0..iters {
            model.features(&x)?;
        }
        rates.push((iters * batch) as f64 / t.elapsed().as_secs_f64());
    }
    rates.sort_by(|a, b| a.total_cmp(b));
    let median = if reps % 2 == 1 {
        rates[reps / 2]
    } else {
        (rates[reps / 2 - 1] + rates[reps / 2]) / 2.0
    };
    let (min, max) = (rates[0], rates[reps - 1]);
    if json {
        println!(
            "{{\"arch\":\"{arch}\",\"batch\":{batch},\"reps\":{reps},\"median\":{median:.2},\"min\":{min:.2},\"max\":{max:.2}}}"
        );
    } else {
        println!(
            "{arch}: batch {batch}: {median:.1} images/s (median of {reps}; min {min:.1}, max {max:.1})"
        );
    }
    Ok(())
}

fn take_flag(args: &mut Vec<String>, flag: &str) -> bool {
    let before = args.len();
    args.retain(|a| a != flag);
    args.len() != before
}

fn take_value(
    args: &mut Vec<String>,
    flag: &str,
) -> Result<Option<usize>, Box<dyn std::error::Error>> {
    match args.iter().position(|a| a == flag) {
        Some(i) if i + 1 < args.len() => {
            let v = args.remove(i + 1).parse()?;
            args.remove(i);
            Ok(Some(v))
        }
        Some(_) => Err(format!("{flag} needs a value").into()),
        None => Ok(None),
    }
}

fn walk(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}
