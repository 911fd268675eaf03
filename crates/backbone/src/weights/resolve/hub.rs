//! The Hugging Face cache on disk and downloads from the hub.

use super::*;

/// Why a file is not in a Hugging Face cache.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum CacheMiss {
    /// No folder for the repository.
    #[error("not present")]
    NotPresent,
    /// No `refs/main`.
    #[error("no refs/main")]
    NoRefsMain,
    /// The snapshot's link points nowhere.
    #[error("{file} in snapshot {commit} is a dangling link")]
    Dangling { file: String, commit: String },
    /// The snapshot lacks the file.
    #[error("no {file} in snapshot {commit}")]
    NotInSnapshot { file: String, commit: String },
}

/// Why a download from the hub failed, in a few words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum DownloadError {
    /// Nothing listens at the endpoint.
    #[error("connection refused")]
    Refused,
    /// No answer.
    #[error("connection timed out")]
    TimedOut,
    /// The hub answered with an error status.
    #[error("HTTP {code}{}", http_hint(code))]
    Http { code: String },
    /// Anything else hf-hub reported (one line).
    #[error("{0}")]
    Other(String),
}

fn http_hint(code: &str) -> &'static str {
    match code {
        "401" | "403" => " (not authorized: private or gated repository?)",
        "404" => " (no such repository or file)",
        c if c.starts_with('5') => " (server error)",
        _ => "",
    }
}

/// Looks `repo`/`file` up in the Hugging Face cache at `dir` (revision `main`), from disk only.
///
/// `Err` says why it is not there.
pub(super) fn hf_cache_lookup(
    dir: &Path,
    repo: &str,
    file: &str,
) -> std::result::Result<PathBuf, CacheMiss> {
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
        return Err(CacheMiss::NotPresent);
    }
    let commit = match std::fs::read_to_string(repo_dir.join("refs").join("main")) {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => return Err(CacheMiss::NoRefsMain),
    };
    let path = repo_dir.join("snapshots").join(&commit).join(file);
    if path.is_file() {
        Ok(path)
    } else if path.symlink_metadata().is_ok() {
        Err(CacheMiss::Dangling {
            file: file.to_string(),
            commit,
        })
    } else {
        Err(CacheMiss::NotInSnapshot {
            file: file.to_string(),
            commit,
        })
    }
}

/// For a cache file whose blob is named by a sha256 (Hugging Face LFS files are): a description
/// of the mismatch if the content does not hash to that name (e.g. a truncated download).
pub(super) fn blob_mismatch(path: &Path, sha256: &str) -> Option<String> {
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
pub(super) fn discard_download(path: &Path) {
    if let Ok(blob) = std::fs::canonicalize(path) {
        let _ = std::fs::remove_file(blob);
    }
    let _ = std::fs::remove_file(path);
}

/// Downloads `repo`/`file` from `endpoint` into the Hugging Face cache at `cache_dir`.
///
/// `Err` is a one-line reason. Never panics, even if hf-hub does.
pub(super) fn hub_download(
    cache_dir: &Path,
    endpoint: &str,
    repo: &str,
    file: &str,
) -> std::result::Result<PathBuf, DownloadError> {
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
            Err(DownloadError::Other(one_line(&format!(
                "hf-hub failed: {msg}"
            ))))
        }
    }
}

/// A short, single-line reason for a failed hub request.
pub(super) fn describe_api_error(err: &ApiError) -> DownloadError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return DownloadError::Refused,
                std::io::ErrorKind::TimedOut => return DownloadError::TimedOut,
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
        return DownloadError::Http { code };
    }
    DownloadError::Other(one_line(&text))
}

/// Collapses whitespace runs (newlines included) into single spaces.
pub(super) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
