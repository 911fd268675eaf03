//! Shared helpers of the binary's integration tests.
#![allow(dead_code, unused_imports)]

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output};

pub use headstart_testkit::{cache_files, link_photos, shared, snapshot};

/// The five flower classes of the shared photos.
pub const CLASSES: [&str; 5] = ["daisy", "dandelion", "rose", "sunflower", "tulip"];

/// The real EfficientNet-Lite0 weights.
pub fn lite0() -> PathBuf {
    shared("weights/efficientnet-lite0/efficientnet-lite0-57934424.pth")
}

/// The binary, offline and with no caches or scheduler variables of this machine in sight.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_headstart"));
    c.env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", "/nonexistent-hf-home")
        .env("TORCH_HOME", "/nonexistent-torch-home")
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("JOB_COMPLETION_INDEX");
    c
}

/// Runs the binary with `args`.
pub fn headstart<S: AsRef<OsStr>>(args: &[S]) -> Output {
    bin().args(args).output().expect("binary runs")
}

/// Runs the binary, asserts success, returns stdout.
pub fn ok<S: AsRef<OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let out = headstart(args);
    assert!(
        out.status.success(),
        "headstart {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `extract DATA --cache CACHE` with Lite0's real weights and small settings (1 view, 6 rows per
/// shard and per batch, quiet), then `extra`.
pub fn extract_args(
    data: &std::path::Path,
    cache: &std::path::Path,
    extra: &[&str],
) -> Vec<String> {
    let mut v: Vec<String> = [
        "extract",
        &data.display().to_string(),
        "--cache",
        &cache.display().to_string(),
        "--backbone",
        "efficientnet-lite0",
        "--weights",
        &lite0().display().to_string(),
        "--views",
        "1",
        "--shard-size",
        "6",
        "--batch-size",
        "6",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}
