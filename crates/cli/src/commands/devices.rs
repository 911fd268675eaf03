//! `headstart devices`: what this binary was built with and what it can run on now.

use anyhow::Result;
use headstart_backbone::device::{build_info, cuda_status};
use serde_json::json;

use crate::common::print_json;

/// Show what this headstart was built with (CPU; CUDA version and compute capability when
/// built with CUDA) and what it can open now (each GPU's name, memory and driver), like
/// `torch.cuda.is_available()` and `nvidia-smi` in one. When CUDA cannot be used, says which of
/// driver, library or GPU is missing and how to fix it; `--device auto` then runs on the CPU.
///
/// Exit status 0 either way (use `--json` and its "auto" key in scripts).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print one JSON object: {"build": {"cuda", "cuda_version", "compute_capability", …},
    /// "cuda": {"driver_cuda_version", "gpus": [{"index", "name", "compute_capability",
    /// "memory_total_bytes", "memory_free_bytes", "usable"}], "problem", "message"},
    /// "cpu": {"threads"}, "auto": "cuda:0" | "cpu"}.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub fn run(a: Args) -> Result<()> {
    let build = build_info();
    let cuda = cuda_status();
    let threads = rayon::current_num_threads();
    let auto = if cuda.available() {
        cuda.gpus
            .iter()
            .find(|g| g.usable)
            .map(|g| format!("cuda:{}", g.index))
            .unwrap_or_else(|| "cpu".into())
    } else {
        "cpu".into()
    };
    if a.json {
        return print_json(&json!({
            "build": build,
            "cuda": cuda,
            "cpu": {"threads": threads},
            "auto": auto,
        }));
    }
    let built = if build.cuda {
        format!(
            "cpu + cuda (CUDA {}, kernels for compute capability {} and newer{})",
            build.cuda_version.as_deref().unwrap_or("?"),
            build.compute_capability.as_deref().unwrap_or("?"),
            if build.loader_shim {
                "; NVIDIA libraries loaded at run time through libheadstart_cuda_shim.so"
            } else {
                ""
            }
        )
    } else {
        "cpu only (build the CUDA one with `just build-cuda`)".into()
    };
    println!("build     {built}");
    println!("cpu       {threads} threads");
    if let Some(d) = &cuda.driver_cuda_version {
        println!("driver    CUDA {d}");
    }
    for g in &cuda.gpus {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        println!(
            "cuda:{}    {}, compute capability {}, {:.1} GiB ({:.1} GiB free){}",
            g.index,
            g.name,
            g.compute_capability,
            gib(g.memory_total_bytes),
            gib(g.memory_free_bytes),
            if g.usable {
                String::new()
            } else {
                format!(
                    " — not usable: this build's kernels need {}",
                    build.compute_capability.as_deref().unwrap_or("?")
                )
            }
        );
    }
    if let Some(m) = &cuda.message {
        println!("cuda      unavailable: {m}");
    }
    println!("auto      → {auto}");
    Ok(())
}
