//! Times the forward pass: `cargo run --release -p headstart-backbone --example forward_timing -- WEIGHTS ARCH BATCH`.

use std::time::Instant;

use candle_core::{Device, Tensor};
use headstart_backbone::weights::WeightMap;
use headstart_backbone::{Architecture, Backbone};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let weights = args
        .get(1)
        .ok_or("usage: forward_timing WEIGHTS [ARCH] [BATCH] [PHOTO_DIR]")?;
    let arch = Architecture::from_name(args.get(2).map(String::as_str).unwrap_or("resnet18"))?;
    let batch: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(32);
    let w = WeightMap::from_file(std::path::Path::new(weights), None)?;
    let model = Backbone::load(arch, &w, false, &Device::Cpu)?;
    // Optional 4th argument: a folder of photos to use as the batch (else random pixels).
    let x = match args.get(4) {
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
    model.features(&x)?; // warm-up
    let reps = 3;
    let t = Instant::now();
    for _ in 0..reps {
        model.features(&x)?;
    }
    let s = t.elapsed().as_secs_f64() / reps as f64;
    println!(
        "{arch}: batch {batch}: {:.3} s per batch, {:.1} images/s",
        s,
        batch as f64 / s
    );
    Ok(())
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
