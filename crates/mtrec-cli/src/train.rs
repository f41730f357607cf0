//! `mtrec train`, `mtrec evaluate` and `mtrec models`: recommender training with MTRec's loss
//! (crate `mtrec-train`) on the backbones of the registry (crate `mtrec-models`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use candle_core::Device;
use clap::Args;
use mtrec_data::PreparedDataset;
use mtrec_train::{evaluate_run, train_run, RunConfig, RunMetrics, RunOptions, TrainConfig};

#[derive(Args)]
pub struct TrainArgs {
    /// Backbone (see `mtrec models`): widedeep, pnn, deepfm, din, dien, sasrec, linrec, sigma.
    #[arg(long)]
    model: Option<String>,
    /// Prepared dataset folder (`mtrec prepare`).
    #[arg(long)]
    data: Option<PathBuf>,
    /// YAML file with the backbone's settings (`mtrec models --defaults <name>` prints them);
    /// absent keys keep their defaults.
    #[arg(long)]
    model_config: Option<PathBuf>,
    /// YAML file with training settings (seed, epochs, batch_size, lr, lr_decay, kappa, ...);
    /// the flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Rewards file of the alignment loss (parquet or CSV: user, step, positive, r_pos, r_neg).
    #[arg(long)]
    rewards: Option<PathBuf>,
    /// Weight of the alignment loss (0 = plain training) [default: 0].
    #[arg(long)]
    kappa: Option<f64>,
    /// Seed of initial weights, shuffles and validation users [default: 1].
    #[arg(long)]
    seed: Option<u64>,
    /// Epochs [default: 3].
    #[arg(long)]
    epochs: Option<usize>,
    /// Batch size [default: 128].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Learning rate of the first epoch [default: 0.001].
    #[arg(long)]
    lr: Option<f64>,
    /// Stop after this many optimiser steps (a checkpoint is written; `--resume` goes on).
    #[arg(long)]
    max_steps: Option<u64>,
    /// Also write a checkpoint every N steps.
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Run folder [default: runs/train/<dataset>/<model>-<plain|k<kappa>>-s<seed>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in --out from its checkpoint (alone, it reuses the run's config.yaml).
    #[arg(long)]
    resume: bool,
    /// Replace a run folder that holds another run.
    #[arg(long)]
    force: bool,
    /// Device: cpu, or cuda / cuda:N (needs a build with the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args)]
pub struct EvaluateArgs {
    /// Run folder written by `mtrec train` (or, with --ground-truth, by `mtrec fit-reward`).
    #[arg(long)]
    run: PathBuf,
    /// Prepared dataset folder [default: the one recorded in the run's config.yaml / reward.yaml].
    #[arg(long)]
    data: Option<PathBuf>,
    /// World folder of `mtrec synth` whose log the dataset is: also score the run against its
    /// ground truth (a train run: aligned ranking; a reward run: reward recovery) and write
    /// <run>/truth_metrics.{json,md}.
    #[arg(long)]
    ground_truth: Option<PathBuf>,
    /// Aligned ranking: candidates per step (logged positive, logged negative, unseen items).
    #[arg(long, default_value_t = 20)]
    candidates: usize,
    /// Aligned ranking: the top-k recommended.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Aligned ranking: only the last N steps of each test user [default: all].
    #[arg(long)]
    max_steps_per_user: Option<usize>,
    /// Aligned ranking: seed of the candidate draws.
    #[arg(long, default_value_t = 1234)]
    truth_seed: u64,
    /// Device: cpu, or cuda / cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args)]
pub struct ModelsArgs {
    /// Print the default configuration (YAML) of this model.
    #[arg(long)]
    defaults: Option<String>,
}

pub(crate) fn device(spec: &str) -> Result<Device> {
    Ok(mtrec_train::parse_device(spec)?)
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

pub(crate) fn load_data(path: &Path) -> Result<PreparedDataset> {
    let spinner = crate::progress::spinner(format!("loading {}", path.display()));
    let ds = PreparedDataset::load(path);
    spinner.finish_and_clear();
    Ok(ds?)
}

/// The run configuration from the flags (and the files they name).
fn run_config(args: &TrainArgs) -> Result<RunConfig> {
    let Some(model) = &args.model else {
        bail!(
            "--model is required (known models: {})",
            mtrec_models::names().join(", ")
        );
    };
    let Some(data) = &args.data else {
        bail!("--data is required: a prepared dataset folder (`mtrec prepare`)");
    };
    if !mtrec_models::is_known(model) {
        bail!(
            "unknown model '{model}' (known models: {})",
            mtrec_models::names().join(", ")
        );
    }
    let model_config = match &args.model_config {
        Some(p) => {
            let text = mtrec_models::load_config_file(p)?;
            mtrec_models::check_config(model, Some(&text), &p.display().to_string())?
        }
        None => mtrec_models::effective_config(model, None)?,
    };
    let mut train = match &args.config {
        Some(p) => TrainConfig::from_yaml_file(p)?,
        None => TrainConfig::default(),
    };
    macro_rules! set {
        ($($field:ident),*) => {$(
            if let Some(v) = args.$field { train.$field = v; }
        )*};
    }
    set!(kappa, seed, epochs, batch_size, lr);
    if args.max_steps.is_some() {
        train.max_steps = args.max_steps;
    }
    if args.checkpoint_every.is_some() {
        train.checkpoint_every = args.checkpoint_every;
    }
    if !data.is_dir() {
        bail!(
            "--data {}: no such folder (prepare a dataset with `mtrec prepare` first)",
            data.display()
        );
    }
    if let Some(r) = &args.rewards {
        if !r.is_file() {
            bail!("--rewards {}: no such file", r.display());
        }
    }
    Ok(RunConfig {
        model: model.clone(),
        model_config,
        data: absolute(data),
        rewards: args.rewards.as_deref().map(absolute),
        train,
    })
}

fn default_out(cfg: &RunConfig) -> PathBuf {
    let dataset = cfg
        .data
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    let variant = if cfg.train.kappa > 0.0 {
        format!("k{}", cfg.train.kappa)
    } else {
        "plain".into()
    };
    PathBuf::from("runs/train")
        .join(dataset)
        .join(format!("{}-{variant}-s{}", cfg.model, cfg.train.seed))
}

fn print_summary(out: &Path, m: &RunMetrics) {
    let t = &m.test;
    let tr = &m.training;
    println!(
        "{} · seed {} · κ {} · {} steps ({:?}) in {:.1}s, {:.0} samples/s",
        m.model,
        m.seed,
        m.kappa,
        tr.steps,
        tr.stopped.unwrap_or(mtrec_train::StopReason::Completed),
        tr.seconds,
        tr.samples_per_s
    );
    for e in &tr.epochs {
        println!(
            "  epoch {}: loss {:.5}{}",
            e.epoch + 1,
            e.train_loss,
            e.val_auc
                .map(|a| format!(", val AUC {a:.5}"))
                .unwrap_or_default()
        );
    }
    println!(
        "test ({} users): AUC {:.5} (last pair) · {:.5} (all steps) · GAUC {:.5} · log loss {:.5}",
        t.users, t.auc, t.auc_all_steps, t.gauc, t.logloss
    );
    println!(
        "NCIS {:.4} (init {:.4}) · ΔNCIS {:.4} · ESS {:.1} (init {:.1})",
        t.ncis, t.ncis_init, t.delta_ncis, t.ess, t.ess_init
    );
    println!(
        "written: {}",
        out.join(mtrec_train::run::files::METRICS_JSON).display()
    );
}

pub fn train(args: TrainArgs) -> Result<()> {
    let only_resume = args.resume && args.model.is_none() && args.data.is_none();
    let (cfg, out) = if only_resume {
        let Some(out) = args.out.clone() else {
            bail!("--resume without --model/--data needs --out <run folder>");
        };
        let mut cfg = RunConfig::read(&out)?;
        cfg.train.max_steps = args.max_steps;
        cfg.train.checkpoint_every = args.checkpoint_every.or(cfg.train.checkpoint_every);
        (cfg, out)
    } else {
        let cfg = run_config(&args)?;
        let out = args.out.clone().unwrap_or_else(|| default_out(&cfg));
        (cfg, out)
    };
    let ds = load_data(&cfg.data)?;
    let opts = RunOptions {
        resume: args.resume,
        force: args.force,
        device: device(&args.device)?,
        ..RunOptions::default()
    };
    tracing::info!("training {} into {}", cfg.model, out.display());
    let m = train_run(
        &out,
        &cfg,
        &ds,
        &mtrec_models::builder(cfg.model.clone(), cfg.model_config.clone()),
        &opts,
    )?;
    print_summary(&out, &m);
    Ok(())
}

fn dataset_folder(given: &Option<PathBuf>, recorded: &Path) -> Result<PathBuf> {
    let data = given.clone().unwrap_or_else(|| recorded.to_path_buf());
    if !data.is_dir() {
        bail!(
            "{}: no such folder (the run's dataset moved? pass --data)",
            data.display()
        );
    }
    Ok(data)
}

fn load_truth(world: &Path) -> Result<mtrec_truth::GroundTruth> {
    let spinner = crate::progress::spinner(format!("loading the truth of {}", world.display()));
    let truth = mtrec_truth::GroundTruth::load(world);
    spinner.finish_and_clear();
    Ok(truth?)
}

fn print_truth(run: &Path, report: &mtrec_truth::TruthReport) {
    if let Some(r) = &report.ranking {
        println!(
            "aligned ranking ({} steps, {:.0} candidates, score {}): expected reward @{k} {:.4} · @1 {:.4} · NDCG@{k} {:.4}",
            r.steps, r.mean_candidates, r.score, r.mean_reward_at_k, r.mean_reward_at_1, r.ndcg_at_k,
            k = r.k
        );
        println!(
            "  oracle @{k} {:.4} · random {:.4} · gain captured {:.3} · logged positive {:.4} (in top-{k}: {:.1}%)",
            r.oracle_mean_reward_at_k,
            r.random_mean_reward,
            r.gain_captured_at_k,
            r.logged_positive_reward,
            100.0 * r.positive_hit_at_k,
            k = r.k
        );
    }
    if let Some(r) = &report.recovery {
        println!(
            "reward recovery ({}, {} held-out engagements): Spearman {:.4} (true) · {:.4} (expected) · satisfied AUC {:.4}",
            r.kind, r.engagements, r.spearman_true, r.spearman_expected, r.satisfied_auc
        );
        println!(
            "  mean r* satisfied {:.4} · disappointed {:.4}{}",
            r.mean_r_satisfied,
            r.mean_r_disappointed,
            r.calibration
                .as_ref()
                .map(|c| format!(" · quantile calibration error {:.4}", c.mean_abs_error))
                .unwrap_or_default()
        );
    }
    println!(
        "written: {}",
        run.join(mtrec_truth::report::files::JSON).display()
    );
}

pub fn evaluate(args: EvaluateArgs) -> Result<()> {
    let is_reward_run = !args.run.join(mtrec_train::run::files::CONFIG).exists()
        && args.run.join(mtrec_reward::fit::files::CONFIG).exists();
    if is_reward_run {
        return evaluate_reward(args);
    }
    let cfg = RunConfig::read(&args.run)?;
    let data = dataset_folder(&args.data, &cfg.data)?;
    let ds = load_data(&data)?;
    let opts = RunOptions {
        device: device(&args.device)?,
        ..RunOptions::default()
    };
    let build = mtrec_models::builder(cfg.model.clone(), cfg.model_config.clone());
    let m = evaluate_run(&args.run, &ds, &build, &opts)?;
    print_summary(&args.run, &m);
    if let Some(world) = &args.ground_truth {
        let truth = load_truth(world)?;
        let rc = mtrec_truth::RankingConfig {
            candidates: args.candidates,
            k: args.top_k,
            seed: args.truth_seed,
            max_steps_per_user: args.max_steps_per_user,
        };
        let ranking =
            mtrec_truth::evaluate_train_run(&args.run, &ds, &build, &truth, &rc, &opts.device)?;
        let report =
            mtrec_truth::TruthReport::new(&truth, &args.run, &cfg.model, Some(ranking), None);
        mtrec_truth::write_truth_metrics(&args.run, &report)?;
        print_truth(&args.run, &report);
    }
    Ok(())
}

/// A reward run (`reward.yaml`): only its ground-truth metrics can be computed here.
fn evaluate_reward(args: EvaluateArgs) -> Result<()> {
    let Some(world) = &args.ground_truth else {
        bail!(
            "{} is a reward run (reward.yaml), and `mtrec evaluate` re-evaluates train runs (config.yaml); \
             for a reward run pass --ground-truth <world folder of `mtrec synth`> to score its rewards \
             against the simulated truth (its own metrics are in reward_metrics.json)",
            args.run.display()
        );
    };
    let cfg = mtrec_reward::RewardRunConfig::read(&args.run)?;
    let data = dataset_folder(&args.data, &cfg.data)?;
    let ds = load_data(&data)?;
    let dev = device(&args.device)?;
    let truth = load_truth(world)?;
    let build = mtrec_models::builder(cfg.model.clone(), cfg.model_config.clone());
    let recovery = mtrec_truth::evaluate_reward_run(&args.run, &ds, &build, &truth, &dev)?;
    let report = mtrec_truth::TruthReport::new(&truth, &args.run, &cfg.model, None, Some(recovery));
    mtrec_truth::write_truth_metrics(&args.run, &report)?;
    print_truth(&args.run, &report);
    Ok(())
}

pub fn models(args: ModelsArgs) -> Result<()> {
    match args.defaults {
        Some(name) => print!("{}", mtrec_models::default_config_yaml(&name)?),
        None => {
            for n in mtrec_models::names() {
                println!("{n}");
            }
        }
    }
    Ok(())
}
