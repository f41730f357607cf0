//! Helpers shared by the CLI test files: run the `mtrec` binary and read what it printed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `mtrec` with `args`, logs limited to warnings.
pub fn mtrec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mtrec"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running mtrec")
}

/// Everything the command printed, stdout then stderr.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Simulates and prepares the `tiny` world in `dir`; returns the prepared folder.
#[allow(dead_code)] // not every test file trains
pub fn tiny_prepared(dir: &Path) -> PathBuf {
    let world = dir.join("world");
    let o = mtrec(&[
        "synth",
        "--preset",
        "tiny",
        "--out",
        world.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let prepared = dir.join("prepared");
    let o = mtrec(&[
        "prepare",
        "--format",
        "csv",
        world.join("interactions.csv").to_str().unwrap(),
        "--out",
        prepared.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    prepared
}
