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

/// An error that carries its own `fix:` line (for errors whose fix needs what the command knows).
#[derive(Debug)]
pub struct WithFix {
    /// The error.
    pub error: anyhow::Error,
    /// What to do.
    pub fix: String,
}

impl std::fmt::Display for WithFix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for WithFix {}

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

pub use headstart_backbone::DeviceChoice;
use headstart_backbone::Precision;

/// Parses `--device` (auto, cpu, cuda, cuda:N).
pub fn parse_device(s: &str) -> std::result::Result<DeviceChoice, String> {
    s.parse()
}

/// Parses `--dtype` (f32, f16, bf16).
pub fn parse_precision(s: &str) -> std::result::Result<Precision, String> {
    Precision::ALL
        .into_iter()
        .find(|p| p.name() == s)
        .ok_or_else(|| format!("'{s}' is not a dtype: use f32, f16 or bf16"))
}

/// Opens the chosen device; `auto` on a CUDA build without a usable GPU says on stderr that it
/// runs on the CPU, and why.
pub fn device(choice: DeviceChoice) -> Result<Device> {
    let (dev, note) = headstart_backbone::device::open(choice)?;
    if let Some(n) = note {
        eprintln!("note: {n}");
    }
    Ok(dev)
}

/// `cpu` or `cuda:N (GPU name)`.
pub fn device_name(dev: &Device) -> String {
    match dev.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => {
            let name = headstart_backbone::device::cuda_status()
                .gpus
                .get(gpu_id)
                .map(|g| format!(" ({})", g.name))
                .unwrap_or_default();
            format!("cuda:{gpu_id}{name}")
        }
        other => format!("{other:?}"),
    }
}

/// The default batch: 32 on the CPU (more only costs memory there), 256 on a GPU.
pub fn default_batch(dev: &Device) -> usize {
    if dev.is_cpu() {
        32
    } else {
        256
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
}

/// `--threads`, on the commands whose speed it sets.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct Threads {
    /// Worker threads for decoding, the CPU forward pass and training (default: all cores).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
}

impl Threads {
    /// Sizes the thread pools; call before anything runs in parallel. More than 4 threads per
    /// core never helps: the count is capped there (said on stderr). A count the machine cannot
    /// start (an address-space or process limit) is an error here, not a panic in a pool later.
    pub fn apply(self) -> Result<()> {
        let Some(asked) = self.threads else {
            return Ok(());
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let n = (asked as usize).min(4 * cores);
        if n < asked as usize {
            eprintln!("note: --threads {asked}: this machine has {cores} cores; using {n}");
        }
        // rayon's pool and candle's take n threads each: check that 2n can start.
        let probes: Vec<_> = (0..2 * n)
            .map(|_| {
                std::thread::Builder::new()
                    .spawn(|| std::thread::park_timeout(std::time::Duration::from_millis(50)))
            })
            .collect();
        let failed = probes.iter().filter(|p| p.is_err()).count();
        for p in probes.into_iter().flatten() {
            p.thread().unpark();
            let _ = p.join();
        }
        if failed > 0 {
            return Err(usage(format!(
                "--threads {asked}: this process cannot start {} threads (a limit on processes or address space); use fewer",
                2 * n
            )));
        }
        // Called first thing in a command, before any other pool exists; candle's matmul reads
        // the same variable.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| {
                usage(format!(
                    "--threads {asked}: cannot start the thread pool ({e})"
                ))
            })
    }
}

/// Where and in which precision the network runs (the commands that run it).
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub threads: Threads,
    /// Where to run the network: auto (a CUDA GPU when this build has CUDA and one is usable,
    /// else the CPU, said on stderr), cpu, cuda or cuda:N. `headstart devices` shows what is
    /// there.
    #[arg(long, default_value = "auto", value_parser = parse_device, value_name = "DEVICE")]
    pub device: DeviceChoice,
    /// Precision of the forward pass: f32 (exact: within 1e-4 of PyTorch), or on a GPU f16 or
    /// bf16 (faster; features move by ~1e-3 (f16) / ~1e-2 (bf16) relative, see docs/gpu.md).
    /// Recorded in the cache and the head, so precisions are never mixed.
    #[arg(long, default_value = "f32", value_parser = parse_precision, value_name = "DTYPE")]
    pub dtype: Precision,
}

impl RunArgs {
    /// Opens the device, refusing reduced precision where it cannot run.
    pub fn open(&self) -> Result<Device> {
        if !self.dtype.is_f32() && self.device == DeviceChoice::Cpu {
            return Err(usage(format!(
                "--dtype {}: reduced precision runs on a GPU (--device cuda); on the CPU the forward pass is f32{}",
                self.dtype,
                if self.dtype == Precision::F16 {
                    " (to store the features as f16, use --storage-dtype f16)"
                } else {
                    ""
                }
            )));
        }
        let dev = device(self.device)?;
        if !self.dtype.is_f32() && dev.is_cpu() {
            return Err(usage(format!(
                "--dtype {}: no GPU is usable, and on the CPU the forward pass is f32 (drop --dtype, or see `headstart devices`)",
                self.dtype
            )));
        }
        Ok(dev)
    }
}

impl BackboneArgs {
    /// Opens the device `run` names and builds the backbone from `weights` there.
    pub fn backbone(
        &self,
        run: &RunArgs,
        arch: Architecture,
        weights: &WeightMap,
        with_classifier: bool,
    ) -> Result<headstart_backbone::Backbone> {
        let dev = run.open()?;
        Ok(headstart_backbone::Backbone::load_with(
            arch,
            weights,
            &dev,
            &headstart_backbone::BackboneOptions {
                with_classifier,
                engine: headstart_backbone::Engine::Auto,
                precision: run.dtype,
            },
        )?)
    }

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
