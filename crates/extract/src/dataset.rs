//! ImageFolder scanning: classes are the sorted sub-folder names; images are found recursively.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub use headstart_cache::Split;

use crate::{Error, Result};

/// File extensions treated as images (compared case-insensitively).
pub const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "bmp", "gif", "webp", "tif", "tiff"];

/// One image file of the dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetItem {
    /// Path relative to the data directory, `/`-separated, lossy UTF-8.
    pub rel_path: String,
    /// Raw bytes of the relative path (for exact ordering and non-UTF-8 names).
    pub rel_bytes: Vec<u8>,
    /// Path to open.
    pub path: PathBuf,
    /// Class index.
    pub label: usize,
    /// Dataset-defined split.
    pub split: Option<Split>,
}

impl DatasetItem {
    /// Hex of the raw relative path when it is not valid UTF-8.
    pub fn path_bytes_hex(&self) -> Option<String> {
        match std::str::from_utf8(&self.rel_bytes) {
            Ok(_) => None,
            Err(_) => Some(self.rel_bytes.iter().map(|b| format!("{b:02x}")).collect()),
        }
    }
}

/// A scanned ImageFolder dataset.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The data directory.
    pub root: PathBuf,
    /// Class names, sorted.
    pub classes: Vec<String>,
    /// Images in sorted relative-path order.
    pub items: Vec<DatasetItem>,
    /// Whether the dataset has `train/` + `val/` (or `test/`) folders.
    pub has_split: bool,
    /// Things the user should know (ignored files, symlink loops).
    pub notes: Vec<String>,
}

fn os_bytes(s: &std::ffi::OsStr) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        s.as_bytes().to_vec()
    }
    #[cfg(not(unix))]
    {
        s.to_string_lossy().as_bytes().to_vec()
    }
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    os_bytes(name).first() == Some(&b'.')
}

/// True if the file name has an image extension.
pub fn has_image_extension(name: &std::ffi::OsStr) -> bool {
    Path::new(name)
        .extension()
        .map(|e| {
            let e = e.to_string_lossy().to_ascii_lowercase();
            IMAGE_EXTENSIONS.contains(&e.as_str())
        })
        .unwrap_or(false)
}

fn sorted_entries(dir: &Path) -> Result<Vec<(OsString, PathBuf)>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut v: Vec<(OsString, PathBuf)> = rd.flatten().map(|e| (e.file_name(), e.path())).collect();
    v.sort_by_key(|a| os_bytes(&a.0));
    Ok(v)
}

fn class_dirs(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    Ok(sorted_entries(dir)?
        .into_iter()
        .filter(|(n, p)| !is_hidden(n) && p.is_dir())
        .map(|(n, p)| (n.to_string_lossy().into_owned(), p))
        .collect())
}

/// Collects image files under `dir` recursively (following symlinks, never looping).
fn walk(
    dir: &Path,
    rel: &[u8],
    visited: &mut HashSet<PathBuf>,
    out: &mut Vec<(Vec<u8>, PathBuf)>,
    notes: &mut Vec<String>,
) {
    let canon = match std::fs::canonicalize(dir) {
        Ok(c) => c,
        Err(e) => {
            notes.push(format!("{}: cannot resolve ({e}); skipped", dir.display()));
            return;
        }
    };
    if !visited.insert(canon) {
        notes.push(format!(
            "{}: directory already visited (symlink loop?); skipped",
            dir.display()
        ));
        return;
    }
    let entries = match sorted_entries(dir) {
        Ok(e) => e,
        Err(e) => {
            notes.push(format!("{e}; skipped"));
            return;
        }
    };
    for (name, path) in entries {
        if is_hidden(&name) {
            continue;
        }
        let mut r = rel.to_vec();
        if !r.is_empty() {
            r.push(b'/');
        }
        r.extend_from_slice(&os_bytes(&name));
        // metadata() follows symlinks; a dangling link or a loop errors here.
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => walk(&path, &r, visited, out, notes),
            Ok(m) if m.is_file() && has_image_extension(&name) => out.push((r, path)),
            Ok(_) => {}
            Err(e) => notes.push(format!("{}: {e}; skipped", path.display())),
        }
    }
}

impl Dataset {
    /// Scans `root` as an ImageFolder (optionally with `train/` and `val/` or `test/` splits).
    pub fn scan(root: &Path) -> Result<Self> {
        let layout = |reason: String| Error::Layout {
            path: root.to_path_buf(),
            reason,
        };
        if !root.exists() {
            return Err(layout(
                "does not exist; pass the folder that holds one sub-folder per class".into(),
            ));
        }
        if !root.is_dir() {
            return Err(layout(
                "is not a directory; pass the folder that holds one sub-folder per class".into(),
            ));
        }
        let top = class_dirs(root)?;
        let names: Vec<&str> = top.iter().map(|(n, _)| n.as_str()).collect();
        let val_name = ["val", "test"].into_iter().find(|v| names.contains(v));
        let split_roots: Vec<(Option<Split>, PathBuf)> = match (names.contains(&"train"), val_name)
        {
            (true, Some(v)) if names.len() == 2 => {
                vec![
                    (Some(Split::Train), root.join("train")),
                    (Some(Split::Val), root.join(v)),
                ]
            }
            _ => vec![(None, root.to_path_buf())],
        };
        let has_split = split_roots[0].0.is_some();
        let mut classes: Vec<String> = Vec::new();
        for (_, r) in &split_roots {
            for (n, _) in class_dirs(r)? {
                if !classes.contains(&n) {
                    classes.push(n);
                }
            }
        }
        classes.sort();
        let mut notes = Vec::new();
        if classes.is_empty() {
            let loose = sorted_entries(root)?
                .iter()
                .filter(|(n, p)| p.is_file() && has_image_extension(n))
                .count();
            let hint = if loose > 0 {
                format!("it holds {loose} image file(s) directly; move them into one sub-folder per class (e.g. {0}/cats/, {0}/dogs/)", root.display())
            } else {
                "it has no sub-folders; expected one sub-folder per class (ImageFolder layout)"
                    .to_string()
            };
            return Err(layout(format!("no class folders: {hint}")));
        }
        let mut items = Vec::new();
        let mut visited = HashSet::new();
        for (split, r) in &split_roots {
            let split_prefix = if split.is_some() {
                os_bytes(r.file_name().unwrap_or_default())
            } else {
                Vec::new()
            };
            for (label, class) in classes.iter().enumerate() {
                let dir = r.join(class);
                if !dir.is_dir() {
                    continue;
                }
                let mut rel = split_prefix.clone();
                if !rel.is_empty() {
                    rel.push(b'/');
                }
                rel.extend_from_slice(&os_bytes(std::ffi::OsStr::new(class)));
                let mut files = Vec::new();
                walk(&dir, &rel, &mut visited, &mut files, &mut notes);
                for (rel_bytes, path) in files {
                    items.push(DatasetItem {
                        rel_path: String::from_utf8_lossy(&rel_bytes).into_owned(),
                        rel_bytes,
                        path,
                        label,
                        split: *split,
                    });
                }
            }
        }
        items.sort_by(|a, b| a.rel_bytes.cmp(&b.rel_bytes));
        if items.is_empty() {
            return Err(layout(format!(
                "no image files ({}) in the class folders {}",
                IMAGE_EXTENSIONS.join(", "),
                classes.join(", ")
            )));
        }
        if classes.len() < 2 {
            notes.push(format!(
                "only one class ({}): a classifier needs at least two class folders",
                classes[0]
            ));
        }
        Ok(Self {
            root: root.to_path_buf(),
            classes,
            items,
            has_split,
            notes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn classes_sorted_images_recursive_hidden_skipped() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for p in [
            "b/x.JPG",
            "b/sub/y.png",
            "a/z.jpeg",
            "a/.hidden.jpg",
            "a/notes.txt",
            ".git/q.jpg",
            "b/.cache/w.jpg",
        ] {
            let p = r.join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, b"x").unwrap();
        }
        let ds = Dataset::scan(r).unwrap();
        assert_eq!(ds.classes, vec!["a", "b"]);
        let rels: Vec<&str> = ds.items.iter().map(|i| i.rel_path.as_str()).collect();
        assert_eq!(rels, vec!["a/z.jpeg", "b/sub/y.png", "b/x.JPG"]);
        assert_eq!(ds.items[1].label, 1);
        assert!(!ds.has_split);
    }

    #[test]
    fn train_val_split_is_recorded() {
        let d = tempfile::tempdir().unwrap();
        for p in [
            "train/cat/1.jpg",
            "train/dog/2.jpg",
            "val/cat/3.jpg",
            "val/dog/4.jpg",
        ] {
            let p = d.path().join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, b"x").unwrap();
        }
        let ds = Dataset::scan(d.path()).unwrap();
        assert!(ds.has_split);
        assert_eq!(ds.classes, vec!["cat", "dog"]);
        assert_eq!(ds.items[0].rel_path, "train/cat/1.jpg");
        assert_eq!(ds.items[0].split, Some(Split::Train));
        assert_eq!(ds.items[3].split, Some(Split::Val));
    }

    #[test]
    fn loose_images_give_a_layout_hint() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("a.jpg"), b"x").unwrap();
        let err = Dataset::scan(d.path()).unwrap_err().to_string();
        assert!(err.contains("one sub-folder per class"), "{err}");
        let err = Dataset::scan(&d.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn symlink_loops_do_not_hang() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("a/inner")).unwrap();
        fs::write(d.path().join("a/inner/1.jpg"), b"x").unwrap();
        std::os::unix::fs::symlink(d.path().join("a"), d.path().join("a/inner/loop")).unwrap();
        let ds = Dataset::scan(d.path()).unwrap();
        assert_eq!(ds.items.len(), 1);
        assert!(ds.notes.iter().any(|n| n.contains("already visited")));
    }
}
