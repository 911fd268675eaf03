//! With the `cuda` feature: compiles `kernels/*.cu` (headstart's own CUDA kernels) to PTX with
//! the nvcc and compute capability candle's kernels are built with (`NVCC` or `nvcc` on PATH;
//! `CUDA_COMPUTE_CAP`, else what `nvidia-smi` reports). Without it, does nothing.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let cap = std::env::var("CUDA_COMPUTE_CAP")
        .ok()
        .or_else(|| {
            let out = Command::new("nvidia-smi")
                .args(["--query-gpu=compute_cap", "--format=csv,noheader"])
                .output()
                .ok()?;
            let s = String::from_utf8_lossy(&out.stdout);
            Some(s.lines().next()?.trim().replace('.', ""))
        })
        .unwrap_or_else(|| {
            panic!(
                "headstart-backbone (feature cuda): set CUDA_COMPUTE_CAP (e.g. 90 for H100/H200, 80 for A100) or build on a machine where nvidia-smi works; `just build-cuda` does this for you"
            )
        });
    let cap = cap.trim_end_matches(['a', 'f']);
    println!("cargo:rustc-env=HEADSTART_CUDA_COMPUTE_CAP={cap}");
    if let Some(v) = Command::new(&nvcc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let s = String::from_utf8_lossy(&o.stdout).into_owned();
            let at = s.find("release ")? + "release ".len();
            Some(s[at..].split(',').next()?.trim().to_string())
        })
    {
        println!("cargo:rustc-env=HEADSTART_CUDA_VERSION={v}");
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    const KERNELS: &[&str] = &["convolution"];
    for name in KERNELS {
        let src = format!("kernels/{name}.cu");
        let ptx = out.join(format!("{name}.ptx"));
        let status = Command::new(&nvcc)
            .args(["--ptx", "-O3", "-std=c++17"])
            .arg(format!("-arch=compute_{cap}"))
            .arg("-o")
            .arg(&ptx)
            .arg(&src)
            .status()
            .unwrap_or_else(|e| {
                panic!("headstart-backbone (feature cuda): cannot run {nvcc} ({e}); install CUDA 13.0 or run `just build-cuda`, which installs a pinned nvcc")
            });
        assert!(status.success(), "{nvcc} failed on {src}");
    }
}
