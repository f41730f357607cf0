//! `cargo xtask`: project automation in Rust (see `cargo xtask --help`).
//!
//! - `quickstart`: generates a small Amazon-2014-format log and runs `mtrec prepare` and `mtrec stats`
//!   on it, all offline;
//! - `bench-prepare`: the ingestion benchmark of the README (Electronics-scale raw files, our
//!   `mtrec prepare` beside a pandas implementation of the same steps).

mod bench_prepare;
mod gen_amazon;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "mtrec project automation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate a small raw Amazon-format log, prepare it and print its statistics (offline).
    Quickstart {
        /// Where the generated log and the prepared dataset go.
        #[arg(long, default_value = "runs/quickstart")]
        dir: PathBuf,
        /// Seed of the generator and of `prepare`.
        #[arg(long, default_value_t = 1234)]
        seed: u64,
    },
    /// Benchmark `mtrec prepare` on Electronics-scale raw input, beside pandas when it is installed.
    BenchPrepare(bench_prepare::Args),
    /// Generate raw Amazon-2014-format files (reviews JSON lines + Python-literal meta).
    GenAmazon {
        /// small or electronics.
        #[arg(long, default_value = "small")]
        scale: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 1234)]
        seed: u64,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    match Cli::parse().command {
        Cmd::Quickstart { dir, seed } => quickstart(&dir, seed),
        Cmd::BenchPrepare(args) => bench_prepare::run(args),
        Cmd::GenAmazon { scale, out, seed } => {
            let mut cfg = gen_config(&scale)?;
            cfg.seed = seed;
            let g = gen_amazon::generate(&cfg, &out, "Synthetic")?;
            println!(
                "wrote {} ({} reviews) and {} ({} items)",
                g.reviews_path.display(),
                g.reviews,
                g.meta_path.display(),
                g.meta_lines
            );
            Ok(())
        }
    }
}

fn gen_config(scale: &str) -> Result<gen_amazon::GenConfig> {
    Ok(match scale {
        "small" => gen_amazon::GenConfig::small(),
        "electronics" => gen_amazon::GenConfig::electronics_scale(),
        other => bail!("unknown scale '{other}' (expected small or electronics)"),
    })
}

/// The workspace root (xtask lives one folder below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Builds the release `mtrec` binary and returns its path.
pub fn mtrec_binary() -> Result<PathBuf> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--quiet", "--release", "--package", "mtrec-cli", "--bin", "mtrec"])
        .current_dir(root())
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("building mtrec failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    Ok(target.join("release").join("mtrec"))
}

fn quickstart(dir: &Path, seed: u64) -> Result<()> {
    let mtrec = mtrec_binary()?;
    let raw = dir.join("raw");
    let mut cfg = gen_amazon::GenConfig::small();
    cfg.seed = seed;
    let g = gen_amazon::generate(&cfg, &raw, "Synthetic")?;
    tracing::info!("generated {} reviews of {} items in {}", g.reviews, g.meta_lines, raw.display());
    let prepared = dir.join("prepared");
    let status = Command::new(&mtrec)
        .arg("prepare")
        .args(["--format", "amazon-json"])
        .arg(&g.reviews_path)
        .arg(&g.meta_path)
        .arg("--out")
        .arg(&prepared)
        .args(["--seed", &seed.to_string(), "--force"])
        .status()
        .context("running mtrec prepare")?;
    if !status.success() {
        bail!("mtrec prepare failed");
    }
    println!("\nprepared dataset: {}", prepared.display());
    println!("inspect it again with: target/release/mtrec stats {}", prepared.display());
    Ok(())
}
