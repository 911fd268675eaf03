//! Files inside a cache, part or head directory are untrusted input: such a directory is handed
//! between people and machines, so anything may be in it. Every file headstart opens there goes
//! through this module:
//!
//! - links are not followed (`O_NOFOLLOW` on the file; folders below the directory the user
//!   named must be real folders), so nothing inside makes headstart read or write outside it;
//! - only regular files are read (a FIFO would block, a device never end), opened without
//!   blocking and checked with `fstat` before a byte is read;
//! - sizes are bounded before reading: a file longer than the caller's limit is refused, naming
//!   its size, instead of being read until memory runs out.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::Path;

#[cfg(unix)]
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};

/// `O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC` where the platform has them.
fn no_follow(o: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    o.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC);
    o
}

/// The error for a link where a file or folder must be.
fn link_error(path: &Path) -> io::Error {
    io::Error::other(format!(
        "{} is a symbolic link; headstart does not follow links inside a cache or head folder (replace it with the real file)",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ))
}

/// What a non-regular file is, in words.
fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    #[cfg(unix)]
    {
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// Maps `ELOOP` (what `O_NOFOLLOW` answers for a link) to a sentence.
fn open_error(path: &Path, e: io::Error) -> io::Error {
    #[cfg(unix)]
    if e.raw_os_error() == Some(libc::ELOOP) {
        return link_error(path);
    }
    let _ = path;
    e
}

/// Opens `path` for reading: not through a link, a regular file only, never blocking.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let f = no_follow(OpenOptions::new().read(true))
        .open(path)
        .map_err(|e| open_error(path, e))?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other(format!(
            "is {}, not a regular file",
            kind_of(&meta)
        )));
    }
    Ok(f)
}

/// Reads all of `path` (see [`open_regular`]) if it holds at most `max` bytes; a longer file is
/// refused, naming its size, before any of it is read.
pub fn read_regular(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let mut f = open_regular(path)?;
    let len = f.metadata()?.len();
    if len > max {
        return Err(io::Error::other(format!(
            "holds {len} bytes, more than the {max} expected here"
        )));
    }
    let mut v = Vec::with_capacity(len as usize);
    // A file growing while it is read is cut at the limit, and then refused.
    (&mut f).take(max + 1).read_to_end(&mut v)?;
    if v.len() as u64 > max {
        return Err(io::Error::other(format!(
            "grew past {max} bytes while it was read"
        )));
    }
    Ok(v)
}

/// Which file, and which version of it: device, inode, length and the modification and change
/// times. The change time moves with every write and cannot be set back from user space, so a
/// file rewritten in place (or replaced) gets another stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileStamp {
    /// The stamp of an open file.
    pub fn of(f: &File) -> io::Result<Self> {
        Ok(Self::from_meta(&f.metadata()?))
    }

    fn from_meta(m: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Self {
                dev: m.dev(),
                ino: m.ino(),
                len: m.len(),
                mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
                ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
            }
        }
        #[cfg(not(unix))]
        {
            let t = |t: io::Result<std::time::SystemTime>| {
                t.ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos() as i128)
            };
            Self {
                dev: 0,
                ino: 0,
                len: m.len(),
                mtime_ns: t(m.modified()),
                ctime_ns: 0,
            }
        }
    }
}

/// [`read_regular`], and the file's stamp; refused if the file changed while it was read.
pub fn read_regular_stamped(path: &Path, max: u64) -> io::Result<(Vec<u8>, FileStamp)> {
    let mut f = open_regular(path)?;
    let before = FileStamp::of(&f)?;
    if before.len > max {
        return Err(io::Error::other(format!(
            "holds {} bytes, more than the {max} expected here",
            before.len
        )));
    }
    let mut v = Vec::with_capacity(before.len as usize);
    (&mut f).take(max + 1).read_to_end(&mut v)?;
    let after = FileStamp::of(&f)?;
    if after != before || v.len() as u64 != before.len {
        return Err(io::Error::other("changed while it was read"));
    }
    Ok((v, before))
}

/// Opens (creating if missing, never truncating) a lock file for reading and writing: not through
/// a link, a regular file only.
pub fn open_lock_file(path: &Path) -> io::Result<File> {
    let f = no_follow(
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false),
    )
    .open(path)
    .map_err(|e| open_error(path, e))?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other(format!(
            "is {}, not a regular file",
            kind_of(&meta)
        )));
    }
    Ok(f)
}

/// Opens an existing lock file read-only (a read-only copy of a cache): the same checks.
pub fn open_lock_file_read_only(path: &Path) -> io::Result<File> {
    open_regular(path)
}

/// Creates `path` exclusively for writing (a temporary file): never through a link, never an
/// existing file.
pub fn create_new(path: &Path) -> io::Result<File> {
    no_follow(OpenOptions::new().write(true).create_new(true))
        .open(path)
        .map_err(|e| open_error(path, e))
}

/// `Ok` if `path` is a real folder (not a link to one), `NotFound` if it does not exist.
pub fn real_dir(path: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Err(link_error(path));
    }
    if !meta.is_dir() {
        return Err(io::Error::other(format!(
            "is {}, expected a folder",
            kind_of(&meta)
        )));
    }
    Ok(())
}

/// Creates the folder `path` if it is missing (its parent must exist); an existing `path` must
/// be a real folder.
pub fn ensure_real_dir(path: &Path) -> io::Result<()> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => real_dir(path),
        Err(e) => Err(e),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn links_fifos_and_big_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        std::fs::write(&outside, b"secret").unwrap();
        let inside = d.path().join("in");
        std::fs::create_dir(&inside).unwrap();
        std::os::unix::fs::symlink(&outside, inside.join("link")).unwrap();
        let e = read_regular(&inside.join("link"), 100).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // A link as a lock file: refused, and the target keeps its bytes.
        assert!(open_lock_file(&inside.join("link")).is_err());
        assert_eq!(std::fs::read(&outside).unwrap(), b"secret");
        // A FIFO does not block.
        let fifo = inside.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_regular(&fifo, 100).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        // A device is not read.
        let e = read_regular(Path::new("/dev/zero"), 100).unwrap_err();
        assert!(e.to_string().contains("device"), "{e}");
        // Longer than allowed: refused before reading.
        std::fs::write(inside.join("big"), vec![0u8; 1000]).unwrap();
        let e = read_regular(&inside.join("big"), 999).unwrap_err();
        assert!(e.to_string().contains("1000 bytes"), "{e}");
        assert_eq!(read_regular(&inside.join("big"), 1000).unwrap().len(), 1000);
        // Folders: a link to one is not a folder here.
        std::os::unix::fs::symlink(d.path(), inside.join("dirlink")).unwrap();
        assert!(real_dir(&inside.join("dirlink")).is_err());
        assert!(ensure_real_dir(&inside.join("dirlink")).is_err());
        ensure_real_dir(&inside.join("new")).unwrap();
        real_dir(&inside.join("new")).unwrap();
        // An existing temp name (or a link planted there) is never written through.
        assert!(create_new(&inside.join("link")).is_err());
    }
}
