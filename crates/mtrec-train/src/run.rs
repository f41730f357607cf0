//! A run folder: what `mtrec train` writes and `mtrec evaluate` reads.
//!
//! ```text
//! <run>/config.yaml     the effective settings (RunConfig): model, its config, data, rewards, train
//! <run>/metrics.json    RunMetrics: test metrics, per-epoch training record, timings
//! <run>/metrics.md      the same for people
//! <run>/checkpoint/     model.safetensors, optimizer.safetensors, trainer.json (+ best.safetensors)
//! ```
//! Every file is written atomically (temporary name, then rename); the checkpoint folder is staged
//! beside its place and swapped in whole.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use mtrec_data::io::write_atomic;
use mtrec_data::PreparedDataset;
use mtrec_eval::NcisConfig;
use mtrec_mdp::{samples, Batcher, Split};
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::eval::{metrics_from_scores, score, TestMetrics};
use crate::rewards::Rewards;
use crate::trainer::{
    build_model, dataset_fingerprint, differences, load_weights, validation_users, BuildBackbone,
    CheckpointMeta, EpochRecord, Progress, RewardsInfo, RunInfo, StopReason, Trainer,
};

/// File names inside a run folder.
pub mod files {
    pub const CONFIG: &str = "config.yaml";
    pub const METRICS_JSON: &str = "metrics.json";
    pub const METRICS_MD: &str = "metrics.md";
    pub const CHECKPOINT: &str = "checkpoint";
}

/// Version of `metrics.json`'s layout.
pub const METRICS_SCHEMA: u32 = 1;

/// `config.yaml`: everything that defines a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Registry name of the backbone.
    pub model: String,
    /// The backbone's effective configuration (every field, defaults filled in).
    #[serde(default)]
    pub model_config: serde_norway::Value,
    /// The prepared dataset folder.
    pub data: PathBuf,
    /// The rewards file of the alignment loss (needed when `train.kappa > 0`).
    #[serde(default)]
    pub rewards: Option<PathBuf>,
    /// Training settings.
    #[serde(default)]
    pub train: TrainConfig,
}

impl RunConfig {
    /// Reads `<run>/config.yaml`.
    pub fn read(run: &Path) -> Result<Self> {
        let p = run.join(files::CONFIG);
        let text = std::fs::read_to_string(&p).map_err(|e| TrainError::Run {
            path: run.to_path_buf(),
            message: format!("cannot read {}: {e} (is this a run folder?)", files::CONFIG),
        })?;
        serde_norway::from_str(&text).map_err(|e| TrainError::Yaml {
            path: p,
            message: e.to_string(),
        })
    }

    /// Writes `<run>/config.yaml` atomically.
    pub fn write(&self, run: &Path) -> Result<()> {
        let p = run.join(files::CONFIG);
        let text = serde_norway::to_string(self).map_err(|e| TrainError::Yaml {
            path: p.clone(),
            message: e.to_string(),
        })?;
        let text = format!(
            "# Effective settings of this run, written by mtrec {}.\n{text}",
            env!("CARGO_PKG_VERSION")
        );
        write_atomic(&p, text.as_bytes())?;
        Ok(())
    }

    /// The settings that define the run's result (the step limit and checkpoint interval may
    /// change on resume; the data and rewards may move as long as their content is the same).
    fn identity(&self) -> RunConfig {
        RunConfig {
            train: self.train.identity(),
            data: PathBuf::new(),
            rewards: self.rewards.as_ref().map(|_| PathBuf::new()),
            ..self.clone()
        }
    }
}

/// Runtime options of [`train_run`] and [`evaluate_run`] that do not change the result.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Continue the run in the folder from its checkpoint.
    pub resume: bool,
    /// Replace a run folder that holds another run.
    pub force: bool,
    pub progress: Progress,
    pub device: Device,
    pub ncis: NcisConfig,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            resume: false,
            force: false,
            progress: Progress::Auto,
            device: Device::Cpu,
            ncis: NcisConfig::default(),
        }
    }
}

/// In-progress epoch of a run stopped by `max_steps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartialEpoch {
    pub epoch: usize,
    pub steps: usize,
    pub samples: u64,
    pub train_loss: f64,
}

/// The training part of `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    pub stopped: Option<StopReason>,
    pub epochs_completed: usize,
    pub steps: u64,
    pub samples: u64,
    /// Wall time of the training steps, seconds (validation excluded).
    pub seconds: f64,
    pub samples_per_s: f64,
    /// Trainable scalars.
    pub params: usize,
    pub train_users: usize,
    pub validation_users: usize,
    pub train_samples: usize,
    pub validation_samples: usize,
    pub best_val_auc: Option<f64>,
    /// 0-based.
    pub best_epoch: Option<usize>,
    pub epochs: Vec<EpochRecord>,
    /// The epoch a `max_steps` stop interrupted.
    pub partial_epoch: Option<PartialEpoch>,
}

/// `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMetrics {
    pub schema: u32,
    pub mtrec_version: String,
    pub model: String,
    pub seed: u64,
    pub kappa: f64,
    pub data: PathBuf,
    pub dataset_fingerprint: String,
    pub rewards: Option<PathBuf>,
    pub test: TestMetrics,
    pub training: TrainingSummary,
    /// Wall time of the test evaluation (both models), seconds.
    pub eval_seconds: f64,
}

fn is_run_folder(dir: &Path) -> bool {
    dir.join(files::CONFIG).is_file() || dir.join(files::CHECKPOINT).is_dir()
}

fn run_err(dir: &Path, message: String) -> TrainError {
    TrainError::Run {
        path: dir.to_path_buf(),
        message,
    }
}

/// Decides what to do with an existing `out` folder; returns whether to resume from a checkpoint.
fn prepare_out(out: &Path, cfg: &RunConfig, opts: &RunOptions) -> Result<bool> {
    let exists = out.exists();
    let non_empty = exists
        && std::fs::read_dir(out)
            .map_err(|e| TrainError::io(out, e))?
            .next()
            .is_some();
    if !non_empty {
        if opts.resume {
            return Err(run_err(
                out,
                "nothing to resume: no run here (drop --resume to start one)".into(),
            ));
        }
        return Ok(false);
    }
    if !is_run_folder(out) {
        return Err(run_err(
            out,
            "exists and is not an mtrec run folder; choose another --out".into(),
        ));
    }
    if opts.force {
        std::fs::remove_dir_all(out).map_err(|e| TrainError::io(out, e))?;
        return Ok(false);
    }
    let old = RunConfig::read(out)?;
    let diff = differences(&old.identity(), &cfg.identity());
    if !opts.resume {
        let what = if diff.is_empty() {
            "holds this run already".to_owned()
        } else {
            format!("holds a different run ({})", diff.join("; "))
        };
        return Err(run_err(
            out,
            format!("{what}; pass --resume to continue it or --force to replace it"),
        ));
    }
    if !diff.is_empty() {
        return Err(run_err(
            out,
            format!(
                "holds a different run, cannot resume it with these settings ({}); pass --force to replace it or choose another --out",
                diff.join("; ")
            ),
        ));
    }
    Ok(out
        .join(files::CHECKPOINT)
        .join(crate::trainer::files::TRAINER)
        .is_file())
}

fn rewards_info(path: &Path) -> Result<RewardsInfo> {
    Ok(RewardsInfo {
        path: path.to_path_buf(),
        sha256: mtrec_data::io::sha256_file(path)
            .map_err(|e| TrainError::rewards(path, e.to_string()))?,
    })
}

fn run_info(cfg: &RunConfig, ds: &PreparedDataset) -> Result<RunInfo> {
    let uses_rewards = cfg.train.kappa > 0.0;
    Ok(RunInfo {
        model: cfg.model.clone(),
        model_config: cfg.model_config.clone(),
        data: cfg.data.clone(),
        dataset_fingerprint: dataset_fingerprint(ds),
        rewards: match (&cfg.rewards, uses_rewards) {
            (Some(p), true) => Some(rewards_info(p)?),
            _ => None,
        },
    })
}

/// Trains a model into the run folder `out` and evaluates it: `config.yaml`, the checkpoint,
/// `metrics.json` and `metrics.md`. With `opts.resume` it continues the run found there (same
/// settings but `max_steps` / `checkpoint_every`); a folder holding another run is an error
/// unless `opts.force`.
pub fn train_run(
    out: &Path,
    cfg: &RunConfig,
    ds: &PreparedDataset,
    build: &BuildBackbone,
    opts: &RunOptions,
) -> Result<RunMetrics> {
    cfg.train.validate()?;
    if cfg.train.kappa > 0.0 && cfg.rewards.is_none() {
        return Err(TrainError::Config(
            "kappa > 0 needs a rewards file (--rewards)".into(),
        ));
    }
    if cfg.train.kappa == 0.0 && cfg.rewards.is_some() {
        tracing::warn!("a rewards file is given but kappa is 0: plain training, rewards unused");
    }
    let resume = prepare_out(out, cfg, opts)?;
    let rewards = match (&cfg.rewards, cfg.train.kappa > 0.0) {
        (Some(p), true) => Some(Rewards::load(p, ds)?),
        _ => None,
    };
    let info = run_info(cfg, ds)?;
    // Everything is checked before anything is written: a refused run leaves no folder behind.
    let mut trainer = Trainer::new(
        ds,
        info,
        build,
        cfg.train.clone(),
        rewards,
        opts.device.clone(),
    )?
    .with_progress(opts.progress);
    std::fs::create_dir_all(out).map_err(|e| TrainError::io(out, e))?;
    cfg.write(out)?;
    let ckpt = out.join(files::CHECKPOINT);
    if resume {
        trainer.restore(&ckpt)?;
        trainer.set_limits(cfg.train.max_steps, cfg.train.checkpoint_every);
    } else if opts.resume {
        tracing::warn!(
            "{}: no checkpoint yet, starting the run from step 0",
            out.display()
        );
    }
    trainer.fit(Some(&ckpt))?;
    let metrics = evaluate_trained(out, cfg, ds, build, &trainer.meta(), trainer.model(), opts)?;
    Ok(metrics)
}

/// Re-evaluates a run folder from its checkpoint (the model config and weights it records) and
/// rewrites `metrics.json` and `metrics.md`. `ds` must be the run's dataset (same fingerprint).
pub fn evaluate_run(
    run: &Path,
    ds: &PreparedDataset,
    build: &BuildBackbone,
    opts: &RunOptions,
) -> Result<RunMetrics> {
    let cfg = RunConfig::read(run)?;
    let ckpt = run.join(files::CHECKPOINT);
    let meta = CheckpointMeta::read(&ckpt)?;
    let fp = dataset_fingerprint(ds);
    if fp != meta.run.dataset_fingerprint {
        return Err(run_err(
            run,
            format!(
                "the dataset given is not the one this run was trained on (fingerprint {} vs {}); pass the run's --data",
                &fp[..12],
                &meta.run.dataset_fingerprint[..12.min(meta.run.dataset_fingerprint.len())]
            ),
        ));
    }
    let (vm, model) = build_model(&cfg.model, build, ds, meta.config.seed, &opts.device)?;
    load_weights(&vm, &ckpt)?;
    evaluate_trained(run, &cfg, ds, build, &meta, &model, opts)
}

fn evaluate_trained(
    out: &Path,
    cfg: &RunConfig,
    ds: &PreparedDataset,
    build: &BuildBackbone,
    meta: &CheckpointMeta,
    model: &mtrec_nn::Model,
    opts: &RunOptions,
) -> Result<RunMetrics> {
    let start = Instant::now();
    let batcher = Batcher::new(ds).with_layout(model.layout());
    let states = samples(ds, Split::Test);
    if states.is_empty() {
        return Err(TrainError::Empty(
            "the dataset has no test sample (prepare it with --test-fraction > 0)".into(),
        ));
    }
    let bs = meta.config.eval_batch_size;
    let logits = score(model, &batcher, &states, bs, &opts.device)?;
    // The untrained model's scores depend only on the architecture, its settings, the seed, the
    // data and the batching: runs that share them (a backbone's plain / IRL / MTRec runs of one
    // seed, in one process) score it once.
    let key = serde_json::json!({
        "model": cfg.model,
        "config": serde_json::to_value(&cfg.model_config).unwrap_or_default(),
        "seed": meta.config.seed,
        "data": meta.run.dataset_fingerprint,
        "batch": bs,
        "layout": format!("{:?}", model.layout()),
        "device": format!("{:?}", opts.device),
    })
    .to_string();
    let init_logits = match init_scores_get(&key) {
        Some(v) => v,
        None => {
            let (_vm0, init) = build_model(&cfg.model, build, ds, meta.config.seed, &opts.device)?;
            let v = std::sync::Arc::new(score(&init, &batcher, &states, bs, &opts.device)?);
            init_scores_put(key, v.clone());
            v
        }
    };
    let test = metrics_from_scores(ds, &states, &logits, &init_logits, &opts.ncis)?;
    let eval_seconds = start.elapsed().as_secs_f64();
    let is_val = validation_users(ds, meta.config.validation_fraction, meta.config.seed);
    let train_samples = samples(ds, Split::Train);
    let val_samples = train_samples
        .iter()
        .filter(|s| is_val[s.user as usize])
        .count();
    let train_users = (1..=ds.n_users())
        .filter(|&u| !ds.is_test(u) && ds.sequence(u).len() >= 2)
        .count();
    let val_users = is_val.iter().filter(|&&v| v).count();
    let st = &meta.state;
    let seconds: f64 = st.epochs.iter().map(|e| e.seconds).sum::<f64>() + st.running.seconds;
    let training = TrainingSummary {
        stopped: st.stopped,
        epochs_completed: st.epochs.len(),
        steps: st.global_step,
        samples: st.samples_seen,
        seconds,
        samples_per_s: st.samples_seen as f64 / seconds.max(1e-9),
        params: meta.params,
        train_users: train_users - val_users,
        validation_users: val_users,
        train_samples: train_samples.len() - val_samples,
        validation_samples: val_samples,
        best_val_auc: st.best_val_auc,
        best_epoch: st.best_epoch,
        epochs: st.epochs.clone(),
        partial_epoch: (st.running.steps > 0).then(|| PartialEpoch {
            epoch: st.epoch,
            steps: st.running.steps,
            samples: st.running.samples,
            train_loss: st.running.loss_sum / st.running.samples.max(1) as f64,
        }),
    };
    let m = RunMetrics {
        schema: METRICS_SCHEMA,
        mtrec_version: env!("CARGO_PKG_VERSION").to_owned(),
        model: cfg.model.clone(),
        seed: meta.config.seed,
        kappa: meta.config.kappa,
        data: cfg.data.clone(),
        dataset_fingerprint: meta.run.dataset_fingerprint.clone(),
        rewards: meta.run.rewards.as_ref().map(|r| r.path.clone()),
        test,
        training,
        eval_seconds,
    };
    write_metrics(out, &m)?;
    tracing::info!(
        "test: AUC {:.5} (last pair), {:.5} (all steps), ΔNCIS {:.4} — {}",
        m.test.auc,
        m.test.auc_all_steps,
        m.test.delta_ncis,
        out.join(files::METRICS_JSON).display()
    );
    Ok(m)
}

/// Memo of untrained models' test scores, by everything they depend on (a few entries).
static INIT_SCORES: std::sync::Mutex<Vec<(String, std::sync::Arc<Vec<f32>>)>> =
    std::sync::Mutex::new(Vec::new());
const INIT_SCORES_KEPT: usize = 8;

fn init_scores_get(key: &str) -> Option<std::sync::Arc<Vec<f32>>> {
    let memo = INIT_SCORES.lock().ok()?;
    memo.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

fn init_scores_put(key: String, v: std::sync::Arc<Vec<f32>>) {
    if let Ok(mut memo) = INIT_SCORES.lock() {
        if memo.len() >= INIT_SCORES_KEPT {
            memo.remove(0);
        }
        memo.push((key, v));
    }
}

/// Writes `metrics.json` and `metrics.md` atomically.
pub fn write_metrics(run: &Path, m: &RunMetrics) -> Result<()> {
    let p = run.join(files::METRICS_JSON);
    let json = serde_json::to_vec_pretty(m).map_err(|e| TrainError::Run {
        path: p.clone(),
        message: e.to_string(),
    })?;
    write_atomic(&p, &json)?;
    write_atomic(&run.join(files::METRICS_MD), metrics_markdown(m).as_bytes())?;
    Ok(())
}

/// Reads `<run>/metrics.json`.
pub fn read_metrics(run: &Path) -> Result<RunMetrics> {
    let p = run.join(files::METRICS_JSON);
    let bytes = std::fs::read(&p).map_err(|e| TrainError::io(&p, e))?;
    serde_json::from_slice(&bytes).map_err(|e| TrainError::Run {
        path: p,
        message: e.to_string(),
    })
}

fn opt(x: Option<f64>, digits: usize) -> String {
    x.map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "–".into())
}

/// The human-readable summary written to `metrics.md`.
pub fn metrics_markdown(m: &RunMetrics) -> String {
    use std::fmt::Write;
    let t = &m.test;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# {} · seed {} · κ {}\n\ndata `{}` (fingerprint {}){}\n",
        m.model,
        m.seed,
        m.kappa,
        m.data.display(),
        &m.dataset_fingerprint[..12.min(m.dataset_fingerprint.len())],
        m.rewards
            .as_ref()
            .map(|r| format!(", rewards `{}`", r.display()))
            .unwrap_or_default()
    );
    let _ = writeln!(s, "## Test ({} users)\n", t.users);
    let _ = writeln!(s, "| metric | value |\n|---|---|");
    for (name, v) in [
        ("AUC, last pair (primary)", format!("{:.5}", t.auc)),
        ("AUC, all steps", format!("{:.5}", t.auc_all_steps)),
        ("GAUC, all steps", format!("{:.5}", t.gauc)),
        ("log loss, all steps", format!("{:.5}", t.logloss)),
        ("log loss, last pair", format!("{:.5}", t.logloss_last_pair)),
        ("NCIS", format!("{:.4}", t.ncis)),
        ("NCIS at initialisation", format!("{:.4}", t.ncis_init)),
        ("ΔNCIS", format!("{:.4}", t.delta_ncis)),
        ("ESS (init)", format!("{:.1} ({:.1})", t.ess, t.ess_init)),
    ] {
        let _ = writeln!(s, "| {name} | {v} |");
    }
    let tr = &m.training;
    let _ = writeln!(
        s,
        "\n## Training\n\n{} steps, {} samples in {:.1} s ({:.0} samples/s); {} parameters; \
         {} training users ({} samples), {} validation users ({} samples); stopped: {}\n",
        tr.steps,
        tr.samples,
        tr.seconds,
        tr.samples_per_s,
        tr.params,
        tr.train_users,
        tr.train_samples,
        tr.validation_users,
        tr.validation_samples,
        tr.stopped
            .map(|r| format!("{r:?}"))
            .unwrap_or_else(|| "-".into())
    );
    let _ = writeln!(
        s,
        "| epoch | lr | steps | loss | BCE | align | aux | val AUC | val log loss | samples/s |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for e in &tr.epochs {
        let _ = writeln!(
            s,
            "| {} | {:.2e} | {} | {:.5} | {:.5} | {} | {} | {} | {} | {:.0} |",
            e.epoch + 1,
            e.lr,
            e.steps,
            e.train_loss,
            e.train_bce,
            opt(e.train_align, 5),
            opt(e.train_aux, 5),
            opt(e.val_auc, 5),
            opt(e.val_logloss, 5),
            e.samples_per_s
        );
    }
    if let Some(p) = &tr.partial_epoch {
        let _ = writeln!(
            s,
            "| {} (partial) | | {} | {:.5} | | | | | | |",
            p.epoch + 1,
            p.steps,
            p.train_loss
        );
    }
    s
}
