//! `headstart devices` and `--device`: what the build has, what the machine offers, and clean
//! errors (exit 1, naming what is missing) where CUDA cannot be used. Run in the CPU build by
//! `just test`, and in the CUDA build (no GPU, no driver) by CI's `just build-cuda` step.

mod common;

use common::{bin, headstart, link_photos, lite0, CLASSES};
use serde_json::Value;

fn devices_json(env: &[(&str, &str)]) -> Value {
    let mut c = bin();
    c.args(["devices", "--json"]);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Extract with `--device DEVICE` (four photos, Lite0): the command that must fail cleanly.
fn extract_on(device: &str, env: &[(&str, &str)], cache: &std::path::Path) -> std::process::Output {
    let data = cache.with_extension("data");
    if !data.exists() {
        link_photos(&data, &CLASSES[..2], 0..2);
    }
    let mut c = bin();
    c.args(["extract"])
        .arg(&data)
        .arg("--cache")
        .arg(cache)
        .args(["--backbone", "efficientnet-lite0", "--weights"])
        .arg(lite0())
        .args(["--device", device, "--views", "0", "--quiet"]);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn gpu_here() -> bool {
    devices_json(&[])["cuda"]["gpus"]
        .as_array()
        .is_some_and(|g| !g.is_empty())
}

#[test]
fn devices_reports_the_build_and_the_fallback() {
    let v = devices_json(&[]);
    assert_eq!(v["build"]["cuda"], cfg!(feature = "cuda"), "{v}");
    assert!(v["cpu"]["threads"].as_u64().unwrap() >= 1);
    if cfg!(feature = "cuda") {
        assert_eq!(v["build"]["cuda_version"], "13.0", "{v}");
        assert!(v["build"]["compute_capability"].is_string(), "{v}");
    } else {
        assert_eq!(v["cuda"]["problem"]["kind"], "not_compiled", "{v}");
        assert_eq!(v["auto"], "cpu");
    }
    let text = String::from_utf8(headstart(&["devices"]).stdout).unwrap();
    assert!(text.contains("build") && text.contains("auto"), "{text}");
}

#[test]
fn device_cuda_without_a_usable_gpu_fails_cleanly_and_auto_falls_back() {
    if gpu_here() {
        eprintln!("a GPU is usable here: the no-GPU messages are not checked");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = extract_on("cuda", &[], &dir.path().join("c"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    if cfg!(feature = "cuda") {
        assert!(
            err.contains("libcuda.so.1"),
            "names the missing driver: {err}"
        );
    } else {
        assert!(
            err.contains("built without CUDA") && err.contains("just build-cuda"),
            "{err}"
        );
    }
    // Nothing was created for a run that could not start.
    assert!(!dir.path().join("c").exists());
    // A bad device name is a usage error.
    let out = extract_on("tpu", &[], &dir.path().join("c"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cuda:N"));
    // Reduced precision on the CPU is refused before any work, with the flag that stores f16.
    let out = bin()
        .args([
            "extract", "x", "--cache", "y", "--device", "cpu", "--dtype", "f16",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // auto: the CPU, said on stderr in a CUDA build.
    let out = extract_on("auto", &[], &dir.path().join("auto"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if cfg!(feature = "cuda") {
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("running on the CPU"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A fake NVIDIA driver whose cuInit answers `code`: the probe's words for each answer.
#[cfg(feature = "cuda")]
fn fake_driver(dir: &std::path::Path, cu_init: i32) -> std::path::PathBuf {
    let src = dir.join("fake_cuda.c");
    std::fs::write(
        &src,
        format!(
            "int cuInit(unsigned f) {{ return {cu_init}; }}\n\
             int cuDriverGetVersion(int *v) {{ *v = 13000; return 0; }}\n\
             int cuDeviceGetCount(int *n) {{ *n = 0; return 0; }}\n"
        ),
    )
    .unwrap();
    let lib = dir.join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    let st = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(lib.join("libcuda.so.1"))
        .arg("-Wl,-soname,libcuda.so.1")
        .arg(&src)
        .status()
        .expect("a C compiler (cc) for the fake driver");
    assert!(st.success());
    lib
}

#[cfg(feature = "cuda")]
#[test]
fn a_driver_without_cublas_or_without_a_gpu_is_named() {
    if gpu_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lib = fake_driver(dir.path(), 100);
    let ld = lib.display().to_string();
    // The driver is found, cuBLAS is not: the missing libraries are named.
    let v = devices_json(&[("LD_LIBRARY_PATH", &ld)]);
    assert_eq!(v["cuda"]["problem"]["kind"], "libraries_missing", "{v}");
    assert!(
        v["cuda"]["message"]
            .as_str()
            .unwrap()
            .contains("libcublas.so.13"),
        "{v}"
    );
    assert_eq!(v["auto"], "cpu");
    // With stand-ins for cuBLAS (any library of that name), cuInit's "no device" is reported.
    for name in ["libcublas.so.13", "libcublasLt.so.13"] {
        std::fs::copy(lib.join("libcuda.so.1"), lib.join(name)).unwrap();
    }
    let v = devices_json(&[("LD_LIBRARY_PATH", &ld)]);
    assert_eq!(v["cuda"]["problem"]["kind"], "no_gpu", "{v}");
    assert_eq!(v["cuda"]["driver_cuda_version"], "13.0", "{v}");
    let out = extract_on("cuda", &[("LD_LIBRARY_PATH", &ld)], &dir.path().join("c"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sees no GPU"));
}
