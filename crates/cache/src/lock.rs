//! An advisory lock file (`.lock`) so that two runs never write the same directory.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The lock file name inside a locked directory.
pub const LOCK_FILE: &str = ".headstart.lock";

/// Holds the lock of a directory until dropped.
#[derive(Debug)]
pub struct DirLock {
    path: PathBuf,
}

/// Whether the process with this pid is alive (Linux: `/proc/PID` exists).
fn pid_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    #[cfg(target_os = "linux")]
    {
        Path::new(&format!("/proc/{pid}")).exists()
    }
    #[cfg(not(target_os = "linux"))]
    {
        true
    }
}

impl DirLock {
    /// Takes the lock of `dir` (which must exist). Fails at once if a live process holds it;
    /// a lock left by a dead process is taken over and a warning returned.
    pub fn acquire(dir: &Path) -> Result<(Self, Option<String>)> {
        let path = dir.join(LOCK_FILE);
        let me = format!(
            "pid {} ({})",
            std::process::id(),
            std::env::args().collect::<Vec<_>>().join(" ")
        );
        // The lock appears with its content already in it (a hard link to a written temp file),
        // so another process never reads an empty lock and mistakes it for a stale one.
        let tmp = dir.join(format!("{LOCK_FILE}-pending-{}", std::process::id()));
        let write_tmp = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(me.as_bytes())?;
            f.sync_all()
        };
        write_tmp().map_err(|e| Error::io(&tmp, e))?;
        let result = Self::link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        result
    }

    fn link(tmp: &Path, path: PathBuf) -> Result<(Self, Option<String>)> {
        let mut warning = None;
        for _ in 0..3 {
            match fs::hard_link(tmp, &path) {
                Ok(()) => return Ok((Self { path }, warning)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = fs::read_to_string(&path).unwrap_or_default();
                    let pid = holder
                        .strip_prefix("pid ")
                        .and_then(|s| s.split_whitespace().next())
                        .and_then(|s| s.parse::<u32>().ok());
                    match pid {
                        Some(pid) if pid_alive(pid) => return Err(Error::Locked { path, holder }),
                        _ => {
                            warning =
                                Some(format!(
                                "{}: taking over a stale lock left by a process that is gone ({})",
                                path.display(),
                                if holder.is_empty() { "unreadable" } else { holder.trim() }
                            ));
                            match fs::remove_file(&path) {
                                Ok(()) => {}
                                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                                Err(e) => return Err(Error::io(&path, e)),
                            }
                        }
                    }
                }
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Err(Error::Locked {
            path,
            holder: "another process keeps re-creating the lock".into(),
        })
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_and_names_the_holder() {
        let d = tempfile::tempdir().unwrap();
        let (lock, warn) = DirLock::acquire(d.path()).unwrap();
        assert!(warn.is_none());
        let err = DirLock::acquire(d.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(lock);
        assert!(DirLock::acquire(d.path()).is_ok());
    }

    #[test]
    fn stale_lock_is_taken_over_with_a_warning() {
        let d = tempfile::tempdir().unwrap();
        // pid_max on Linux is at most 2^22, so this pid cannot exist.
        fs::write(d.path().join(LOCK_FILE), "pid 99999999 (headstart extract)").unwrap();
        let (_lock, warn) = DirLock::acquire(d.path()).unwrap();
        assert!(warn.unwrap().contains("stale lock"));
    }
}
