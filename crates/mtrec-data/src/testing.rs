//! For this workspace's tests: the real data in `../shared` beside the project root (present in CI,
//! absent in a user's clone). `MTREC_SHARED` overrides the folder.

use std::path::{Path, PathBuf};

/// `../shared/<rel>` when it exists; otherwise prints a one-line skip notice and returns `None`.
pub fn shared_path(rel: &str) -> Option<PathBuf> {
    let root = std::env::var_os("MTREC_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let p = root.join(rel);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipping: ../shared/{rel} not found (it exists in CI)");
        None
    }
}
