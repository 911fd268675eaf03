//! Where the forward pass runs: what this build can use (CPU; CUDA when compiled in), what the
//! machine offers now, and opening a device with an error that says what is missing — the
//! driver, a CUDA library, or a GPU — instead of a panic.
//!
//! A CUDA build made by `just build-cuda` links the NVIDIA libraries through headstart's loader
//! shim (`libheadstart_cuda_shim.so` beside the binary, an ELF auxiliary filter): the binary
//! starts without them, and [`cuda_status`] asks the dynamic loader which ones it really found
//! before anything touches the GPU.

use serde::Serialize;

use crate::{Error, Result};
use candle_core::Device;

/// A `--device` value: `auto`, `cpu`, `cuda` or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// A CUDA GPU when this build has CUDA and one can be opened, else the CPU (said on stderr
    /// by the binary).
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA GPU number N (0 for `cuda`).
    Cuda(usize),
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| {
                    format!("'{s}' is not a device: use auto, cpu, cuda or cuda:N (N = 0, 1, …)")
                }),
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// What this binary was built with.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BuildInfo {
    /// The CUDA executor is compiled in.
    pub cuda: bool,
    /// The CUDA version the kernels were compiled with (`13.0`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cuda_version: Option<String>,
    /// The compute capability the kernels were compiled for (`9.0`): GPUs of this
    /// capability or newer run them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compute_capability: Option<String>,
    /// The NVIDIA libraries are linked through headstart's loader shim.
    pub loader_shim: bool,
}

/// This build's [`BuildInfo`].
pub fn build_info() -> BuildInfo {
    BuildInfo {
        cuda: cfg!(feature = "cuda"),
        cuda_version: option_env!("HEADSTART_CUDA_VERSION").map(str::to_string),
        compute_capability: option_env!("HEADSTART_CUDA_COMPUTE_CAP").map(|c| {
            let c = c.trim_end_matches(['a', 'f']);
            match c.len() {
                2.. => format!("{}.{}", &c[..c.len() - 1], &c[c.len() - 1..]),
                _ => c.to_string(),
            }
        }),
        loader_shim: loader_shim_loaded(),
    }
}

/// One GPU the driver reports.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GpuInfo {
    /// Its number (`cuda:N`).
    pub index: usize,
    /// The driver's name for it (`NVIDIA H200`).
    pub name: String,
    /// Compute capability (`9.0`).
    pub compute_capability: String,
    /// Device memory, bytes.
    pub memory_total_bytes: u64,
    /// Free device memory now, bytes.
    pub memory_free_bytes: u64,
    /// Whether this build's kernels run on it (its capability is at least the build's).
    pub usable: bool,
}

/// Why CUDA cannot be used, in the order it is checked.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CudaProblem {
    /// This binary was built without the `cuda` feature.
    NotCompiled,
    /// The NVIDIA driver's library (libcuda.so.1) is not on this machine's loader path.
    DriverMissing,
    /// The driver is there but CUDA libraries the executor needs are not.
    LibrariesMissing {
        /// Their sonames.
        libraries: Vec<String>,
    },
    /// The driver is older than the CUDA version the binary was built with.
    DriverTooOld {
        /// The driver's CUDA version.
        driver: String,
        /// The build's.
        needed: String,
    },
    /// The driver reports no GPU (or none visible: `CUDA_VISIBLE_DEVICES`).
    NoGpu,
    /// The GPU asked for does not exist.
    NoSuchGpu {
        /// The number asked for.
        index: usize,
        /// How many there are.
        count: usize,
    },
    /// The GPU's compute capability is below the one the kernels were built for.
    GpuTooOld {
        /// The GPU's.
        gpu: String,
        /// The build's.
        built_for: String,
    },
    /// The driver failed otherwise.
    Driver {
        /// Its error.
        error: String,
    },
}

impl std::fmt::Display for CudaProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CudaProblem::NotCompiled => {
                f.write_str("this headstart was built without CUDA (the default CPU build)")
            }
            CudaProblem::DriverMissing => f.write_str(
                "no NVIDIA driver: libcuda.so.1 is not on this machine's loader path (install the NVIDIA driver; in a container, run it with the GPU exposed, e.g. `--gpus all`)",
            ),
            CudaProblem::LibrariesMissing { libraries } => write!(
                f,
                "the NVIDIA driver is installed but CUDA libraries are missing: {} (install CUDA 13's cuBLAS: `pip install nvidia-cublas` and add its nvidia/cu13/lib folder to LD_LIBRARY_PATH, or a CUDA 13 toolkit's lib64)",
                libraries.join(", ")
            ),
            CudaProblem::DriverTooOld { driver, needed } => write!(
                f,
                "the NVIDIA driver supports CUDA {driver}, this headstart was built with CUDA {needed}: update the driver"
            ),
            CudaProblem::NoGpu => f.write_str(
                "the NVIDIA driver sees no GPU (none installed, or hidden by CUDA_VISIBLE_DEVICES)",
            ),
            CudaProblem::NoSuchGpu { index, count } => write!(
                f,
                "there is no cuda:{index}: this machine has {count} GPU{} (cuda:0{})",
                if *count == 1 { "" } else { "s" },
                if *count > 1 { format!(" … cuda:{}", count - 1) } else { String::new() }
            ),
            CudaProblem::GpuTooOld { gpu, built_for } => write!(
                f,
                "the GPU has compute capability {gpu}, this headstart's kernels were built for {built_for} and newer: rebuild with `CUDA_COMPUTE_CAP={} just build-cuda`",
                gpu.replace('.', "")
            ),
            CudaProblem::Driver { error } => write!(f, "the CUDA driver failed: {error}"),
        }
    }
}

/// What CUDA offers on this machine now.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CudaStatus {
    /// The driver's CUDA version (`13.0`), when a driver was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_cuda_version: Option<String>,
    /// The GPUs.
    pub gpus: Vec<GpuInfo>,
    /// Why CUDA cannot be used, if it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<CudaProblem>,
    /// The problem in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl CudaStatus {
    fn failed(problem: CudaProblem, driver: Option<String>) -> Self {
        CudaStatus {
            driver_cuda_version: driver,
            gpus: Vec::new(),
            message: Some(problem.to_string()),
            problem: Some(problem),
        }
    }

    /// Whether a GPU can be opened.
    pub fn available(&self) -> bool {
        self.problem.is_none() && self.gpus.iter().any(|g| g.usable)
    }
}

/// The shared libraries the CUDA executor needs at run time, by soname: the driver's and
/// cuBLAS (matrix products and convolutions). The runtime (used only by candle's kernels for
/// quantized models), cuRAND (a generator candle creates with every device) and NVRTC are linked
/// too but never used by headstart: the loader shim stands in for them when they are absent.
pub const CUDA_LIBRARIES: [&str; 3] = ["libcuda.so.1", "libcublas.so.13", "libcublasLt.so.13"];

/// Whether the dynamic loader has `soname` loaded in this process.
#[cfg(all(target_os = "linux", feature = "cuda"))]
fn loaded(soname: &str) -> bool {
    let Ok(name) = std::ffi::CString::new(soname) else {
        return false;
    };
    // SAFETY: RTLD_NOLOAD never loads anything; it returns a handle only for an object already
    // in the process, which dlclose then releases (the reference dlopen added).
    unsafe {
        let h = libc::dlopen(name.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD);
        if h.is_null() {
            false
        } else {
            libc::dlclose(h);
            true
        }
    }
}

fn loader_shim_loaded() -> bool {
    #[cfg(all(target_os = "linux", feature = "cuda"))]
    {
        loaded("libheadstart_cuda_shim.so")
    }
    #[cfg(not(all(target_os = "linux", feature = "cuda")))]
    {
        false
    }
}

/// What CUDA offers now: driver, libraries, GPUs. Never panics; cheap after the first call.
pub fn cuda_status() -> CudaStatus {
    #[cfg(not(feature = "cuda"))]
    {
        CudaStatus::failed(CudaProblem::NotCompiled, None)
    }
    #[cfg(feature = "cuda")]
    {
        static STATUS: std::sync::OnceLock<CudaStatus> = std::sync::OnceLock::new();
        STATUS.get_or_init(probe).clone()
    }
}

#[cfg(feature = "cuda")]
fn probe() -> CudaStatus {
    use candle_core::cuda_backend::cudarc::driver::{result, CudaContext};

    // With the loader shim, a library the loader did not find is served by the shim's stubs:
    // look before calling anything.
    #[cfg(target_os = "linux")]
    if loader_shim_loaded() {
        if !loaded("libcuda.so.1") {
            return CudaStatus::failed(CudaProblem::DriverMissing, None);
        }
        let missing: Vec<String> = CUDA_LIBRARIES[1..]
            .iter()
            .filter(|l| !loaded(l))
            .map(|l| l.to_string())
            .collect();
        if !missing.is_empty() {
            return CudaStatus::failed(
                CudaProblem::LibrariesMissing { libraries: missing },
                driver_version(),
            );
        }
    }
    let driver = driver_version();
    if let Err(e) = result::init() {
        // 100 CUDA_ERROR_NO_DEVICE, 34 CUDA_ERROR_STUB_LIBRARY, 35 CUDA_ERROR_INSUFFICIENT_DRIVER.
        let problem = match e.0 as i32 {
            100 => CudaProblem::NoGpu,
            34 => CudaProblem::DriverMissing,
            35 => CudaProblem::DriverTooOld {
                driver: driver.clone().unwrap_or_else(|| "?".into()),
                needed: build_info().cuda_version.unwrap_or_else(|| "?".into()),
            },
            _ => CudaProblem::Driver {
                error: format!("{e:?}"),
            },
        };
        return CudaStatus::failed(problem, driver);
    }
    if let (Some(d), Some(b)) = (&driver, build_info().cuda_version) {
        if version_key(d) < version_key(&b) {
            return CudaStatus::failed(
                CudaProblem::DriverTooOld {
                    driver: d.clone(),
                    needed: b,
                },
                driver,
            );
        }
    }
    let count = match result::device::get_count() {
        Ok(n) => n.max(0) as usize,
        Err(e) => {
            return CudaStatus::failed(
                CudaProblem::Driver {
                    error: format!("{e:?}"),
                },
                driver,
            )
        }
    };
    if count == 0 {
        return CudaStatus::failed(CudaProblem::NoGpu, driver);
    }
    let built_for = build_info().compute_capability;
    let mut gpus = Vec::with_capacity(count);
    for index in 0..count {
        let info = CudaContext::new(index).and_then(|ctx| {
            let (major, minor) = ctx.compute_capability()?;
            let (free, total) = ctx.mem_get_info()?;
            Ok((ctx.name()?, major, minor, free, total))
        });
        match info {
            Ok((name, major, minor, free, total)) => {
                let cap = format!("{major}.{minor}");
                gpus.push(GpuInfo {
                    index,
                    name,
                    usable: built_for
                        .as_deref()
                        .is_none_or(|b| version_key(&cap) >= version_key(b)),
                    compute_capability: cap,
                    memory_total_bytes: total as u64,
                    memory_free_bytes: free as u64,
                });
            }
            Err(e) => {
                return CudaStatus::failed(
                    CudaProblem::Driver {
                        error: format!("opening cuda:{index}: {e:?}"),
                    },
                    driver,
                )
            }
        }
    }
    CudaStatus {
        driver_cuda_version: driver,
        gpus,
        problem: None,
        message: None,
    }
}

/// The driver's CUDA version, `12.4` style.
#[cfg(feature = "cuda")]
fn driver_version() -> Option<String> {
    use candle_core::cuda_backend::cudarc::driver::sys;
    let mut v = 0i32;
    // SAFETY: cuDriverGetVersion writes one int and needs no initialisation.
    let r = unsafe { sys::cuDriverGetVersion(&mut v) };
    (r == sys::cudaError_enum::CUDA_SUCCESS && v > 0)
        .then(|| format!("{}.{}", v / 1000, (v % 1000) / 10))
}

/// `major.minor` as a comparable pair.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn version_key(v: &str) -> (u32, u32) {
    let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// The device `choice` names, opened. With [`DeviceChoice::Auto`] a GPU that cannot be
/// opened falls back to the CPU, and the reason comes back as the second value (for the caller
/// to print); an explicit `cuda` that cannot be opened is an [`Error::Cuda`].
pub fn open(choice: DeviceChoice) -> Result<(Device, Option<String>)> {
    match choice {
        DeviceChoice::Cpu => Ok((Device::Cpu, None)),
        DeviceChoice::Auto => {
            if !cfg!(feature = "cuda") {
                return Ok((Device::Cpu, None));
            }
            match open_cuda(0) {
                Ok(d) => Ok((d, None)),
                Err(e) => Ok((Device::Cpu, Some(format!("running on the CPU: {e}")))),
            }
        }
        DeviceChoice::Cuda(i) => Ok((open_cuda(i)?, None)),
    }
}

/// Opens `cuda:index` after checking driver, libraries and GPU. TF32 stays off: f32 matrix
/// products are exact f32 (TF32 keeps 10 bits of mantissa and moves features by ~1e-3, beyond
/// the 1e-4 parity target).
fn open_cuda(index: usize) -> Result<Device> {
    let status = cuda_status();
    if let Some(p) = status.problem {
        return Err(Error::Cuda(p));
    }
    let Some(gpu) = status.gpus.get(index) else {
        return Err(Error::Cuda(CudaProblem::NoSuchGpu {
            index,
            count: status.gpus.len(),
        }));
    };
    if !gpu.usable {
        return Err(Error::Cuda(CudaProblem::GpuTooOld {
            gpu: gpu.compute_capability.clone(),
            built_for: build_info().compute_capability.unwrap_or_default(),
        }));
    }
    #[cfg(feature = "cuda")]
    candle_core::cuda_backend::set_gemm_reduced_precision_f32(false);
    Device::new_cuda(index).map_err(|e| {
        Error::Cuda(CudaProblem::Driver {
            error: format!("opening cuda:{index}: {e}"),
        })
    })
}

/// The most device memory the GPU's allocator pool has held at once since the last
/// [`reset_peak_memory`] (like `torch.cuda.max_memory_allocated`), in bytes; `None` on the CPU
/// or where the driver has no memory pools.
pub fn peak_memory(device: &Device) -> Option<u64> {
    #[cfg(feature = "cuda")]
    if let candle_core::DeviceLocation::Cuda { gpu_id } = device.location() {
        return pool_attribute(gpu_id, None);
    }
    let _ = device;
    None
}

/// Starts a new [`peak_memory`] measurement.
pub fn reset_peak_memory(device: &Device) {
    #[cfg(feature = "cuda")]
    if let candle_core::DeviceLocation::Cuda { gpu_id } = device.location() {
        let _ = synchronize(device);
        pool_attribute(gpu_id, Some(0));
    }
    let _ = device;
}

/// Reads (or with `set`, writes) the used-memory high-water mark of `cuda:ordinal`'s default
/// memory pool, the one stream-ordered allocations come from.
#[cfg(feature = "cuda")]
fn pool_attribute(ordinal: usize, set: Option<u64>) -> Option<u64> {
    use candle_core::cuda_backend::cudarc::driver::sys;
    // SAFETY: plain driver queries on a device the caller has opened (so the driver is
    // initialised); the attribute is a cuuint64_t, written or read through a valid pointer.
    unsafe {
        let mut dev: sys::CUdevice = 0;
        if sys::cuDeviceGet(&mut dev, ordinal as i32) != sys::cudaError_enum::CUDA_SUCCESS {
            return None;
        }
        let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
        if sys::cuDeviceGetDefaultMemPool(&mut pool, dev) != sys::cudaError_enum::CUDA_SUCCESS {
            return None;
        }
        let attr = sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH;
        let mut v: u64 = set.unwrap_or(0);
        let r = match set {
            Some(_) => sys::cuMemPoolSetAttribute(pool, attr, (&mut v as *mut u64).cast()),
            None => sys::cuMemPoolGetAttribute(pool, attr, (&mut v as *mut u64).cast()),
        };
        (r == sys::cudaError_enum::CUDA_SUCCESS).then_some(v)
    }
}

/// Waits until the device has finished the queued work (for timing).
pub fn synchronize(device: &Device) -> Result<()> {
    Ok(device.synchronize()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse() {
        assert_eq!("auto".parse::<DeviceChoice>(), Ok(DeviceChoice::Auto));
        assert_eq!("cpu".parse::<DeviceChoice>(), Ok(DeviceChoice::Cpu));
        assert_eq!("cuda".parse::<DeviceChoice>(), Ok(DeviceChoice::Cuda(0)));
        assert_eq!("cuda:3".parse::<DeviceChoice>(), Ok(DeviceChoice::Cuda(3)));
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
        assert!("tpu".parse::<DeviceChoice>().is_err());
        assert_eq!(DeviceChoice::Cuda(1).to_string(), "cuda:1");
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(version_key("13.0") > version_key("12.9"));
        assert!(version_key("9.0") > version_key("8.9"));
        assert!(version_key("10.0") > version_key("9.0"));
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_cpu_build_says_cuda_is_not_compiled_and_auto_is_the_cpu() {
        let s = cuda_status();
        assert_eq!(s.problem, Some(CudaProblem::NotCompiled));
        assert!(!s.available());
        let (d, note) = open(DeviceChoice::Auto).unwrap();
        assert!(d.is_cpu() && note.is_none());
        let e = open(DeviceChoice::Cuda(0)).unwrap_err();
        assert!(e.to_string().contains("built without CUDA"), "{e}");
        assert!(!build_info().cuda);
    }
}
