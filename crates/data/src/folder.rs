//! ImageFolder scanning: classes are the sorted sub-folder names; images are found recursively.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub use headstart_core::config::Split;

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

/// The image format a file's first bytes announce (JPEG, PNG, GIF, BMP, WebP, TIFF, HEIF),
/// whatever its name says.
pub fn sniff_image(path: &Path) -> Option<&'static str> {
    let mut head = [0u8; 12];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .ok()?;
    let h = &head[..n];
    let kind = if h.starts_with(&[0xFF, 0xD8, 0xFF]) {
        "jpeg"
    } else if h.starts_with(b"\x89PNG") {
        "png"
    } else if h.starts_with(b"GIF8") {
        "gif"
    } else if h.starts_with(b"BM") && bmp_header_plausible(path) {
        "bmp"
    } else if h.starts_with(b"RIFF") && n >= 12 && &h[8..12] == b"WEBP" {
        "webp"
    } else if h.starts_with(b"II*\0") || h.starts_with(b"MM\0*") {
        "tiff"
    } else if n >= 12
        && &h[4..8] == b"ftyp"
        && [
            b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis",
        ]
        .iter()
        .any(|b| &h[8..12] == *b)
    {
        // HEIF/AVIF stills (not MP4/MOV videos, which share the `ftyp` box).
        "heif"
    } else {
        return None;
    };
    Some(kind)
}

/// A BMP's DIB header size (bytes 14–17) is one of the defined ones: text that happens to
/// start with "BM" is not an image.
fn bmp_header_plausible(path: &Path) -> bool {
    let mut b = [0u8; 18];
    let ok = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_ok();
    ok && [12u32, 16, 40, 52, 56, 64, 108, 124]
        .contains(&u32::from_le_bytes([b[14], b[15], b[16], b[17]]))
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

/// The class folders of `dir`. With `classes`, these are the dataset's classes: the output
/// folder being one of them is an error (the top level is listed first to find split folders,
/// where the output folder may sit beside them).
fn class_dirs(
    dir: &Path,
    root: &Path,
    skip: &Skip,
    notes: &mut Vec<String>,
    classes: bool,
) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for (n, p) in sorted_entries(dir)? {
        if is_hidden(&n) || !p.is_dir() {
            continue;
        }
        // A class folder that is a link to another folder of the data folder would label the
        // same photos twice: not a class of its own.
        if let Some(note) = link_not_followed(&p, root) {
            notes.push(note);
            continue;
        }
        if classes && skip.is_excluded(&p) {
            // The folder named as the output (the cache being written) is a class folder: the
            // class would silently vanish from the dataset.
            return Err(Error::Layout {
                path: p.clone(),
                reason: "is a class folder of the dataset and also the output folder: the class would be left out; put the output outside the class folders (beside the data folder, say)".into(),
            });
        }
        if skip.skips(&p) {
            notes.push(format!(
                "{}: a headstart cache or head folder, not a class",
                p.display()
            ));
            continue;
        }
        out.push((n.to_string_lossy().into_owned(), p));
    }
    Ok(out)
}

/// Folders a scan does not enter: headstart's outputs, and the ones the caller names.
struct Skip {
    excluded: Vec<PathBuf>,
}

impl Skip {
    /// Whether `dir` is one of the caller's excluded folders.
    fn is_excluded(&self, dir: &Path) -> bool {
        !self.excluded.is_empty()
            && std::fs::canonicalize(dir).is_ok_and(|c| self.excluded.contains(&c))
    }

    fn skips(&self, dir: &Path) -> bool {
        is_headstart_output(dir)
            || (!self.excluded.is_empty()
                && std::fs::canonicalize(dir).is_ok_and(|c| self.excluded.contains(&c)))
    }
}

/// Whether `dir` is headstart's own output (a feature cache or a head), never to be scanned as
/// data even inside the data folder: it holds headstart's lock file, a head, or a cache manifest.
pub fn is_headstart_output(dir: &Path) -> bool {
    if dir.join(headstart_core::files::HEAD_FILE).is_file() {
        return true;
    }
    // A cache still being written for the first time: headstart's lock file beside shards.
    if dir.join(headstart_core::files::LOCK_FILE).is_file()
        && std::fs::read_dir(dir).is_ok_and(|rd| {
            rd.flatten().any(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.starts_with("shard-") && n.ends_with(".safetensors")
            })
        })
    {
        return true;
    }
    let mut head = [0u8; 4096];
    let n = std::fs::File::open(dir.join("manifest.json"))
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .unwrap_or(0);
    let marker = headstart_core::files::CACHE_FORMAT.as_bytes();
    head[..n].windows(marker.len()).any(|w| w == marker)
}

/// The folders to scan and their split: `train/` + `val/` (+ optional `test/`), or the root.
fn split_roots(
    root: &Path,
    names: &[&str],
    notes: &mut Vec<String>,
) -> std::result::Result<Vec<(Option<Split>, PathBuf)>, String> {
    const SPLITS: [&str; 3] = ["train", "val", "test"];
    let present: Vec<&str> = SPLITS.into_iter().filter(|s| names.contains(s)).collect();
    if present.is_empty() {
        return Ok(vec![(None, root.to_path_buf())]);
    }
    let others: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !SPLITS.contains(n))
        .collect();
    let layout_help = format!(
        "use either {0}/train/<class>/ + {0}/val/<class>/ (and optionally {0}/test/<class>/), or {0}/<class>/",
        root.display()
    );
    if present == ["train"] && !others.is_empty() {
        // A class that happens to be called `train` (CIFAR-100 has one): with no val/ or test/
        // beside it, the folder is a flat ImageFolder.
        notes.push(format!(
            "{}/train is taken as a class (there is no val/ or test/ beside it)",
            root.display()
        ));
        return Ok(vec![(None, root.to_path_buf())]);
    }
    if !others.is_empty() {
        return Err(format!(
            "mixes split folders ({}) with other folders ({}); {layout_help}",
            present.join(", "),
            others.join(", ")
        ));
    }
    if !present.contains(&"train") {
        return Err(format!(
            "has {} but no train/ folder; {layout_help}",
            present.join(" and ")
        ));
    }
    if present == ["train"] {
        return Err(format!(
            "has only a train/ folder: pass {}/train as the data folder, or add {}/val/<class>/ for validation",
            root.display(),
            root.display()
        ));
    }
    let mut roots = vec![(Some(Split::Train), root.join("train"))];
    if present.contains(&"val") {
        roots.push((Some(Split::Val), root.join("val")));
        if present.contains(&"test") {
            roots.push((Some(Split::Test), root.join("test")));
        }
    } else {
        notes.push("no val/ folder: test/ is the validation split".into());
        roots.push((Some(Split::Val), root.join("test")));
    }
    Ok(roots)
}

/// What a symbolic link at `path` means for a scan of the folder whose real path is `root`: a
/// link that resolves inside the data folder is not followed — what it points to is scanned at
/// its own place, under its own class, so no image is ever labelled by a path other than its real
/// one (`daisy/x -> ../rose/batch2` does not make roses daisies); a link out of the data folder
/// (a class kept on another disk, a symlink farm) is followed and labelled where the link sits.
/// `Some(note)` when the link is not followed.
fn link_not_followed(path: &Path, root: &Path) -> Option<String> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.file_type().is_symlink() {
        return None;
    }
    match std::fs::canonicalize(path) {
        Ok(target) if target.starts_with(root) => Some(format!(
            "{}: a link to {}, inside the data folder: not followed (that folder or file is scanned at its own place, with its own class)",
            path.display(),
            target.display()
        )),
        Ok(_) => None,
        Err(e) => Some(format!("{}: a link that does not resolve ({e}); skipped", path.display())),
    }
}

/// Collects image files under `dir` recursively (following links out of the data folder whose
/// real path is `root`, never links into it, never looping).
#[allow(clippy::too_many_arguments)]
fn walk(
    skip: &Skip,
    root: &Path,
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
        if let Some(note) = link_not_followed(&path, root) {
            notes.push(note);
            continue;
        }
        // metadata() follows symlinks; a dangling link or a loop errors here.
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() && skip.skips(&path) => notes.push(format!(
                "{}: a headstart cache or head folder, not scanned as images",
                path.display()
            )),
            Ok(m) if m.is_dir() => walk(skip, root, &path, &r, visited, out, notes),
            Ok(m) if m.is_file() && has_image_extension(&name) => out.push((r, path)),
            // Unlisted extensions (.jfif, .jpe, a .heic that is really a JPEG, no extension):
            // decided by content, so that the decoder reads them or names why it cannot.
            Ok(m) if m.is_file() && sniff_image(&path).is_some() => out.push((r, path)),
            Ok(_) => {}
            Err(e) => notes.push(format!("{}: {e}; skipped", path.display())),
        }
    }
}

/// Every image file under `dir`, recursively, in sorted path order: the same rules as a dataset
/// scan (hidden entries and headstart outputs skipped, symlinks followed without loops, images
/// recognised by extension or by content). The second value lists what was skipped and why.
pub fn find_images(dir: &Path) -> (Vec<PathBuf>, Vec<String>) {
    let skip = Skip {
        excluded: Vec::new(),
    };
    let (mut found, mut notes) = (Vec::new(), Vec::new());
    let root = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    walk(
        &skip,
        &root,
        dir,
        &[],
        &mut HashSet::new(),
        &mut found,
        &mut notes,
    );
    (found.into_iter().map(|(_, p)| p).collect(), notes)
}

impl Dataset {
    /// Scans `root` as an ImageFolder (optionally with `train/` and `val/` or `test/` splits).
    pub fn scan(root: &Path) -> Result<Self> {
        Self::scan_excluding(root, &[])
    }

    /// [`Dataset::scan`], never entering the folders in `exclude` (e.g. the cache being
    /// written, when it sits inside the data folder).
    pub fn scan_excluding(root: &Path, exclude: &[&Path]) -> Result<Self> {
        // A folder to exclude that does not exist yet (a first run's cache) is compared by
        // where it will be.
        let planned = |p: &Path| {
            std::fs::canonicalize(p).ok().or_else(|| {
                let parent = p.parent().filter(|q| !q.as_os_str().is_empty())?;
                Some(std::fs::canonicalize(parent).ok()?.join(p.file_name()?))
            })
        };
        let skip = Skip {
            excluded: exclude.iter().filter_map(|p| planned(p)).collect(),
        };
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
        let mut notes = Vec::new();
        let root_real = std::fs::canonicalize(root).map_err(|e| Error::io(root, e))?;
        if skip.excluded.contains(&root_real) {
            return Err(layout(
                "is the data folder and also the output folder: the cache's own folders would be scanned as classes; put the output elsewhere (beside the data folder, say)".into(),
            ));
        }
        let top = class_dirs(root, &root_real, &skip, &mut notes, false)?;
        let names: Vec<&str> = top.iter().map(|(n, _)| n.as_str()).collect();
        let split_roots = split_roots(root, &names, &mut notes).map_err(layout)?;
        let has_split = split_roots[0].0.is_some();
        let mut classes: Vec<String> = Vec::new();
        // Each root's class folders with their real paths: a folder whose name is not UTF-8
        // keeps its raw name on disk and is shown (and recorded) with U+FFFD in its class name.
        let mut listed = Vec::with_capacity(split_roots.len());
        for (split, r) in &split_roots {
            let dirs = class_dirs(r, &root_real, &skip, &mut notes, true)?;
            for pair in dirs.windows(2) {
                // Two raw names that read the same once made UTF-8 would share a label.
                if dirs.iter().filter(|(n, _)| *n == pair[0].0).count() > 1 {
                    let same: Vec<String> = dirs
                        .iter()
                        .filter(|(n, _)| *n == pair[0].0)
                        .map(|(_, p)| format!("{:?}", p.file_name().unwrap_or_default()))
                        .collect();
                    return Err(layout(format!(
                        "class folders {} read as the same name \"{}\" (not valid UTF-8); rename them",
                        same.join(" and "),
                        pair[0].0
                    )));
                }
            }
            for (n, p) in &dirs {
                if !classes.contains(n) {
                    classes.push(n.clone());
                }
                if n.contains(char::REPLACEMENT_CHARACTER) {
                    notes.push(format!(
                        "{}: folder name is not valid UTF-8; its class is shown as \"{n}\"",
                        p.display()
                    ));
                }
            }
            listed.push((*split, r.clone(), dirs));
        }
        classes.sort();
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
        for (split, r, dirs) in &listed {
            let split_prefix = if split.is_some() {
                os_bytes(r.file_name().unwrap_or_default())
            } else {
                Vec::new()
            };
            for (class, dir) in dirs {
                let label = classes
                    .iter()
                    .position(|c| c == class)
                    .expect("every listed class is in the class list");
                let mut rel = split_prefix.clone();
                if !rel.is_empty() {
                    rel.push(b'/');
                }
                rel.extend_from_slice(&os_bytes(dir.file_name().unwrap_or_default()));
                let mut files = Vec::new();
                walk(
                    &skip,
                    &root_real,
                    dir,
                    &rel,
                    &mut visited,
                    &mut files,
                    &mut notes,
                );
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
        // The top level is listed twice (for its split folders, then for its classes).
        let mut seen = HashSet::new();
        notes.retain(|n| seen.insert(n.clone()));
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
    fn train_val_test_are_splits_not_classes() {
        let d = tempfile::tempdir().unwrap();
        for p in [
            "train/cat/1.jpg",
            "train/dog/2.jpg",
            "val/cat/3.jpg",
            "val/dog/4.jpg",
            "test/cat/5.jpg",
            "test/dog/6.jpg",
        ] {
            let p = d.path().join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, b"x").unwrap();
        }
        let ds = Dataset::scan(d.path()).unwrap();
        assert_eq!(ds.classes, vec!["cat", "dog"]);
        let split = |rel: &str| ds.items.iter().find(|i| i.rel_path == rel).unwrap().split;
        assert_eq!(split("train/cat/1.jpg"), Some(Split::Train));
        assert_eq!(split("val/dog/4.jpg"), Some(Split::Val));
        assert_eq!(split("test/cat/5.jpg"), Some(Split::Test));
        // Split folders beside class folders: refused, with the two layouts.
        fs::create_dir_all(d.path().join("daisy")).unwrap();
        fs::write(d.path().join("daisy/7.jpg"), b"x").unwrap();
        let err = Dataset::scan(d.path()).unwrap_err().to_string();
        assert!(
            err.contains("mixes split folders") && err.contains("daisy"),
            "{err}"
        );
        // A class named `train` among other classes, no val/ or test/: a flat dataset.
        let f = tempfile::tempdir().unwrap();
        for p in ["train/1.jpg", "cat/2.jpg"] {
            let p = f.path().join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, b"x").unwrap();
        }
        let flat = Dataset::scan(f.path()).unwrap();
        assert_eq!(flat.classes, vec!["cat", "train"]);
        assert!(!flat.has_split);
        // train/ alone: refused with the fix.
        let e = tempfile::tempdir().unwrap();
        fs::create_dir_all(e.path().join("train/cat")).unwrap();
        fs::write(e.path().join("train/cat/1.jpg"), b"x").unwrap();
        let err = Dataset::scan(e.path()).unwrap_err().to_string();
        assert!(err.contains("only a train/ folder"), "{err}");
    }

    #[test]
    fn headstart_outputs_inside_the_data_folder_are_not_data() {
        let d = tempfile::tempdir().unwrap();
        for p in [
            "cat/1.jpg",
            "dog/2.jpg",
            "dog/cache/shard.jpg",
            "cache/x.jpg",
        ] {
            let p = d.path().join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, b"x").unwrap();
        }
        fs::write(
            d.path().join("cache/manifest.json"),
            br#"{"format": "headstart-feature-cache"}"#,
        )
        .unwrap();
        fs::write(d.path().join("cat/manifest.json"), b"{}").unwrap(); // a user's own file
        fs::write(
            d.path()
                .join("dog/cache")
                .join(headstart_core::files::LOCK_FILE),
            b"",
        )
        .unwrap();
        fs::write(d.path().join("dog/cache/shard-00000.safetensors"), b"").unwrap();
        // A stray lock file alone does not hide a class folder.
        fs::write(
            d.path().join("cat").join(headstart_core::files::LOCK_FILE),
            b"",
        )
        .unwrap();
        let ds = Dataset::scan(d.path()).unwrap();
        assert_eq!(ds.classes, vec!["cat", "dog"]);
        let rels: Vec<&str> = ds.items.iter().map(|i| i.rel_path.as_str()).collect();
        assert_eq!(rels, vec!["cat/1.jpg", "dog/2.jpg"]);
        assert!(ds.notes.iter().any(|n| n.contains("not scanned")));
    }

    #[test]
    fn unlisted_extensions_are_decided_by_content() {
        let d = tempfile::tempdir().unwrap();
        let jpeg = [
            0xFFu8, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F', 0, 1,
        ];
        for (p, bytes) in [
            ("cat/a.jfif", &jpeg[..]),
            ("cat/b.jpe", &jpeg[..]),
            ("cat/c.heic", &jpeg[..]),
            ("cat/d", &b"\0\0\0\x18ftypheic\0\0\0\0"[..]),
            ("cat/clip.mov", &b"\0\0\0\x18ftypqt  \0\0\0\0"[..]),
            ("cat/bm.txt", &b"BMW notes, not a bitmap at all"[..]),
            ("cat/notes.txt", &b"just text"[..]),
            ("dog/e.jpg", &jpeg[..]),
        ] {
            let p = d.path().join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, bytes).unwrap();
        }
        let ds = Dataset::scan(d.path()).unwrap();
        let rels: Vec<&str> = ds.items.iter().map(|i| i.rel_path.as_str()).collect();
        // The real HEIF file is listed too: the decoder then names why it is skipped.
        assert_eq!(
            rels,
            vec![
                "cat/a.jfif",
                "cat/b.jpe",
                "cat/c.heic",
                "cat/d",
                "dog/e.jpg"
            ]
        );
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
    fn non_utf8_class_folders_keep_their_images() {
        use std::os::unix::ffi::OsStrExt;
        let d = tempfile::tempdir().unwrap();
        let odd = d.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
        fs::create_dir_all(&odd).unwrap();
        fs::write(odd.join("1.jpg"), b"x").unwrap();
        fs::create_dir_all(d.path().join("dog")).unwrap();
        fs::write(d.path().join("dog/2.jpg"), b"x").unwrap();
        let ds = Dataset::scan(d.path()).unwrap();
        assert_eq!(ds.classes, vec!["caf\u{FFFD}", "dog"]);
        assert_eq!(ds.items.len(), 2);
        assert_eq!(ds.items[0].rel_bytes, b"caf\xe9/1.jpg");
        assert_eq!(ds.items[0].path, odd.join("1.jpg"));
        assert!(ds.notes.iter().any(|n| n.contains("not valid UTF-8")));
        // Two raw names that read the same once made UTF-8 would share a label: refused.
        let twin = d.path().join(std::ffi::OsStr::from_bytes(b"caf\xe8"));
        fs::create_dir_all(&twin).unwrap();
        fs::write(twin.join("3.jpg"), b"x").unwrap();
        let err = Dataset::scan(d.path()).unwrap_err().to_string();
        assert!(err.contains("read as the same name"), "{err}");
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
        assert!(ds.notes.iter().any(|n| n.contains("not followed")));
    }

    #[cfg(unix)]
    #[test]
    fn a_link_into_another_class_never_relabels_its_images() {
        use std::os::unix::fs::symlink;
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        fs::create_dir_all(data.join("daisy")).unwrap();
        fs::create_dir_all(data.join("rose/batch2")).unwrap();
        fs::write(data.join("daisy/d.jpg"), b"x").unwrap();
        fs::write(data.join("rose/batch2/r.jpg"), b"x").unwrap();
        // Links into the data folder: a folder, a file, and a whole class.
        symlink("../rose/batch2", data.join("daisy/x")).unwrap();
        symlink("../rose/batch2/r.jpg", data.join("daisy/r-again.jpg")).unwrap();
        symlink("rose", data.join("roses-too")).unwrap();
        // A link out of the data folder: a class kept elsewhere, followed.
        let elsewhere = d.path().join("elsewhere");
        fs::create_dir_all(&elsewhere).unwrap();
        fs::write(elsewhere.join("t.jpg"), b"x").unwrap();
        symlink(&elsewhere, data.join("tulip")).unwrap();
        let ds = Dataset::scan(&data).unwrap();
        assert_eq!(ds.classes, ["daisy", "rose", "tulip"]);
        let got: Vec<(&str, &str)> = ds
            .items
            .iter()
            .map(|i| (i.rel_path.as_str(), ds.classes[i.label].as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("daisy/d.jpg", "daisy"),
                ("rose/batch2/r.jpg", "rose"),
                ("tulip/t.jpg", "tulip")
            ]
        );
        assert_eq!(
            ds.notes
                .iter()
                .filter(|n| n.contains("not followed"))
                .count(),
            3,
            "{:?}",
            ds.notes
        );
    }
}
