//! Helpers shared by the CLI test files: run the `mtrec` binary and read what it printed.

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
