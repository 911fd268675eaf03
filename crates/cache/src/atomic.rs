//! Atomic file writes: temp file in the same directory, fsync, rename, fsync the directory.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The temporary name used while `path` is being written (`.NAME.tmp-PID`).
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `bytes` to `path` so that readers see either the old file or the complete new one.
///
/// On error the temporary file is removed and the error names the path.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Like [`write_atomic`], but the content is streamed by `fill` through a buffered writer, so a
/// large file (a million-image manifest) is never held in memory whole.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<&mut File>) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = temp_path(path);
    let result = (|| -> std::io::Result<()> {
        // Created exclusively, never through a link; a leftover of a killed run that had this
        // pid is removed first (removing a link removes the link, not its target).
        let mut f = match crate::safe_fs::create_new(&tmp) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                fs::remove_file(&tmp)?;
                crate::safe_fs::create_new(&tmp)?
            }
            r => r?,
        };
        {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut f);
            fill(&mut w)?;
            w.flush()?;
        }
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        sync_dir(path.parent().unwrap_or(Path::new(".")))
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Publishes a whole directory at once: `fill` writes every file into a fresh staging directory
/// beside `out` (`.NAME.staging-PID`), which is then swapped with `out` in one atomic
/// `renameat2(RENAME_EXCHANGE)` (Linux; elsewhere, or where the filesystem lacks it, two renames
/// with `.NAME.previous-PID` as the fallback). A reader of `out` sees the old complete set or the
/// new complete set, never a mix; a crash before the swap leaves `out` untouched and a staging
/// directory that the next publish removes.
pub fn publish_dir<E: From<Error>>(
    out: &Path,
    fill: impl FnOnce(&Path) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    remove_leftovers(&parent, &name);
    let staging = parent.join(format!(".{name}.staging-{}", std::process::id()));
    fs::create_dir(&staging).map_err(|e| Error::io(&staging, e))?;
    let result = fill(&staging).and_then(|()| {
        sync_dir(&staging).map_err(|e| Error::io(&staging, e))?;
        Ok(swap_in(&staging, out, &parent, &name)?)
    });
    let _ = fs::remove_dir_all(&staging);
    result
}

/// Removes staging and previous-version directories left by killed publishes of `name`.
fn remove_leftovers(parent: &Path, name: &str) {
    let prefixes = [format!(".{name}.staging-"), format!(".{name}.previous-")];
    if let Ok(entries) = fs::read_dir(parent) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if prefixes.iter().any(|p| n.starts_with(p.as_str())) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Puts `staging` at `out`; afterwards `staging` holds the previous `out` (or nothing).
fn swap_in(staging: &Path, out: &Path, parent: &Path, name: &str) -> Result<()> {
    if !out.exists() {
        fs::rename(staging, out).map_err(|e| Error::io(out, e))?;
        return sync_dir(parent).map_err(|e| Error::io(parent, e));
    }
    #[cfg(target_os = "linux")]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).ok();
        if let (Some(a), Some(b)) = (c(staging), c(out)) {
            // SAFETY: two valid NUL-terminated paths relative to the working directory.
            let rc = unsafe {
                libc::renameat2(
                    libc::AT_FDCWD,
                    a.as_ptr(),
                    libc::AT_FDCWD,
                    b.as_ptr(),
                    libc::RENAME_EXCHANGE,
                )
            };
            if rc == 0 {
                return sync_dir(parent).map_err(|e| Error::io(parent, e));
            }
        }
    }
    // Fallback: move the old version aside, then the new one in.
    let previous = parent.join(format!(".{name}.previous-{}", std::process::id()));
    fs::rename(out, &previous).map_err(|e| Error::io(out, e))?;
    if let Err(e) = fs::rename(staging, out) {
        let _ = fs::rename(&previous, out);
        return Err(Error::io(out, e));
    }
    let _ = fs::remove_dir_all(&previous);
    sync_dir(parent).map_err(|e| Error::io(parent, e))
}

/// Removes `path` if it exists, and fsyncs its directory so that the removal survives a crash
/// (a file already gone is not an error).
pub fn remove_durably(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {
            let dir = path.parent().unwrap_or(Path::new("."));
            sync_dir(dir).map_err(|e| Error::io(dir, e))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// fsyncs a directory so that a rename inside it survives a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Removes leftover temporary files (`.*.tmp-*`) from a directory, e.g. after a killed run.
pub fn remove_stale_temps(dir: &Path) -> Result<usize> {
    let mut n = 0;
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.contains(".tmp-") {
            fs::remove_file(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_directory_is_the_old_set_or_the_new_set() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("head");
        publish_dir::<Error>(&out, |s| {
            fs::write(s.join("a"), b"1").map_err(|e| Error::io(s, e))?;
            fs::write(s.join("b"), b"1").map_err(|e| Error::io(s, e))
        })
        .unwrap();
        // A failing fill leaves the old set whole.
        let err = publish_dir::<Error>(&out, |s| {
            fs::write(s.join("a"), b"2").map_err(|e| Error::io(s, e))?;
            Err(Error::io(s, std::io::Error::other("disk full")))
        });
        assert!(err.is_err());
        assert_eq!(fs::read(out.join("a")).unwrap(), b"1");
        assert_eq!(fs::read(out.join("b")).unwrap(), b"1");
        // A successful one replaces it whole; stale files of the old set go with it.
        publish_dir::<Error>(&out, |s| {
            fs::write(s.join("c"), b"3").map_err(|e| Error::io(s, e))
        })
        .unwrap();
        assert!(!out.join("a").exists());
        assert_eq!(fs::read(out.join("c")).unwrap(), b"3");
        // No staging or previous directories are left behind.
        let names: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["head".to_string()]);
    }

    #[test]
    fn write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn failed_write_names_the_path_and_cleans_up() {
        let d = tempfile::tempdir().unwrap();
        // Renaming a file onto a non-empty directory fails.
        let p = d.path().join("target");
        fs::create_dir(&p).unwrap();
        fs::write(p.join("x"), b"x").unwrap();
        let err = write_atomic(&p, b"data").unwrap_err().to_string();
        assert!(err.contains("target"), "{err}");
        assert!(!temp_path(&p).exists());
    }

    #[test]
    fn stale_temps_are_removed() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(".shard-00000.safetensors.tmp-123"), b"x").unwrap();
        fs::write(d.path().join("keep.json"), b"x").unwrap();
        assert_eq!(remove_stale_temps(d.path()).unwrap(), 1);
        assert!(d.path().join("keep.json").exists());
    }
}
