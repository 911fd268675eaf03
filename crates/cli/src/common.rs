//! Pieces shared by the subcommands: usage errors (exit code 2), the allocator, devices, weights.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::Device;
use headstart_backbone::weights::{resolve_weights, ResolvedWeights, WeightMap};
use headstart_backbone::Architecture;

/// A bad command-line value: reported like clap's own errors, with exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Builds a usage error.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// Keeps freed buffers in the process: glibc otherwise returns big activation buffers to the OS
/// after every batch and page-faults them back in on the next one.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Where the forward pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum DeviceChoice {
    /// CUDA when compiled in and available, else CPU (the tutorial's behaviour).
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// The first CUDA GPU (needs a build with `--features cuda`).
    Cuda,
}

/// Opens the chosen device.
pub fn device(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto => Ok(if candle_core::utils::cuda_is_available() {
            Device::new_cuda(0).unwrap_or(Device::Cpu)
        } else {
            Device::Cpu
        }),
        DeviceChoice::Cuda => {
            if !candle_core::utils::cuda_is_available() {
                return Err(usage("--device cuda: this headstart was built without CUDA support; rebuild with `cargo build --release --features cuda`"));
            }
            Device::new_cuda(0).context("opening CUDA device 0")
        }
    }
}

/// Options that pick a backbone and its weights.
#[derive(Debug, Clone, clap::Args)]
pub struct BackboneArgs {
    /// Backbone: resnet18, resnet34, resnet50, efficientnet-lite0 (ImageNet CNNs), dinov2-small,
    /// dinov2-base, dinov2-large (self-supervised ViTs, features = CLS ‖ mean of patch tokens)
    /// or clip-vit-b32, clip-vit-b16, clip-vit-l14 (CLIP image embeddings).
    #[arg(long, default_value = "resnet18", value_name = "NAME")]
    pub backbone: String,
    /// Weights file (.safetensors, or .pth from torch.save in zip or legacy format). Without it,
    /// the Hugging Face cache, the torch hub cache, then the hub are tried. For DINOv2 and CLIP,
    /// a Hugging Face `config.json` in the same folder sets the model's sizes (so any checkpoint
    /// of the family loads); without one, the named hub model's sizes are used.
    #[arg(long, value_name = "PATH")]
    pub weights: Option<PathBuf>,
    /// Key prefix to strip from the weights' tensor names (default: strip `module.`,
    /// `backbone.`, `model.` or `encoder.` when every name has it).
    #[arg(long, value_name = "PREFIX")]
    pub weights_prefix: Option<String>,
    /// Where to run the network.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
}

impl BackboneArgs {
    /// The architecture, or a usage error listing the valid names.
    pub fn architecture(&self) -> Result<Architecture> {
        Architecture::from_name(&self.backbone).map_err(|e| usage(e.to_string()))
    }

    /// Resolves and reads the weights.
    pub fn load_weights(&self, arch: Architecture) -> Result<(ResolvedWeights, WeightMap)> {
        if let Some(p) = &self.weights {
            require_file(p, "--weights")?;
        }
        let resolved = resolve_weights(arch, self.weights.as_deref())?;
        let map = WeightMap::from_file(&resolved.path, self.weights_prefix.as_deref())?;
        Ok((resolved, map))
    }
}

/// A usage error unless `p` is an existing file.
pub fn require_file(p: &Path, what: &str) -> Result<()> {
    if !p.exists() {
        return Err(usage(format!("{what} {}: no such file", p.display())));
    }
    if p.is_dir() {
        return Err(usage(format!(
            "{what} {}: is a directory, expected a file",
            p.display()
        )));
    }
    Ok(())
}

/// A usage error unless `p` is an existing directory.
/// Checks that `p` can be an output file: not a directory, in a folder that exists (a usage
/// error otherwise, before any work is done).
pub fn output_file(p: &Path, what: &str) -> Result<()> {
    if p.is_dir() {
        return Err(usage(format!(
            "{what} {}: is a directory, expected a file path",
            p.display()
        )));
    }
    if let Some(parent) = p.parent().filter(|p| !p.as_os_str().is_empty()) {
        require_dir(parent, &format!("{what} folder"))?;
    }
    Ok(())
}

/// Checks that `p` is an existing directory (a usage error otherwise).
pub fn require_dir(p: &Path, what: &str) -> Result<()> {
    if !p.exists() {
        return Err(usage(format!("{what} {}: no such directory", p.display())));
    }
    if !p.is_dir() {
        return Err(usage(format!(
            "{what} {}: is a file, expected a directory",
            p.display()
        )));
    }
    Ok(())
}

/// Creates an output directory; a usage error if the path is an existing file.
pub fn output_dir(p: &Path, what: &str) -> Result<()> {
    if p.exists() && !p.is_dir() {
        return Err(usage(format!(
            "{what} {}: is a file, expected a directory (or a path to create)",
            p.display()
        )));
    }
    std::fs::create_dir_all(p).with_context(|| {
        format!(
            "{what} {}: cannot create the directory (check write permission)",
            p.display()
        )
    })
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}
