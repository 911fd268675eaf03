//! Test helpers shared by headstart's crates (a dev-dependency only).

use std::path::PathBuf;

/// The shared inputs folder (`../shared` beside the checkout: photos, weights, fixtures).
///
/// # Panics
/// With one clear message when the folder is missing, instead of a file-not-found deep inside
/// whichever test ran first.
pub fn shared_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    if !dir.is_dir() {
        panic!(
            "the shared test inputs are missing: expected a `shared` folder beside the checkout \
             ({}), holding data/flowers, weights/ and fixtures/ (see README.md, Tests)",
            dir.display()
        );
    }
    dir
}

/// A path inside the shared inputs folder (see [`shared_dir`]).
pub fn shared(rel: &str) -> PathBuf {
    shared_dir().join(rel)
}

/// Every file under `dir`, recursively (the journal's too), as (path relative to `dir` with `/`
/// separators, bytes), sorted; the lock file `.headstart.lock` is left out (it names the last
/// writer's pid). Two caches with equal snapshots are the same cache.
pub fn snapshot(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    fn walk(dir: &std::path::Path, prefix: &str, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap()) {
            if e.file_name() == ".headstart.lock" {
                continue;
            }
            let name = format!("{prefix}{}", e.file_name().to_string_lossy());
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), &format!("{name}/"), out);
            } else {
                out.push((name, std::fs::read(e.path()).unwrap()));
            }
        }
    }
    let mut v = Vec::new();
    walk(dir, "", &mut v);
    v.sort();
    v
}

/// What a reader of a cache sees: `manifest.json` and the shards at the top of `dir`, with their
/// bytes, sorted by name.
pub fn cache_files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n == "manifest.json" || n.ends_with(".safetensors")
        })
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Links photos `range` (in sorted order) of each of `classes` from the shared flowers into
/// `root/<class>/`: a small real dataset without copying.
pub fn link_photos(root: &std::path::Path, classes: &[&str], range: std::ops::Range<usize>) {
    for class in classes {
        let mut photos: Vec<PathBuf> = std::fs::read_dir(shared("data/flowers").join(class))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        photos.sort();
        std::fs::create_dir_all(root.join(class)).unwrap();
        for p in &photos[range.clone()] {
            std::os::unix::fs::symlink(p, root.join(class).join(p.file_name().unwrap())).unwrap();
        }
    }
}
