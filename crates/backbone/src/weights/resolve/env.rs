//! Where the caches are: the Hugging Face and torch conventions, read from the environment.

use super::*;

/// Environment lookup where empty (or blank) values count as unset.
pub(super) struct Env<'a>(pub(super) &'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    pub(super) fn get(&self, key: &str) -> Option<String> {
        (self.0)(key).filter(|v| !v.trim().is_empty())
    }

    pub(super) fn home(&self) -> Option<PathBuf> {
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
    pub(super) fn cache_home(&self) -> Option<PathBuf> {
        self.get("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| self.home().map(|h| h.join(".cache")))
    }
}

/// The Hugging Face hub cache directory, as the `huggingface_hub` Python package computes it
/// (a superset of `hf_hub::Cache::from_env`, which reads only `HF_HOME`).
pub(super) fn hf_cache_dir(env: &Env) -> Option<PathBuf> {
    if let Some(dir) = env.get("HF_HUB_CACHE") {
        return Some(PathBuf::from(dir));
    }
    if let Some(home) = env.get("HF_HOME") {
        return Some(PathBuf::from(home).join("hub"));
    }
    env.cache_home().map(|c| c.join("huggingface").join("hub"))
}

/// `$TORCH_HOME`, else `$XDG_CACHE_HOME/torch`, else `~/.cache/torch` (as `torch.hub` does).
pub(super) fn torch_home(env: &Env) -> Option<PathBuf> {
    env.get("TORCH_HOME")
        .map(PathBuf::from)
        .or_else(|| env.cache_home().map(|c| c.join("torch")))
}

/// `$HF_ENDPOINT` without trailing slashes, else [`DEFAULT_HF_ENDPOINT`].
pub(super) fn hf_endpoint(env: &Env) -> String {
    env.get("HF_ENDPOINT")
        .map(|e| e.trim().trim_end_matches('/').to_string())
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| DEFAULT_HF_ENDPOINT.to_string())
}

/// The value of `HF_HUB_OFFLINE` when it switches the hub off (`1`, `true`, `yes`, `on`).
pub(super) fn hf_hub_offline(env: &Env) -> Option<String> {
    let value = env.get("HF_HUB_OFFLINE")?;
    let v = value.trim().to_ascii_lowercase();
    matches!(v.as_str(), "1" | "true" | "yes" | "on").then(|| value.trim().to_string())
}

/// Accepts `name` or `owner/name` made of ASCII letters, digits, `-`, `_` and `.`.
pub(super) fn check_repo_id(repo: &str) -> std::result::Result<(), &'static str> {
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
pub(super) fn explicit_file(path: &Path) -> Result<ResolvedWeights> {
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
