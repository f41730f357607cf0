//! `cargo xtask`: project automation in Rust (see `cargo xtask --help`).
//!
//! - `reproduce-table1`: the paper's Table 1 (8 backbones x plain / IRL / MTRec), resumable;
//! - `quickstart`: the simulator's small worlds, simulated and prepared, offline;
//! - `bench-prepare`: the ingestion benchmark of the README (Electronics-scale raw files, our
//!   `mtrec prepare` beside a pandas implementation of the same steps);
//! - `bench-batch`: samples/s of the MDP batcher on a prepared dataset;
//! - `bench-train`: training samples/s of every backbone in candle beside the same model in
//!   PyTorch (`xtask/bench/train_torch.py`);
//! - `gen-amazon`: the raw-format generator behind the two above.

mod bench_batch;
mod bench_prepare;
mod bench_train;
mod fig2;
mod gen_amazon;
mod table1;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mtrec_alloc::MiMalloc = mtrec_alloc::MiMalloc;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "mtrec project automation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The paper's Table 1: reward models, plain / IRL / MTRec recommenders for every backbone,
    /// dataset and seed, evaluated and compared paired by seed (experiments/table1.yaml).
    /// Resumable: finished cells are never recomputed.
    ReproduceTable1(table1::Args),
    /// The paper's Figure 2 (RQ2): PPO and SAC on the Virtual Taobao simulator with and without
    /// the mental reward, paired by seed (experiments/fig2.yaml). Resumable.
    ReproduceFig2(fig2::Args),
    /// The main job on the embedded default data (offline): the simulator's electronics-small and
    /// books-small worlds, prepared, with their statistics and ground truth.
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
    /// Time the MDP batcher on a prepared dataset (samples/s into padded tensors).
    BenchBatch(bench_batch::Args),
    /// Training throughput (samples/s) of every backbone at batch 1024, candle beside PyTorch
    /// (also `cargo xtask bench`).
    #[command(alias = "bench")]
    BenchTrain(bench_train::Args),
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
    mtrec_alloc::tune();
    let cli = Cli::parse();
    // The grid prints one line per cell; the libraries' per-run logs would bury them.
    let default_filter = match cli.command {
        Cmd::ReproduceTable1(_) | Cmd::ReproduceFig2(_) => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    match cli.command {
        Cmd::ReproduceTable1(args) => table1::run(args),
        Cmd::ReproduceFig2(args) => fig2::run(args),
        Cmd::Quickstart { dir, seed } => quickstart(&dir, seed),
        Cmd::BenchPrepare(args) => bench_prepare::run(args),
        Cmd::BenchBatch(args) => bench_batch::run(args),
        Cmd::BenchTrain(args) => bench_train::run(args),
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

/// `mtrec prepare` of Amazon 2014 JSON as a library call: reads `inputs` with the category
/// `rule`, prepares and writes `out` (replacing it).
/// xtask calls the libraries in-process rather than a nested `cargo build` of the binary, which would
/// see the environment of `cargo run` and rebuild dependencies.
pub fn prepare_amazon(
    inputs: &[PathBuf],
    out: &Path,
    seed: u64,
    rule: mtrec_data::CategoryRule,
) -> Result<mtrec_data::PreparedDataset> {
    let cfg = mtrec_data::PrepareConfig {
        seed,
        ..mtrec_data::PrepareConfig::default()
    };
    let read = mtrec_data::ReadOptions {
        category_rule: rule,
        ..mtrec_data::ReadOptions::default()
    };
    let ds = mtrec_data::prepare_files(mtrec_data::Format::AmazonJson, inputs, &read, &cfg)?;
    ds.save(out, true)?;
    Ok(ds)
}

/// Simulates the world of `preset` into `world_dir` and prepares its log into `prepared_dir` (both
/// replaced), as `mtrec synth` and `mtrec prepare --format csv` would.
pub fn synthesize_and_prepare(
    preset: &str,
    seed: u64,
    world_dir: &Path,
    prepared_dir: &Path,
) -> Result<(mtrec_synth::World, mtrec_data::PreparedDataset)> {
    let cfg = mtrec_synth::SynthConfig::preset(preset, seed)?;
    let (world, _) = mtrec_synth::synthesize(&cfg, world_dir, true)?;
    let prep = mtrec_data::PrepareConfig {
        seed,
        ..mtrec_data::PrepareConfig::default()
    };
    let ds = mtrec_data::prepare_files(
        mtrec_data::Format::Csv,
        &[world_dir.join(mtrec_synth::files::INTERACTIONS)],
        &mtrec_data::ReadOptions::default(),
        &prep,
    )?;
    ds.save(prepared_dir, true)?;
    Ok((world, ds))
}

/// The README's main job on the embedded default data: the simulator's `electronics-small` and
/// `books-small` worlds, each prepared like a real log, with their statistics and ground truth.
fn quickstart(dir: &Path, seed: u64) -> Result<()> {
    for preset in ["electronics-small", "books-small"] {
        let world_dir = dir.join(preset).join("world");
        let prepared = dir.join(preset).join("prepared");
        let (world, ds) = synthesize_and_prepare(preset, seed, &world_dir, &prepared)?;
        let truth = world.summary();
        println!("== {preset} (seed {seed}) ==");
        print!("{}", ds.stats());
        println!(
            "{:<22}{:.1}% of engagements satisfied, mean true reward {:.3}",
            "ground truth",
            100.0 * truth.satisfied_share,
            truth.mean_true_reward
        );
        println!(
            "{:<22}{}\n{:<22}{}\n",
            "world",
            world_dir.display(),
            "prepared",
            prepared.display()
        );
    }
    println!(
        "inspect a dataset again with: cargo run --release -p mtrec-cli -- stats <prepared folder>"
    );
    Ok(())
}
