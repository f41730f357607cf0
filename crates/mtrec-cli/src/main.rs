//! `mtrec`: the command line of the mtrec workspace.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use mtrec_data::{
    prepare_files, CategoryRule, ColumnMap, Format, NegativeRule, PrepareConfig, PreparedDataset,
    ReadOptions,
};

mod download;
mod progress;
mod reward;
mod synth;
mod train;

#[global_allocator]
static GLOBAL: mtrec_alloc::MiMalloc = mtrec_alloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "mtrec",
    version,
    about = "MTRec: reward-aligned recommendation (NeurIPS 2025), in Rust"
)]
struct Cli {
    /// Log filter (tracing syntax), e.g. `debug` or `mtrec_data=debug`; also read from RUST_LOG.
    #[arg(long, global = true, default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read raw logs and write a prepared dataset (ids, order, negatives, split, provenance).
    Prepare(Box<PrepareArgs>),
    /// Print the statistics of a prepared dataset.
    Stats {
        /// The prepared dataset folder.
        dir: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Opt-in: download the raw Amazon 2014 Electronics or Books files (needs internet and curl).
    Download(download::DownloadArgs),
    /// Generate a simulated world with ground-truth mental rewards (log + hidden truth).
    Synth(synth::SynthArgs),
    /// Train a recommender (L_CE + kappa L_Align) on a prepared dataset and evaluate it.
    Train(Box<train::TrainArgs>),
    /// Re-evaluate a trained run from its checkpoint (rewrites metrics.json); with --ground-truth,
    /// also score a train run (aligned ranking) or a reward run (reward recovery) against the
    /// simulated world it was trained on (writes truth_metrics.json).
    Evaluate(train::EvaluateArgs),
    /// List the backbones, or print one's default configuration.
    Models(train::ModelsArgs),
    /// Learn a mental reward model (QR-IQL or IQ-Learn) and patch every training sample's rewards.
    FitReward(Box<reward::FitRewardArgs>),
    /// Draw the paper's Figure 3 from a reward fit: reward by step, reward distributions.
    InspectReward(reward::InspectRewardArgs),
}

#[derive(Args)]
struct PrepareArgs {
    /// Input format: amazon-json, din-csv, dien, s3rec, csv, parquet.
    #[arg(long)]
    format: String,
    /// Input files (for dien also a folder).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Output folder of the prepared dataset.
    #[arg(long)]
    out: PathBuf,
    /// Replace the output folder if it exists.
    #[arg(long)]
    force: bool,
    /// YAML file with prepare settings (seed, test_fraction, max_history, negatives); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Seed of negatives and split [default: 1234].
    #[arg(long)]
    seed: Option<u64>,
    /// Share of users held out for testing [default: 0.1].
    #[arg(long)]
    test_fraction: Option<f64>,
    /// History cap of samples [default: 100].
    #[arg(long)]
    max_history: Option<usize>,
    /// Negative rule: uniform (DIN) or popularity (DIEN) [default: uniform].
    #[arg(long)]
    negatives: Option<String>,
    /// amazon-json category rule: din (last element of the last path) or dien (last of the first).
    #[arg(long, default_value = "din")]
    category_rule: String,
    /// csv/parquet: user column.
    #[arg(long, default_value = "user_id")]
    user_col: String,
    /// csv/parquet: item column.
    #[arg(long, default_value = "item_id")]
    item_col: String,
    /// csv/parquet: time column; `none` = file order.
    #[arg(long, default_value = "timestamp")]
    time_col: String,
    /// csv/parquet: category column; `none` = a single category.
    #[arg(long, default_value = "category")]
    category_col: String,
}

fn optional(name: &str) -> Option<String> {
    (name != "none").then(|| name.to_owned())
}

fn prepare(args: PrepareArgs) -> Result<()> {
    let format: Format = args.format.parse()?;
    let mut cfg = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_norway::from_str::<PrepareConfig>(&text)
                .with_context(|| format!("{}: invalid prepare settings", path.display()))?
        }
        None => PrepareConfig::default(),
    };
    if let Some(s) = args.seed {
        cfg.seed = s;
    }
    if let Some(f) = args.test_fraction {
        cfg.test_fraction = f;
    }
    if let Some(m) = args.max_history {
        cfg.max_history = m;
    }
    if let Some(n) = &args.negatives {
        cfg.negatives = n.parse::<NegativeRule>()?;
    }
    if args.out.exists() && !args.force {
        bail!(
            "{} already exists (pass --force to replace it)",
            args.out.display()
        );
    }
    let read_opts = ReadOptions {
        category_rule: args.category_rule.parse::<CategoryRule>()?,
        columns: ColumnMap {
            user: args.user_col,
            item: args.item_col,
            time: optional(&args.time_col),
            category: optional(&args.category_col),
        },
    };
    let start = Instant::now();
    let spinner = progress::spinner(format!(
        "reading and preparing {} input(s) as {format}",
        args.inputs.len()
    ));
    let ds = prepare_files(format, &args.inputs, &read_opts, &cfg);
    spinner.finish_and_clear();
    let ds = ds?;
    let read_s = start.elapsed().as_secs_f64();
    let spinner = progress::spinner(format!("writing {}", args.out.display()));
    let written = ds.save(&args.out, args.force);
    spinner.finish_and_clear();
    let out = written?;
    tracing::info!(
        "prepared {} in {:.2}s (read+prepare {:.2}s)",
        out.display(),
        start.elapsed().as_secs_f64(),
        read_s
    );
    for w in &ds.manifest.warnings {
        tracing::warn!("{w}");
    }
    print!("{}", ds.stats());
    Ok(())
}

fn stats(dir: PathBuf, json: bool) -> Result<()> {
    let ds = PreparedDataset::load(&dir)?;
    let stats = ds.stats();
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        print!("{stats}");
    }
    Ok(())
}

fn main() {
    mtrec_alloc::tune();
    let cli = Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cli.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let result = match cli.command {
        Command::Prepare(a) => prepare(*a),
        Command::Stats { dir, json } => stats(dir, json),
        Command::Download(a) => download::run(a),
        Command::Synth(a) => synth::run(a),
        Command::Train(a) => train::train(*a),
        Command::Evaluate(a) => train::evaluate(a),
        Command::Models(a) => train::models(a),
        Command::FitReward(a) => reward::fit(*a),
        Command::InspectReward(a) => reward::inspect(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
