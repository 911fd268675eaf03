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
