//! `cargo xtask reproduce-fig2`: the paper's RQ2 (§5.2, Figure 2) on the Virtual Taobao simulator,
//! from `experiments/fig2.yaml`. Writes `<out>/fig2.{md,json,svg}`, the curves of every run
//! (`curves.csv`) and their 95% bands (`bands.csv`); finished runs are kept under `--runs` and
//! never recomputed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use mtrec_rq2::{report, Fig2Config, Progress, VtbEnv};
use serde::Deserialize;

use crate::root;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Profile of experiments/fig2.yaml: quick or full.
    #[arg(long, default_value = "quick")]
    profile: String,
    /// The experiment file.
    #[arg(long, default_value = "experiments/fig2.yaml")]
    config: PathBuf,
    /// The simulator's weights (safetensors). Default: data/cache/virtualtaobao/virtualtb_v0.safetensors
    /// (the opt-in download, `xtask/vtaobao/convert.py`), else
    /// ../shared/data/virtualtaobao/virtualtb_v0.safetensors.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Where the report goes [default: results/fig2 for the quick profile, results/fig2-<profile>
    /// for the others].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where finished runs are kept (default runs/fig2/<profile>).
    #[arg(long)]
    runs: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fig2File {
    profiles: BTreeMap<String, Fig2Config>,
}

/// The profile `name` of the experiment file.
pub fn load_profile(path: &Path, name: &str) -> Result<Fig2Config> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: Fig2File =
        serde_norway::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let known: Vec<&String> = file.profiles.keys().collect();
    let Some(cfg) = file.profiles.get(name) else {
        bail!(
            "{}: no profile '{name}' (profiles: {known:?})",
            path.display()
        );
    };
    cfg.validate()
        .with_context(|| format!("{}: profile '{name}'", path.display()))?;
    Ok(cfg.clone())
}

/// The weights file: the flag, else the download cache, else the shared research data.
fn weights_path(flag: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = flag {
        if !p.exists() {
            bail!("--weights {}: no such file", p.display());
        }
        return Ok(p);
    }
    let candidates = [
        root().join("data/cache/virtualtaobao/virtualtb_v0.safetensors"),
        root().join("../shared/data/virtualtaobao/virtualtb_v0.safetensors"),
    ];
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .with_context(|| {
            format!(
            "the Virtual Taobao weights are not here (looked for {}). Download and convert them \
             as `xtask/vtaobao/convert.py` explains (opt-in: needs internet, curl and python3 \
             with torch), or pass --weights FILE",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" and ")
        )
        })
}

/// Progress on stderr: one line per stage, a bar per training run.
struct Bars {
    bar: Option<ProgressBar>,
    started: Instant,
}

impl Progress for Bars {
    fn stage(&mut self, what: &str) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        eprintln!("[{:>6.1} s] {what}", self.started.elapsed().as_secs_f64());
    }

    fn run_step(&mut self, run: &str, env_steps: u64, total: u64) {
        let bar = self.bar.get_or_insert_with(|| {
            let b = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "  {prefix} [{bar:30}] {pos}/{len} steps [{elapsed}, eta {eta}]",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
            b.set_prefix(run.to_owned());
            b
        });
        bar.set_position(env_steps.min(total));
    }
}

pub fn run(args: Args) -> Result<()> {
    let config = if args.config.is_absolute() {
        args.config.clone()
    } else {
        root().join(&args.config)
    };
    let cfg = load_profile(&config, &args.profile)?;
    let weights = weights_path(args.weights)?;
    let device = mtrec_train::parse_device(&args.device)?;
    let model = Arc::new(
        mtrec_vtaobao::VirtualTb::load(&weights, &device)
            .with_context(|| format!("loading {}", weights.display()))?,
    );
    let runs = args
        .runs
        .unwrap_or_else(|| PathBuf::from("runs/fig2").join(&args.profile));
    let started = Instant::now();
    let mut bars = Bars { bar: None, started };
    let outcome = mtrec_rq2::run_fig2(
        &cfg,
        |n, seed| VtbEnv::new(model.clone(), n, seed),
        &runs,
        &device,
        &mut bars,
    )?;
    bars.stage("writing the report");
    let curves: Vec<_> = outcome.runs.iter().map(|r| r.curve.clone()).collect();
    let bands = report::bands(&curves);
    let header = format!(
        "Command: `cargo xtask reproduce-fig2 --profile {}` (experiments/fig2.yaml), device {}.\n\n\
         - budget: {} environment steps (pages) per run, {} parallel users, evaluation of the \
         deterministic policy on {} episodes every {} steps; seeds {:?}; κ = {}\n\
         - expert data: {} episodes with eCTR > {} (of {} played; mean eCTR {:.3}, {:.1} pages), \
         {} transitions, from the constant action found by the cross-entropy method (eCTR {:.3}) \
         played with per-episode Gaussian noise\n\
         - mental reward (QR-IQL, {} quantiles): loss {:.4} → {:.4} over {} steps; the realised \
         clicks are the Q-net's argmax for {:.1}% of expert transitions\n\
         - mean κ·r_mental added per transition: {}\n\
         - RL runs: {:.1} min of compute (each run's own time, kept when a later call reuses \
         it); this call: {:.1} min\n",
        args.profile,
        args.device,
        cfg.env_steps,
        cfg.train_envs,
        cfg.eval_episodes,
        cfg.eval_every,
        cfg.seeds,
        cfg.kappa,
        outcome.expert.episodes_kept,
        cfg.expert.min_ectr,
        outcome.expert.episodes_seen,
        outcome.expert.mean_ectr,
        outcome.expert.mean_pages,
        outcome.expert.transitions,
        outcome.expert.constant.ectr,
        cfg.mental.quantiles,
        outcome.mental.first_loss,
        outcome.mental.last_loss,
        outcome.mental.steps,
        100.0 * outcome.mental.expert_argmax_agreement,
        outcome
            .runs
            .iter()
            .filter(|r| r.curve.variant == "mtrec")
            .map(|r| format!("{} s{} {:+.3}", r.curve.algo, r.curve.seed, r.mean_extra_reward))
            .collect::<Vec<_>>()
            .join(", "),
        outcome.runs.iter().map(|r| r.seconds).sum::<f64>() / 60.0,
        started.elapsed().as_secs_f64() / 60.0,
    );
    let mut md = report::markdown(&curves, &header);
    md.push_str(
        "\neCTR: clicks / (10 · pages) of an episode, averaged over episodes (the paper's \
         definition), and the ratio of total clicks to 10 × total pages (the simulator's example \
         code). A constant action reaches 0.900 in this simulator, so the comparison that matters \
         is with versus without the mental reward at equal budget, not the level. Figure: \
         `fig2.svg`; every evaluation of every run: `curves.csv`; bands: `bands.csv`.\n",
    );
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| match args.profile.as_str() {
            "quick" => PathBuf::from("results/fig2"),
            p => PathBuf::from(format!("results/fig2-{p}")),
        });
    let out = if out.is_absolute() {
        out
    } else {
        root().join(out)
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let json = serde_json::json!({
        "profile": args.profile,
        "config": cfg,
        "expert": outcome.expert,
        "mental": outcome.mental,
        "runs": outcome.runs,
        "bands": bands,
    });
    mtrec_data::io::write_atomic(&out.join("fig2.md"), md.as_bytes())?;
    mtrec_data::io::write_atomic(
        &out.join("fig2.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    mtrec_data::io::write_atomic(
        &out.join("curves.csv"),
        report::curves_csv(&curves).as_bytes(),
    )?;
    mtrec_data::io::write_atomic(&out.join("bands.csv"), report::bands_csv(&bands).as_bytes())?;
    mtrec_data::io::write_atomic(&out.join("fig2.svg"), report::svg(&bands)?.as_bytes())?;
    print!("{md}");
    println!("written to {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_experiment_file_has_valid_quick_and_full_profiles() {
        let path = root().join("experiments/fig2.yaml");
        let quick = load_profile(&path, "quick").unwrap();
        assert_eq!(quick.kappa, 0.2);
        assert_eq!(quick.mental.quantiles, 10);
        let full = load_profile(&path, "full").unwrap();
        assert_eq!(full.env_steps, 50_000);
        assert_eq!(full.expert.episodes, 100_000);
        let e = load_profile(&path, "nope").unwrap_err().to_string();
        assert!(e.contains("no profile 'nope'"), "{e}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.yaml");
        let text = std::fs::read_to_string(root().join("experiments/fig2.yaml"))
            .unwrap()
            .replacen("kappa: 0.2", "kappa: 0.2\n    kapa: 1", 1);
        std::fs::write(&p, text).unwrap();
        let e = format!("{:#}", load_profile(&p, "quick").unwrap_err());
        assert!(e.contains("kapa"), "{e}");
    }
}
