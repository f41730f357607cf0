//! `cargo xtask bench-prepare`: times `mtrec prepare` end to end (reading, preparing and writing the
//! dataset folder, in this release process with the same library calls as the CLI) on
//! Electronics-scale raw files, and a straightforward pandas implementation of the same
//! steps (`xtask/bench/prepare_pandas.py`) on the same files in the same run when Python, pandas and
//! pyarrow are installed. Writes `results/bench-prepare.{md,json}`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::{gen_amazon, gen_config, prepare_amazon, root};

#[derive(clap::Args)]
pub struct Args {
    /// small or electronics (1,689,188 reviews with text, 63,001 items).
    #[arg(long, default_value = "electronics")]
    scale: String,
    /// Where the generated input and the outputs go (git-ignored).
    #[arg(long, default_value = "data/generated/bench")]
    dir: PathBuf,
    /// Runs of each implementation; the best is reported.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Skip the pandas run even if pandas is installed.
    #[arg(long)]
    no_pandas: bool,
    /// Python interpreter for the pandas run.
    #[arg(long, default_value = "python3")]
    python: String,
}

fn time_command(cmd: &mut Command, what: &str) -> Result<(f64, String)> {
    let start = Instant::now();
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    let secs = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{what} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((secs, String::from_utf8_lossy(&out.stdout).into_owned()))
}

fn pandas_available(python: &str) -> bool {
    Command::new(python)
        .args(["-c", "import pandas, pyarrow"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

pub fn run(args: Args) -> Result<()> {
    let cfg = gen_config(&args.scale)?;
    let dir = root().join(&args.dir).join(&args.scale);
    let marker = dir.join(".complete");
    let stamp = format!("{cfg:?}");
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(stamp.as_str()) {
        tracing::info!("generating {} raw input in {}", args.scale, dir.display());
        let start = Instant::now();
        gen_amazon::generate(&cfg, &dir, "Electronics")?;
        std::fs::write(&marker, &stamp)?;
        tracing::info!("generated in {:.1}s", start.elapsed().as_secs_f64());
    }
    let reviews = dir.join("reviews_Electronics_5.json");
    let meta = dir.join("meta_Electronics.json");
    let input_bytes = std::fs::metadata(&reviews)?.len() + std::fs::metadata(&meta)?.len();
    let mut ours = f64::INFINITY;
    let mut stats = String::new();
    for _ in 0..args.repeat.max(1) {
        let start = Instant::now();
        let ds = prepare_amazon(
            &[reviews.clone(), meta.clone()],
            &dir.join("prepared-mtrec"),
            1234,
            mtrec_data::CategoryRule::LastOfLast,
        )?;
        ours = ours.min(start.elapsed().as_secs_f64());
        stats = ds.stats().to_string();
    }
    println!("mtrec prepare: {ours:.2} s\n{stats}");

    let script = root().join("xtask/bench/prepare_pandas.py");
    let pandas = if args.no_pandas {
        None
    } else if !pandas_available(&args.python) {
        tracing::warn!(
            "pandas/pyarrow not installed for {}: skipping the pandas run",
            args.python
        );
        None
    } else {
        let mut best = f64::INFINITY;
        for _ in 0..args.repeat.max(1) {
            let (s, out) = time_command(
                Command::new(&args.python)
                    .arg(&script)
                    .arg(&reviews)
                    .arg(&meta)
                    .arg(dir.join("prepared-pandas"))
                    .args(["--seed", "1234"]),
                "pandas prepare",
            )?;
            println!("pandas: {s:.2} s ({})", out.lines().last().unwrap_or(""));
            best = best.min(s);
        }
        Some(best)
    };

    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let ratio = pandas.map(|p| p / ours);
    let report = json!({
        "scale": args.scale,
        "input_bytes": input_bytes,
        "reviews": cfg.users as f64 * cfg.mean_reviews_per_user,
        "threads": threads,
        "mtrec_seconds": ours,
        "pandas_seconds": pandas,
        "speedup": ratio,
        "repeat": args.repeat,
    });
    let md = format!(
        "# `mtrec prepare` vs pandas\n\n\
         Command: `cargo xtask bench-prepare --scale {}` ({} CPU threads, best of {}).\n\
         Input: generated Amazon-2014-format files, {:.2} GB (reviews with text + Python-literal meta).\n\n\
         | implementation | wall time (s) |\n|---|---|\n| mtrec prepare (release, read + prepare + write) | {:.2} |\n| pandas (`xtask/bench/prepare_pandas.py`) | {} |\n\n\
         Speed-up: {}\n",
        args.scale,
        threads,
        args.repeat,
        input_bytes as f64 / 1e9,
        ours,
        pandas.map(|p| format!("{p:.2}")).unwrap_or_else(|| "not run".into()),
        ratio.map(|r| format!("{r:.1}x")).unwrap_or_else(|| "n/a".into()),
    );
    let results = root().join("results");
    mtrec_data::io::write_atomic(&results.join("bench-prepare.md"), md.as_bytes())?;
    mtrec_data::io::write_atomic(
        &results.join("bench-prepare.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    print!("\n{md}");
    println!("written to {}", display(&results));
    Ok(())
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
