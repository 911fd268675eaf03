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
        let mut warning = None;
        for _ in 0..3 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    f.write_all(me.as_bytes())
                        .map_err(|e| Error::io(&path, e))?;
                    f.sync_all().map_err(|e| Error::io(&path, e))?;
                    return Ok((Self { path }, warning));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = fs::read_to_string(&path).unwrap_or_default();
                    let pid = holder
                        .strip_prefix("pid ")
                        .and_then(|s| s.split_whitespace().next())
                        .and_then(|s| s.parse::<u32>().ok());
                    match pid {
                        Some(pid) if pid_alive(pid) => {
                            return Err(Error::Locked { path, holder });
                        }
                        _ => {
                            warning =
                                Some(format!(
                                "{}: taking over a stale lock left by a process that is gone ({})",
                                path.display(),
                                if holder.is_empty() { "unreadable" } else { holder.trim() }
                            ));
                            fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
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
