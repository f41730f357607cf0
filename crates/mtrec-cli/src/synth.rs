//! `mtrec synth`: generate a simulated world with ground-truth mental rewards (crate `mtrec-synth`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mtrec_synth::{SynthConfig, SynthError, World, DEFAULT_SEED};

#[derive(Args)]
pub struct SynthArgs {
    /// World size: tiny, electronics-small, books-small, electronics-like, books-like.
    #[arg(long)]
    preset: String,
    /// Output folder of the world.
    #[arg(long)]
    out: PathBuf,
    /// Seed of every random draw (the world depends only on preset and seed).
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
    /// Replace the output folder if it exists.
    #[arg(long)]
    force: bool,
}

fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} {msg} [{bar:30}] {human_pos}/{human_len} users [{elapsed_precise}, eta {eta}]",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// Where the printed next command puts the prepared dataset: `<out>-prepared` beside the world.
fn prepared_dir(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "world".into());
    out.with_file_name(format!("{name}-prepared"))
}

pub fn run(args: SynthArgs) -> Result<()> {
    let cfg = SynthConfig::preset(&args.preset, args.seed)?;
    if args.out.exists() && !args.force {
        return Err(SynthError::Exists { path: args.out }.into());
    }
    let start = Instant::now();
    let pb = progress_bar();
    let world = World::generate_with_progress(&cfg, &pb);
    pb.finish_and_clear();
    let world = world?;
    let spinner = crate::progress::spinner(format!("writing {}", args.out.display()));
    let written = world.write(&args.out, args.force);
    spinner.finish_and_clear();
    let out = written?;
    tracing::info!(
        "world '{}' (seed {}) written to {} in {:.2}s",
        cfg.preset,
        cfg.seed,
        out.display(),
        start.elapsed().as_secs_f64()
    );
    print!("{}", world.summary());
    println!("ground truth: items.parquet, users.parquet, categories.parquet, rewards.parquet, world.json");
    println!(
        "next: mtrec prepare --format csv {} --out {}",
        out.join(mtrec_synth::files::INTERACTIONS).display(),
        prepared_dir(&out).display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepared_folder_sits_beside_the_world() {
        assert_eq!(
            prepared_dir(Path::new("data/generated/es")),
            PathBuf::from("data/generated/es-prepared")
        );
        assert_eq!(prepared_dir(Path::new("w")), PathBuf::from("w-prepared"));
    }
}
