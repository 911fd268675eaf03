//! Offline-first weight resolution.
//!
//! [`resolve_with`] looks for a backbone's weights in this order and stops at the first hit:
//!
//! 1. an explicit path (`--weights`): it must be a file, and nothing else is tried when it is given;
//! 2. the Hugging Face cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//!    `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`), read from disk only;
//! 3. the torch hub cache (`$TORCH_HOME/hub/checkpoints/`, `TORCH_HOME` defaulting to
//!    `$XDG_CACHE_HOME/torch`, else `~/.cache/torch`);
//! 4. a download from the Hugging Face hub (`$HF_ENDPOINT`, default `https://huggingface.co`) into
//!    the Hugging Face cache, unless `HF_HUB_OFFLINE` is `1`/`true`/`yes`/`on` or downloads are
//!    disabled in [`ResolveOptions`].
//!
//! The network is never touched while a local copy exists. When nothing is found the error
//! ([`Error::WeightsNotFound`]) lists every place tried and why it failed.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Cache, Repo};
use sha2::{Digest, Sha256};

use crate::{Architecture, Error, Result};

/// The Hugging Face hub used when `HF_ENDPOINT` is not set.
pub const DEFAULT_HF_ENDPOINT: &str = "https://huggingface.co";

/// File fetched from a Hugging Face repository when the backbone config names none.
const DEFAULT_HUB_FILE: &str = "model.safetensors";

/// Read buffer of [`sha256_file`].
const HASH_BUFFER: usize = 1 << 20;

/// Where resolved weights came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsSource {
    /// An explicit path (`--weights`).
    File(PathBuf),
    /// Already in the local Hugging Face cache; no connection was made.
    HuggingFaceCache {
        /// Repository id, e.g. `timm/resnet18.tv_in1k`.
        repo: String,
        /// File inside the repository, e.g. `model.safetensors`.
        file: String,
    },
    /// Downloaded just now from a Hugging Face hub into the local Hugging Face cache.
    HuggingFaceDownload {
        /// Repository id, e.g. `timm/resnet18.tv_in1k`.
        repo: String,
        /// File inside the repository, e.g. `model.safetensors`.
        file: String,
        /// The hub it came from, e.g. `https://huggingface.co`.
        endpoint: String,
    },
    /// Found in the torch hub cache (`$TORCH_HOME/hub/checkpoints/`).
    TorchHubCache(PathBuf),
}

impl fmt::Display for WeightsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightsSource::File(p) => write!(f, "file {}", p.display()),
            WeightsSource::HuggingFaceCache { repo, file } => {
                write!(f, "Hugging Face cache ({repo}/{file})")
            }
            WeightsSource::HuggingFaceDownload {
                repo,
                file,
                endpoint,
            } => write!(f, "downloaded {repo}/{file} from {endpoint}"),
            WeightsSource::TorchHubCache(p) => write!(f, "torch hub cache {}", p.display()),
        }
    }
}

/// A weights file found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedWeights {
    /// Local path of the file (for the Hugging Face cache: the snapshot path).
    pub path: PathBuf,
    /// Where it came from.
    pub source: WeightsSource,
    /// sha256 of the file content, lowercase hex.
    pub sha256: String,
}

/// What [`resolve_with`] may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveOptions {
    /// Use exactly this file; nothing else is tried.
    pub explicit: Option<PathBuf>,
    /// Hugging Face repository to use instead of the backbone's default. When given, the torch
    /// hub cache is skipped: it holds the torchvision weights, not this repository's.
    pub hub_repo: Option<String>,
    /// Whether step 4 (download from the hub) may run. `HF_HUB_OFFLINE` disables it as well.
    pub allow_download: bool,
}

impl Default for ResolveOptions {
    /// No explicit path, the backbone's own repository, downloads allowed (like [`resolve_weights`]).
    fn default() -> Self {
        Self {
            explicit: None,
            hub_repo: None,
            allow_download: true,
        }
    }
}

/// Finds weights for `arch` using the process environment, downloading them if needed.
///
/// Same as [`resolve_with`] with `explicit` and downloads allowed.
pub fn resolve_weights(arch: Architecture, explicit: Option<&Path>) -> Result<ResolvedWeights> {
    resolve_with(
        arch,
        &ResolveOptions {
            explicit: explicit.map(Path::to_path_buf),
            ..ResolveOptions::default()
        },
    )
}

/// Finds weights for `arch`, offline-first, reading the process environment
/// (`HF_HOME`, `HF_HUB_CACHE`, `HF_ENDPOINT`, `HF_HUB_OFFLINE`, `TORCH_HOME`, `XDG_CACHE_HOME`, `HOME`).
///
/// See the [module documentation](self) for the order.
pub fn resolve_with(arch: Architecture, opts: &ResolveOptions) -> Result<ResolvedWeights> {
    resolve_with_env(arch, opts, &|key| std::env::var(key).ok())
}

/// [`resolve_with`], reading environment variables through `env` instead of the process
/// environment, so that callers (and tests) can point it at their own cache directories and hub.
///
/// Empty values count as unset. Note that the HTTP client used for downloads still takes proxy
/// settings (`ALL_PROXY`, `HTTPS_PROXY`, `HTTP_PROXY`) from the process environment.
pub fn resolve_with_env(
    arch: Architecture,
    opts: &ResolveOptions,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ResolvedWeights> {
    if let Some(path) = &opts.explicit {
        return explicit_file(path);
    }
    let env = Env(env);
    let cfg = arch.config();
    let backbone = cfg.name.clone();
    let mut looked = Vec::new();

    // The Hugging Face repository and file, if any and valid.
    let hub = match opts.hub_repo.clone().or(cfg.hub_repo.clone()) {
        None => {
            looked.push(format!(
                "Hugging Face cache and hub: skipped, {backbone} has no Hugging Face repository"
            ));
            None
        }
        Some(repo) => match check_repo_id(&repo) {
            Ok(()) => Some((
                repo,
                cfg.hub_file
                    .clone()
                    .unwrap_or_else(|| DEFAULT_HUB_FILE.to_string()),
            )),
            Err(why) => {
                looked.push(format!(
                    "Hugging Face cache and hub: skipped, `{repo}` is not a valid repository id ({why})"
                ));
                None
            }
        },
    };
    let hf_cache = hf_cache_dir(&env);

    // 2. Hugging Face cache: filesystem only.
    if let Some((repo, file)) = &hub {
        match &hf_cache {
            None => looked.push(
                "Hugging Face cache: cannot locate it (HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME and HOME are all unset)"
                    .to_string(),
            ),
            Some(dir) => {
                let repo_dir = dir.join(Repo::model(repo.clone()).folder_name());
                match hf_cache_lookup(dir, repo, file) {
                    Ok(path) => {
                        let sha256 = sha256_file(&path)?;
                        match blob_mismatch(&path, &sha256) {
                            None => {
                                return Ok(ResolvedWeights {
                                    path,
                                    source: WeightsSource::HuggingFaceCache {
                                        repo: repo.clone(),
                                        file: file.clone(),
                                    },
                                    sha256,
                                })
                            }
                            Some(why) => looked.push(format!(
                                "Hugging Face cache: {} ({why})",
                                path.display()
                            )),
                        }
                    }
                    Err(why) => looked.push(format!(
                        "Hugging Face cache: {} ({why})",
                        repo_dir.display()
                    )),
                }
            }
        }
    }

    // 3. torch hub cache.
    if opts.hub_repo.is_some() {
        looked.push(
            "torch hub cache: skipped, a Hugging Face repository was requested explicitly"
                .to_string(),
        );
    } else {
        match (&cfg.torch_hub_file, torch_home(&env)) {
            (None, _) => looked.push(format!(
                "torch hub cache: skipped, {backbone} has no torch hub file name"
            )),
            (Some(_), None) => looked.push(
                "torch hub cache: cannot locate it (TORCH_HOME, XDG_CACHE_HOME and HOME are all unset)"
                    .to_string(),
            ),
            (Some(name), Some(home)) => {
                let path = home.join("hub").join("checkpoints").join(name);
                if path.is_file() {
                    let sha256 = sha256_file(&path)?;
                    return Ok(ResolvedWeights {
                        source: WeightsSource::TorchHubCache(path.clone()),
                        path,
                        sha256,
                    });
                }
                let why = if path.exists() {
                    "not a file"
                } else {
                    "not present"
                };
                looked.push(format!("torch hub cache: {} ({why})", path.display()));
            }
        }
    }

    // 4. Download from the hub into the Hugging Face cache.
    if let Some((repo, file)) = &hub {
        let endpoint = hf_endpoint(&env);
        let what = format!("Hugging Face hub {endpoint} {repo}/{file}");
        if let Some(value) = hf_hub_offline(&env) {
            looked.push(format!("{what}: skipped, HF_HUB_OFFLINE={value}"));
        } else if !opts.allow_download {
            looked.push(format!("{what}: skipped, downloads are disabled"));
        } else if let Some(dir) = &hf_cache {
            match hub_download(dir, &endpoint, repo, file) {
                Err(why) => looked.push(format!("{what}: {why}")),
                Ok(path) => {
                    let sha256 = sha256_file(&path)?;
                    match blob_mismatch(&path, &sha256) {
                        None => {
                            return Ok(ResolvedWeights {
                                path,
                                source: WeightsSource::HuggingFaceDownload {
                                    repo: repo.clone(),
                                    file: file.clone(),
                                    endpoint,
                                },
                                sha256,
                            })
                        }
                        Some(why) => {
                            discard_download(&path);
                            looked.push(format!("{what}: download discarded, {why}"));
                        }
                    }
                }
            }
        } else {
            looked.push(format!(
                "{what}: skipped, no Hugging Face cache directory to download into"
            ));
        }
    }

    Err(Error::WeightsNotFound { backbone, looked })
}

/// sha256 of a file's content as lowercase hex, read in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; HASH_BUFFER];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Environment lookup where empty (or blank) values count as unset.
struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    fn get(&self, key: &str) -> Option<String> {
        (self.0)(key).filter(|v| !v.trim().is_empty())
    }

    fn home(&self) -> Option<PathBuf> {
        self.get("HOME")
            .or_else(|| {
                if cfg!(windows) {
                    self.get("USERPROFILE")
                } else {
                    None
                }
            })
            .map(PathBuf::from)
    }

    /// `$XDG_CACHE_HOME`, else `~/.cache`.
    fn cache_home(&self) -> Option<PathBuf> {
        self.get("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| self.home().map(|h| h.join(".cache")))
    }
}

/// The Hugging Face hub cache directory, as the `huggingface_hub` Python package computes it
/// (a superset of `hf_hub::Cache::from_env`, which reads only `HF_HOME`).
fn hf_cache_dir(env: &Env) -> Option<PathBuf> {
    if let Some(dir) = env.get("HF_HUB_CACHE") {
        return Some(PathBuf::from(dir));
    }
    if let Some(home) = env.get("HF_HOME") {
        return Some(PathBuf::from(home).join("hub"));
    }
    env.cache_home().map(|c| c.join("huggingface").join("hub"))
}

/// `$TORCH_HOME`, else `$XDG_CACHE_HOME/torch`, else `~/.cache/torch` (as `torch.hub` does).
fn torch_home(env: &Env) -> Option<PathBuf> {
    env.get("TORCH_HOME")
        .map(PathBuf::from)
        .or_else(|| env.cache_home().map(|c| c.join("torch")))
}

/// `$HF_ENDPOINT` without trailing slashes, else [`DEFAULT_HF_ENDPOINT`].
fn hf_endpoint(env: &Env) -> String {
    env.get("HF_ENDPOINT")
        .map(|e| e.trim().trim_end_matches('/').to_string())
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| DEFAULT_HF_ENDPOINT.to_string())
}

/// The value of `HF_HUB_OFFLINE` when it switches the hub off (`1`, `true`, `yes`, `on`).
fn hf_hub_offline(env: &Env) -> Option<String> {
    let value = env.get("HF_HUB_OFFLINE")?;
    let v = value.trim().to_ascii_lowercase();
    matches!(v.as_str(), "1" | "true" | "yes" | "on").then(|| value.trim().to_string())
}

/// Accepts `name` or `owner/name` made of ASCII letters, digits, `-`, `_` and `.`.
fn check_repo_id(repo: &str) -> std::result::Result<(), &'static str> {
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.len() > 2 {
        return Err("expected `owner/name`");
    }
    for part in parts {
        if part.is_empty() || part == "." || part == ".." || part.contains("..") {
            return Err("empty or dotted path component");
        }
        if !part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err("only letters, digits, `-`, `_` and `.` are allowed");
        }
    }
    Ok(())
}

/// An explicit weights path: must be an existing file.
fn explicit_file(path: &Path) -> Result<ResolvedWeights> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a file; expected a .safetensors or .pth weights file",
            ),
        ));
    }
    Ok(ResolvedWeights {
        path: path.to_path_buf(),
        source: WeightsSource::File(path.to_path_buf()),
        sha256: sha256_file(path)?,
    })
}

/// Looks `repo`/`file` up in the Hugging Face cache at `dir` (revision `main`), from disk only.
///
/// `Err` says why it is not there.
fn hf_cache_lookup(dir: &Path, repo: &str, file: &str) -> std::result::Result<PathBuf, String> {
    let hf_repo = Repo::model(repo.to_string());
    if let Some(path) = Cache::new(dir.to_path_buf())
        .repo(hf_repo.clone())
        .get(file)
    {
        if path.is_file() {
            return Ok(path);
        }
    }
    // Not found by hf-hub: find out why, and accept a `refs/main` with a trailing newline
    // (hf-hub reads it verbatim).
    let repo_dir = dir.join(hf_repo.folder_name());
    if !repo_dir.is_dir() {
        return Err("not present".to_string());
    }
    let commit = match std::fs::read_to_string(repo_dir.join("refs").join("main")) {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => return Err("no refs/main".to_string()),
    };
    let path = repo_dir.join("snapshots").join(&commit).join(file);
    if path.is_file() {
        Ok(path)
    } else if path.symlink_metadata().is_ok() {
        Err(format!("{file} in snapshot {commit} is a dangling link"))
    } else {
        Err(format!("no {file} in snapshot {commit}"))
    }
}

/// For a cache file whose blob is named by a sha256 (Hugging Face LFS files are): a description
/// of the mismatch if the content does not hash to that name (e.g. a truncated download).
fn blob_mismatch(path: &Path, sha256: &str) -> Option<String> {
    let target = std::fs::canonicalize(path).ok()?;
    let in_blobs = target.parent()?.file_name()? == "blobs";
    let name = target.file_name()?.to_str()?;
    let is_sha256 = name.len() == 64 && name.chars().all(|c| c.is_ascii_hexdigit());
    (in_blobs && is_sha256 && !name.eq_ignore_ascii_case(sha256)).then(|| {
        format!(
            "corrupt: content sha256 {sha256} but the hub's is {}",
            name.to_ascii_lowercase()
        )
    })
}

/// Removes a bad download (the blob and the snapshot link) so the next attempt starts afresh.
fn discard_download(path: &Path) {
    if let Ok(blob) = std::fs::canonicalize(path) {
        let _ = std::fs::remove_file(blob);
    }
    let _ = std::fs::remove_file(path);
}

/// Downloads `repo`/`file` from `endpoint` into the Hugging Face cache at `cache_dir`.
///
/// `Err` is a one-line reason. Never panics, even if hf-hub does.
fn hub_download(
    cache_dir: &Path,
    endpoint: &str,
    repo: &str,
    file: &str,
) -> std::result::Result<PathBuf, String> {
    let api = ApiBuilder::from_cache(Cache::new(cache_dir.to_path_buf()))
        .with_endpoint(endpoint.to_string())
        .with_progress(false)
        .with_retries(0)
        .with_user_agent("headstart", env!("CARGO_PKG_VERSION"))
        .build()
        .map_err(|e| describe_api_error(&e))?;
    let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        api.model(repo.to_string()).download(file)
    }));
    match attempt {
        Ok(Ok(path)) => Ok(path),
        Ok(Err(e)) => Err(describe_api_error(&e)),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(one_line(&format!("hf-hub failed: {msg}")))
        }
    }
}

/// A short, single-line reason for a failed hub request.
fn describe_api_error(err: &ApiError) -> String {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return "connection refused".to_string(),
                std::io::ErrorKind::TimedOut => return "connection timed out".to_string(),
                _ => {}
            }
        }
        cause = e.source();
    }
    let text = err.to_string();
    if let Some(at) = text.rfind("status code ") {
        let code: String = text[at + "status code ".len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let hint = match code.as_str() {
            "401" | "403" => " (not authorized: private or gated repository?)",
            "404" => " (no such repository or file)",
            c if c.starts_with('5') => " (server error)",
            _ => "",
        };
        return format!("HTTP {code}{hint}");
    }
    one_line(&text)
}

/// Collapses whitespace runs (newlines included) into single spaces.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    fn write(path: &Path, bytes: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    fn not_found(err: Error) -> (String, Vec<String>) {
        match err {
            Error::WeightsNotFound { backbone, looked } => (backbone, looked),
            other => panic!("expected WeightsNotFound, got {other}"),
        }
    }

    #[test]
    fn sha256_file_matches_known_digests_and_streams_large_files() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        write(&empty, b"");
        assert_eq!(
            sha256_file(&empty).unwrap(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let abc = dir.path().join("abc");
        write(&abc, b"abc");
        assert_eq!(
            sha256_file(&abc).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // Spans several 1 MiB reads, with a partial last block.
        let big: Vec<u8> = (0..(2 * HASH_BUFFER + 12345))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let big_path = dir.path().join("big");
        write(&big_path, &big);
        assert_eq!(
            sha256_file(&big_path).unwrap(),
            hex::encode(Sha256::digest(&big))
        );
        let missing = dir.path().join("missing");
        let err = sha256_file(&missing).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
    }

    #[test]
    fn hub_offline_accepts_the_usual_truthy_values_only() {
        for v in ["1", "true", "TRUE", "yes", "On", " 1 "] {
            let e = env_of(&[("HF_HUB_OFFLINE", v)]);
            assert_eq!(hf_hub_offline(&Env(&e)), Some(v.trim().to_string()), "{v}");
        }
        for v in ["0", "false", "no", "off", "", "2"] {
            let e = env_of(&[("HF_HUB_OFFLINE", v)]);
            assert_eq!(hf_hub_offline(&Env(&e)), None, "{v}");
        }
        assert_eq!(hf_hub_offline(&Env(&env_of(&[]))), None);
    }

    #[test]
    fn cache_directories_follow_the_python_conventions() {
        let hf = |pairs: &[(&str, &str)]| hf_cache_dir(&Env(&env_of(pairs)));
        let torch = |pairs: &[(&str, &str)]| torch_home(&Env(&env_of(pairs)));
        let all = [
            ("HF_HUB_CACHE", "/hc"),
            ("HF_HOME", "/hh"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/home/u"),
            ("TORCH_HOME", "/t"),
        ];
        assert_eq!(hf(&all), Some(PathBuf::from("/hc")));
        assert_eq!(hf(&all[1..]), Some(PathBuf::from("/hh/hub")));
        assert_eq!(hf(&all[2..]), Some(PathBuf::from("/x/huggingface/hub")));
        assert_eq!(
            hf(&all[3..]),
            Some(PathBuf::from("/home/u/.cache/huggingface/hub"))
        );
        assert_eq!(hf(&[("HF_HOME", ""), ("HOME", "/home/u")]), hf(&all[3..]));
        assert_eq!(hf(&[]), None);
        assert_eq!(torch(&all), Some(PathBuf::from("/t")));
        assert_eq!(torch(&all[..4]), Some(PathBuf::from("/x/torch")));
        assert_eq!(
            torch(&all[3..4]),
            Some(PathBuf::from("/home/u/.cache/torch"))
        );
        assert_eq!(torch(&[]), None);
    }

    #[test]
    fn endpoint_defaults_to_huggingface_and_loses_trailing_slashes() {
        assert_eq!(hf_endpoint(&Env(&env_of(&[]))), DEFAULT_HF_ENDPOINT);
        let e = env_of(&[("HF_ENDPOINT", "http://127.0.0.1:9/ ")]);
        assert_eq!(hf_endpoint(&Env(&e)), "http://127.0.0.1:9");
    }

    #[test]
    fn repo_ids_are_checked() {
        for ok in ["timm/resnet18.tv_in1k", "gpt2", "a-b/c_d.e"] {
            assert!(check_repo_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/x", "x/", "a/b/c", "../x", "a/..", "a b/c", "a/b?c"] {
            assert!(check_repo_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sources_display_on_one_line() {
        let cases = [
            (WeightsSource::File("/w/r.pth".into()), "file /w/r.pth"),
            (
                WeightsSource::HuggingFaceCache {
                    repo: "timm/resnet18.tv_in1k".into(),
                    file: "model.safetensors".into(),
                },
                "Hugging Face cache (timm/resnet18.tv_in1k/model.safetensors)",
            ),
            (
                WeightsSource::HuggingFaceDownload {
                    repo: "timm/resnet18.tv_in1k".into(),
                    file: "model.safetensors".into(),
                    endpoint: "https://huggingface.co".into(),
                },
                "downloaded timm/resnet18.tv_in1k/model.safetensors from https://huggingface.co",
            ),
            (
                WeightsSource::TorchHubCache("/t/hub/checkpoints/r.pth".into()),
                "torch hub cache /t/hub/checkpoints/r.pth",
            ),
        ];
        for (source, text) in cases {
            assert_eq!(source.to_string(), text);
        }
    }

    #[test]
    fn explicit_directory_is_rejected_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let opts = ResolveOptions {
            explicit: Some(dir.path().to_path_buf()),
            ..ResolveOptions::default()
        };
        let err = resolve_with_env(Architecture::ResNet18, &opts, &env_of(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(err.contains("not a file"), "{err}");
    }

    #[test]
    fn disabled_downloads_and_missing_repo_each_leave_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().display().to_string();
        let env = env_of(&[("HOME", &home), ("HF_ENDPOINT", "http://127.0.0.1:9")]);
        let opts = ResolveOptions {
            allow_download: false,
            ..ResolveOptions::default()
        };
        let (backbone, looked) =
            not_found(resolve_with_env(Architecture::ResNet50, &opts, &env).unwrap_err());
        assert_eq!(backbone, "resnet50");
        let hf = dir
            .path()
            .join(".cache/huggingface/hub/models--timm--resnet50.tv_in1k");
        let torch = dir
            .path()
            .join(".cache/torch/hub/checkpoints/resnet50-0676ba61.pth");
        assert_eq!(
            looked,
            vec![
                format!("Hugging Face cache: {} (not present)", hf.display()),
                format!("torch hub cache: {} (not present)", torch.display()),
                "Hugging Face hub http://127.0.0.1:9 timm/resnet50.tv_in1k/model.safetensors: skipped, downloads are disabled".to_string(),
            ]
        );

        let (_, looked) =
            not_found(resolve_with_env(Architecture::EfficientNetLite0, &opts, &env).unwrap_err());
        assert_eq!(looked.len(), 2, "{looked:?}");
        assert!(
            looked[0].contains("has no Hugging Face repository"),
            "{looked:?}"
        );
        assert!(looked[1].starts_with("torch hub cache: "), "{looked:?}");

        let bad = ResolveOptions {
            hub_repo: Some("../etc".into()),
            allow_download: true,
            explicit: None,
        };
        let (_, looked) =
            not_found(resolve_with_env(Architecture::ResNet18, &bad, &env).unwrap_err());
        assert_eq!(looked.len(), 2, "{looked:?}");
        assert!(
            looked[0].contains("not a valid repository id"),
            "{looked:?}"
        );
        assert!(looked[1].contains("requested explicitly"), "{looked:?}");
    }

    #[test]
    fn hf_cache_tolerates_a_newline_in_refs_and_explains_misses() {
        let dir = tempfile::tempdir().unwrap();
        let repo_dir = dir.path().join("models--timm--resnet18.tv_in1k");
        assert_eq!(
            hf_cache_lookup(dir.path(), "timm/resnet18.tv_in1k", "model.safetensors").unwrap_err(),
            "not present"
        );
        std::fs::create_dir_all(&repo_dir).unwrap();
        assert_eq!(
            hf_cache_lookup(dir.path(), "timm/resnet18.tv_in1k", "model.safetensors").unwrap_err(),
            "no refs/main"
        );
        write(&repo_dir.join("refs/main"), b"abc123\n");
        assert_eq!(
            hf_cache_lookup(dir.path(), "timm/resnet18.tv_in1k", "model.safetensors").unwrap_err(),
            "no model.safetensors in snapshot abc123"
        );
        let file = repo_dir.join("snapshots/abc123/model.safetensors");
        write(&file, b"weights");
        assert_eq!(
            hf_cache_lookup(dir.path(), "timm/resnet18.tv_in1k", "model.safetensors").unwrap(),
            file
        );
    }

    #[cfg(unix)]
    #[test]
    fn corrupt_cached_blob_is_skipped_for_the_torch_hub_copy() {
        let dir = tempfile::tempdir().unwrap();
        let hf_home = dir.path().join("hf");
        let repo_dir = hf_home.join("hub/models--timm--resnet18.tv_in1k");
        let content = b"truncated";
        let claimed = "0".repeat(64);
        write(&repo_dir.join("blobs").join(&claimed), content);
        write(&repo_dir.join("refs/main"), b"c0ffee");
        std::fs::create_dir_all(repo_dir.join("snapshots/c0ffee")).unwrap();
        std::os::unix::fs::symlink(
            format!("../../blobs/{claimed}"),
            repo_dir.join("snapshots/c0ffee/model.safetensors"),
        )
        .unwrap();
        let torch = dir
            .path()
            .join("torch/hub/checkpoints/resnet18-f37072fd.pth");
        write(&torch, b"torch weights");
        let env = env_of(&[
            ("HF_HOME", hf_home.to_str().unwrap()),
            ("TORCH_HOME", dir.path().join("torch").to_str().unwrap()),
            ("HF_HUB_OFFLINE", "1"),
        ]);
        let got =
            resolve_with_env(Architecture::ResNet18, &ResolveOptions::default(), &env).unwrap();
        assert_eq!(got.source, WeightsSource::TorchHubCache(torch.clone()));
        assert_eq!(got.sha256, hex::encode(Sha256::digest(b"torch weights")));

        // With only the corrupt copy, the error says why it was refused.
        std::fs::remove_file(&torch).unwrap();
        let (_, looked) = not_found(
            resolve_with_env(Architecture::ResNet18, &ResolveOptions::default(), &env).unwrap_err(),
        );
        assert!(looked[0].contains("corrupt"), "{looked:?}");
        assert!(looked[0].contains(&claimed), "{looked:?}");
    }

    #[test]
    fn api_errors_become_short_reasons() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            describe_api_error(&ApiError::IoError(refused)),
            "connection refused"
        );
        assert_eq!(
            describe_api_error(&ApiError::MissingHeader("etag")),
            "Header etag is missing"
        );
        assert_eq!(one_line("a\n  b\tc "), "a b c");
    }
}
