//! Directory locks (`.headstart.lock`) so that two runs never write the same directory and a
//! reader never trains on a cache that is still being written.
//!
//! The lock is the kernel's (`flock` through `std::fs::File::try_lock`): it belongs to the open
//! file and dies with the process, so there is no stale lock to judge and no window between
//! "judged stale" and "removed" in which a second writer can slip in. The file itself stays; the
//! holder's pid and command line are written into it only to name the holder in messages.

use std::fs::{self, File, TryLockError};
use std::io::{Seek, Write};
use std::path::Path;

use crate::{Error, Result};

/// The lock file name inside a locked directory.
pub const LOCK_FILE: &str = headstart_core::files::LOCK_FILE;

/// Holds a directory's lock until dropped: exclusive for a writer, shared for readers.
#[derive(Debug)]
pub struct DirLock {
    file: Option<File>,
    exclusive: bool,
}

fn holder_of(path: &Path) -> String {
    let bytes = crate::safe_fs::read_regular(path, 64 << 10).unwrap_or_default();
    let s = String::from_utf8_lossy(&bytes);
    let s = headstart_core::text::for_terminal(s.trim()).into_owned();
    let s = s.trim();
    if s.is_empty() {
        "another process (it has not written its name yet)".into()
    } else {
        s.to_string()
    }
}

/// Removes `.headstart.lock-pending-PID` files that an earlier version left behind when killed.
fn clean_pending(dir: &Path) {
    let prefix = format!("{LOCK_FILE}-pending-");
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

impl DirLock {
    /// Takes the exclusive (writer's) lock of `dir`, which must exist. Fails at once, naming
    /// the holder, if another process holds the lock in either mode. The second value is a
    /// note for the user, if any (kept for callers that print one; there are none today).
    pub fn acquire(dir: &Path) -> Result<(Self, Option<String>)> {
        let path = dir.join(LOCK_FILE);
        // Never through a link, never anything but a regular file: a lock file planted as a
        // link to a file elsewhere must not get that file truncated.
        let file = crate::safe_fs::open_lock_file(&path).map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                // Readers hold it shared (and write no name); a writer holds it exclusively.
                let readers =
                    crate::safe_fs::open_regular(&path).is_ok_and(|f| f.try_lock_shared().is_ok());
                return Err(Error::Locked {
                    holder: if readers {
                        "being read, by train-head or cache verify/info".into()
                    } else {
                        holder_of(&path)
                    },
                    path,
                });
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        clean_pending(dir);
        let me = format!(
            "pid {} ({})",
            std::process::id(),
            std::env::args().collect::<Vec<_>>().join(" ")
        );
        let write = |mut f: &File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.rewind()?;
            f.write_all(me.as_bytes())
        };
        write(&file).map_err(|e| Error::io(&path, e))?;
        Ok((
            Self {
                file: Some(file),
                exclusive: true,
            },
            None,
        ))
    }

    /// Takes a shared (reader's) lock of `dir`: any number of readers, no writer. Fails at once,
    /// naming the writer, if a writer holds the lock. A directory without a lock file that cannot
    /// be written (a read-only copy) has no writer either, and is read without a lock.
    pub fn acquire_shared(dir: &Path) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        // A link or a non-file where the lock file belongs: refused, not followed (and nothing
        // is created at the link's target).
        if let Ok(meta) = fs::symlink_metadata(&path) {
            if meta.file_type().is_symlink() || !meta.is_file() {
                return Err(Error::io(
                    &path,
                    crate::safe_fs::open_regular(&path)
                        .err()
                        .unwrap_or_else(|| std::io::Error::other("not a regular file")),
                ));
            }
        }
        let file = match crate::safe_fs::open_lock_file(&path) {
            Ok(f) => f,
            // Read-only filesystem or directory: an existing lock file can still be locked
            // through a read-only handle; no lock file means nobody can be writing there.
            Err(_) => match crate::safe_fs::open_lock_file_read_only(&path) {
                Ok(f) => f,
                Err(_) => {
                    return Ok(Self {
                        file: None,
                        exclusive: false,
                    })
                }
            },
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(Self {
                file: Some(file),
                exclusive: false,
            }),
            Err(TryLockError::WouldBlock) => Err(Error::Locked {
                holder: holder_of(&path),
                path,
            }),
            Err(TryLockError::Error(e)) => Err(Error::io(&path, e)),
        }
    }

    /// Whether this is the writer's lock.
    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        if let Some(f) = self.file.take() {
            if self.exclusive {
                // Clear the name so that a later reader's message does not name a process that
                // is gone; the file stays (removing it would let two processes lock two files).
                let _ = f.set_len(0);
            }
            let _ = f.unlock();
        }
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
    fn a_dead_writers_lock_file_is_no_lock() {
        let d = tempfile::tempdir().unwrap();
        // What a killed writer leaves: the file with its name, but no kernel lock.
        fs::write(d.path().join(LOCK_FILE), "pid 99999999 (headstart extract)").unwrap();
        fs::write(d.path().join(format!("{LOCK_FILE}-pending-99999999")), "x").unwrap();
        let (_lock, warn) = DirLock::acquire(d.path()).unwrap();
        assert!(warn.is_none());
        assert!(!d
            .path()
            .join(format!("{LOCK_FILE}-pending-99999999"))
            .exists());
    }

    #[test]
    fn readers_share_and_exclude_the_writer() {
        let d = tempfile::tempdir().unwrap();
        let r1 = DirLock::acquire_shared(d.path()).unwrap();
        let r2 = DirLock::acquire_shared(d.path()).unwrap();
        let err = DirLock::acquire(d.path()).unwrap_err().to_string();
        assert!(err.contains("being read"), "{err}");
        drop((r1, r2));
        let (w, _) = DirLock::acquire(d.path()).unwrap();
        let err = DirLock::acquire_shared(d.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(w);
        assert!(DirLock::acquire_shared(d.path()).is_ok());
    }

    /// Many threads racing for one directory whose lock file names a dead process (each open
    /// is its own lock owner, as two processes would be): exactly one wins each round. The
    /// read-judge-unlink scheme this replaced let two "take over" such a lock.
    #[test]
    fn exactly_one_of_many_racing_writers_gets_the_lock() {
        let d = tempfile::tempdir().unwrap();
        for _ in 0..50 {
            fs::write(d.path().join(LOCK_FILE), "pid 99999999 (headstart extract)").unwrap();
            let barrier = std::sync::Barrier::new(8);
            let locks: Vec<Option<DirLock>> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..8)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            DirLock::acquire(d.path()).ok().map(|(l, _)| l)
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert_eq!(locks.iter().filter(|l| l.is_some()).count(), 1);
        }
    }
}
