//! `mtrec fit-reward` and `mtrec inspect-reward`: the mental reward models (crate `mtrec-reward`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use mtrec_reward::{
    fit_reward, inspect_rewards, FitOptions, Profile, RewardConfig, RewardKind, RewardRunConfig,
};

#[derive(Args)]
pub struct FitRewardArgs {
    /// Backbone of the Q-network (see `mtrec models`).
    #[arg(long)]
    model: String,
    /// qr-iql (MTRec's distributional reward) or iq-learn (the "IRL" baseline).
    #[arg(long, default_value = "qr-iql")]
    kind: String,
    /// Prepared dataset folder (`mtrec prepare`).
    #[arg(long)]
    data: PathBuf,
    /// Settings profile: quick (batch 512 x 1,200 steps, lr 1e-3), paper (4,000 x 50,000, lr 1e-4)
    /// or smoke (64 x 40).
    #[arg(long, default_value = "quick")]
    profile: String,
    /// YAML file with reward settings (kind, quantiles, gamma, alpha, u2_gamma, lr, batch_size,
    /// steps, seed, aux_loss, checkpoint_every, eval_batch_size); replaces the profile's values
    /// it names. Flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// YAML file with the backbone's settings.
    #[arg(long)]
    model_config: Option<PathBuf>,
    /// Adam steps.
    #[arg(long)]
    steps: Option<u64>,
    /// Transitions per step.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Quantile heads of QR-IQL.
    #[arg(long)]
    quantiles: Option<usize>,
    /// Seed of the weights and of the transition order.
    #[arg(long)]
    seed: Option<u64>,
    /// Run folder [default: runs/reward/<dataset>/<model>-<kind>-s<seed>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the fit in --out from its checkpoint.
    #[arg(long)]
    resume: bool,
    /// Replace a folder that holds another fit.
    #[arg(long)]
    force: bool,
    /// Device: cpu, or cuda / cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args)]
pub struct InspectRewardArgs {
    /// A reward run folder (`mtrec fit-reward`) or a rewards parquet file.
    rewards: PathBuf,
    /// Output folder [default: <run>/figure3].
    #[arg(long)]
    out: Option<PathBuf>,
}

fn reward_config(args: &FitRewardArgs) -> Result<RewardConfig> {
    let profile: Profile = args.profile.parse().map_err(anyhow::Error::msg)?;
    let mut cfg = RewardConfig::profile(profile);
    if let Some(p) = &args.config {
        // The file's keys replace the profile's values; absent keys keep the profile's.
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let mut base = serde_norway::to_value(&cfg)?;
        let over: serde_norway::Value =
            serde_norway::from_str(&text).with_context(|| format!("{}: not YAML", p.display()))?;
        if let (Some(b), Some(o)) = (base.as_mapping_mut(), over.as_mapping()) {
            for (k, v) in o {
                b.insert(k.clone(), v.clone());
            }
        } else if !over.is_null() {
            bail!("{}: expected a mapping of reward settings", p.display());
        }
        cfg =
            serde_norway::from_value(base).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    }
    cfg.kind = args
        .kind
        .parse::<RewardKind>()
        .map_err(anyhow::Error::msg)?;
    if let Some(v) = args.steps {
        cfg.steps = v;
    }
    if let Some(v) = args.batch_size {
        cfg.batch_size = v;
    }
    if let Some(v) = args.lr {
        cfg.lr = v;
    }
    if let Some(v) = args.quantiles {
        cfg.quantiles = v;
    }
    if let Some(v) = args.seed {
        cfg.seed = v;
    }
    cfg.validate()?;
    Ok(cfg)
}

fn default_out(data: &Path, model: &str, cfg: &RewardConfig) -> PathBuf {
    let name = data
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    PathBuf::from("runs/reward").join(name).join(format!(
        "{model}-{}-s{}",
        cfg.kind.as_str(),
        cfg.seed
    ))
}

pub fn fit(args: FitRewardArgs) -> Result<()> {
    if !mtrec_models::is_known(&args.model) {
        bail!(
            "unknown model '{}' (known models: {})",
            args.model,
            mtrec_models::names().join(", ")
        );
    }
    let model_config = match &args.model_config {
        Some(p) => {
            let text = mtrec_models::load_config_file(p)?;
            mtrec_models::check_config(&args.model, Some(&text), &p.display().to_string())?
        }
        None => mtrec_models::effective_config(&args.model, None)?,
    };
    let cfg = reward_config(&args)?;
    let device = crate::train::device(&args.device)?;
    let ds = crate::train::load_data(&args.data)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&args.data, &args.model, &cfg));
    let build = mtrec_models::builder(args.model.clone(), model_config.clone());
    let data_abs = std::fs::canonicalize(&args.data).unwrap_or_else(|_| args.data.clone());
    tracing::info!(
        "fitting {} on {} ({} steps x {} transitions) into {}",
        cfg.kind.as_str(),
        args.data.display(),
        cfg.steps,
        cfg.batch_size,
        out.display()
    );
    let outcome = fit_reward(
        &out,
        &args.model,
        model_config,
        &build,
        &ds,
        &data_abs,
        &cfg,
        &FitOptions {
            device,
            progress: true,
            resume: args.resume,
            force: args.force,
            stop_after: None,
        },
    )?;
    match outcome.metrics {
        Some(m) => {
            print!("{}", mtrec_reward::fit::metrics_markdown(&m));
            println!(
                "\nrewards: {}\nuse them: mtrec train --model <name> --data {} --rewards {} --kappa 0.2",
                out.join(mtrec_reward::fit::files::REWARDS).display(),
                args.data.display(),
                out.join(mtrec_reward::fit::files::REWARDS).display()
            );
        }
        None => println!(
            "stopped at step {}; continue with --resume --out {}",
            outcome.state.step,
            out.display()
        ),
    }
    Ok(())
}

pub fn inspect(args: InspectRewardArgs) -> Result<()> {
    let (file, default_dir) = if args.rewards.is_dir() {
        // A run folder: check it is one, for a clear message.
        RewardRunConfig::read(&args.rewards)
            .with_context(|| format!("{} is not a reward run folder", args.rewards.display()))?;
        (
            args.rewards.join(mtrec_reward::fit::files::REWARDS),
            args.rewards.join("figure3"),
        )
    } else {
        let dir = args
            .rewards
            .parent()
            .map(|p| p.join("figure3"))
            .unwrap_or_else(|| PathBuf::from("figure3"));
        (args.rewards.clone(), dir)
    };
    if !file.exists() {
        bail!(
            "{} does not exist (has the fit finished? `mtrec fit-reward --resume` completes it)",
            file.display()
        );
    }
    let out = args.out.unwrap_or(default_dir);
    let f = inspect_rewards(&file, &out)?;
    println!("Figure 3 of {}", file.display());
    println!("(a) mean r*(s, a_real) by step:");
    println!("  step  samples  all samples  logged positives");
    for s in &f.by_step {
        println!(
            "  {:>4}  {:>7}  {:>11.4}  {:>16.4}",
            s.step, s.samples, s.mean_real, s.mean_positive
        );
    }
    println!("  trend (Spearman of mean vs step): {:.3}", f.step_trend);
    println!("(b-e) reward distributions:");
    for h in &f.histograms {
        println!("  {:<36} mean {:>8.4}  n {}", h.title, h.mean, h.samples);
    }
    println!(
        "real positives with r*(s,P) < r*(s,N): {:.1}%; real negatives with r*(s,N) < r*(s,P): {:.1}%",
        100.0 * f.positives_preferring_n,
        100.0 * f.negatives_preferring_p
    );
    println!("wrote {} files to {}", f.files.len(), out.display());
    Ok(())
}
