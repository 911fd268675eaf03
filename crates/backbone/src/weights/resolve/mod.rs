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

mod env;
mod hub;

use env::*;
use hub::*;

#[cfg(test)]
mod tests;

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
                            // Transformers are sized by the repository's config.json, which
                            // lands beside the weights in the snapshot. Without it (a repository
                            // that has none), the named model's sizes are used.
                            if arch.transformer().is_some() {
                                let _ = hub_download(dir, &endpoint, repo, "config.json");
                            }
                            return Ok(ResolvedWeights {
                                path,
                                source: WeightsSource::HuggingFaceDownload {
                                    repo: repo.clone(),
                                    file: file.clone(),
                                    endpoint,
                                },
                                sha256,
                            });
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
