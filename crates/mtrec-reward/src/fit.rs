//! Fitting a Q-network to logged behaviour (paper Alg. 1) and patching every training sample with
//! its mental rewards (Alg. 2).
//!
//! A run folder:
//! ```text
//! <run>/reward.yaml          RewardRunConfig: model, its config, data, reward settings
//! <run>/checkpoint/          model.safetensors, optimizer.safetensors, state.json
//! <run>/rewards.parquet      r*(s,P), r*(s,N) (+ per-quantile rewards) of every training sample
//! <run>/reward_metrics.json  loss curve, the Q-net's own click AUC on test users, timings
//! <run>/reward_metrics.md    the same for people
//! ```
//! Every file is written atomically; the checkpoint folder is staged and swapped in whole.
//!
//! The Q-network sees the expert transitions `(s, a, s', done)` of the training users
//! (`mtrec_mdp::transitions`, method §7), in seeded shuffled passes; each step is one Adam update on
//! `batch_size` transitions, with two forward passes (on `s` and on `s'`, both with gradient).

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use mtrec_data::io::{write_atomic, StagedDir};
use mtrec_data::PreparedDataset;
use mtrec_mdp::{samples, shuffled_indices, transition_of, transitions, Batcher, Split, State};
use mtrec_nn::Model;
use mtrec_train::{seeded_var_builder, vocab_of, Adam, AdamConfig, BuildBackbone};
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::{RewardConfig, RewardKind};
use crate::error::{Result, RewardError};
use crate::losses::{expected_rewards, iq_loss, mean_q, qr_iql_loss, quantile_rewards};

/// File names inside a reward run folder.
pub mod files {
    pub const CONFIG: &str = "reward.yaml";
    pub const CHECKPOINT: &str = "checkpoint";
    pub const MODEL: &str = "model.safetensors";
    pub const OPTIMIZER: &str = "optimizer.safetensors";
    pub const STATE: &str = "state.json";
    pub const REWARDS: &str = "rewards.parquet";
    pub const METRICS_JSON: &str = "reward_metrics.json";
    pub const METRICS_MD: &str = "reward_metrics.md";
}

/// `reward.yaml`: everything that defines a reward fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardRunConfig {
    /// Registry name of the Q-network's backbone.
    pub model: String,
    /// The backbone's effective configuration.
    #[serde(default)]
    pub model_config: serde_norway::Value,
    /// The prepared dataset folder.
    pub data: PathBuf,
    #[serde(default)]
    pub reward: RewardConfig,
}

impl RewardRunConfig {
    pub fn read(run: &Path) -> Result<Self> {
        let path = run.join(files::CONFIG);
        let text = std::fs::read_to_string(&path).map_err(|e| RewardError::Io {
            path: path.clone(),
            source: e,
        })?;
        serde_norway::from_str(&text).map_err(|e| RewardError::Yaml {
            path,
            message: e.to_string(),
        })
    }

    fn write(&self, run: &Path) -> Result<()> {
        let text = serde_norway::to_string(self).map_err(|e| RewardError::Yaml {
            path: run.join(files::CONFIG),
            message: e.to_string(),
        })?;
        write_atomic(&run.join(files::CONFIG), text.as_bytes())?;
        Ok(())
    }
}

/// `checkpoint/state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitState {
    /// Adam steps done.
    pub step: u64,
    /// Mean loss of each block of [`LOSS_BLOCK`] steps.
    pub loss_curve: Vec<(u64, f64)>,
    /// The dataset's fingerprint (`mtrec_train::dataset_fingerprint`).
    pub dataset: String,
    /// Seconds spent training so far.
    pub train_seconds: f64,
}

/// Steps per point of the recorded loss curve.
pub const LOSS_BLOCK: u64 = 50;

/// `reward_metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardMetrics {
    pub model: String,
    pub kind: RewardKind,
    pub steps: u64,
    pub batch_size: usize,
    pub lr: f64,
    pub seed: u64,
    pub transitions: usize,
    pub loss_curve: Vec<(u64, f64)>,
    /// Mean loss over the last recorded block.
    pub final_loss: f64,
    /// AUC of `Q(s,P) − Q(s,N)` as a click score over the test users' samples (all steps): how
    /// well the learned user policy predicts behaviour it never saw.
    pub q_test_auc: f64,
    /// Share of training positives whose reward prefers declining, `r*(s,P) < r*(s,N)`: the Q-net's
    /// error on its own training positives (with a shared `s'`, method §10).
    pub train_positive_misorder: f64,
    /// Mean `r*(s,P)`, `r*(s,N)` over training samples, split by the real action.
    pub mean_r_pos_given_p: f64,
    pub mean_r_neg_given_p: f64,
    pub mean_r_pos_given_n: f64,
    pub mean_r_neg_given_n: f64,
    pub train_seconds: f64,
    pub transitions_per_second: f64,
    pub patch_seconds: f64,
}

/// How to run a fit.
#[derive(Debug, Clone)]
pub struct FitOptions {
    pub device: Device,
    /// Show progress bars (off in tests).
    pub progress: bool,
    /// Continue from `<run>/checkpoint` instead of refusing a folder that holds a fit.
    pub resume: bool,
    /// Replace a folder that holds another fit.
    pub force: bool,
    /// Stop after this many steps in this invocation (the checkpoint keeps the rest for `resume`).
    pub stop_after: Option<u64>,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            device: Device::Cpu,
            progress: false,
            resume: false,
            force: false,
            stop_after: None,
        }
    }
}

/// What [`fit_reward`] did.
#[derive(Debug, Clone)]
pub struct FitOutcome {
    /// `None` when stopped early by `stop_after` (no rewards written yet).
    pub metrics: Option<RewardMetrics>,
    pub state: FitState,
}

/// A Q-network (backbone + Q or quantile head) with seeded initial weights.
pub fn build_q_model(
    name: &str,
    build: &BuildBackbone,
    ds: &PreparedDataset,
    cfg: &RewardConfig,
    device: &Device,
) -> Result<(VarMap, Model)> {
    let vm = VarMap::new();
    let vb = seeded_var_builder(&vm, cfg.seed, DType::F32, device);
    let err = |e: candle_core::Error| RewardError::Model {
        model: name.to_owned(),
        message: mtrec_train::candle_message(&e),
    };
    let backbone = build(vocab_of(ds), vb.clone()).map_err(err)?;
    let model = Model::new(backbone, cfg.head(), vb).map_err(err)?;
    Ok((vm, model))
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

fn bar(progress: bool, len: u64, what: &str) -> indicatif::ProgressBar {
    if !progress {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len);
    let style = indicatif::ProgressStyle::with_template(
        "{prefix} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    pb.set_style(style);
    pb.set_prefix(what.to_owned());
    pb
}

/// Fits the reward model of `cfg` on `ds`'s training users into `run`, then patches the rewards.
#[allow(clippy::too_many_arguments)]
pub fn fit_reward(
    run: &Path,
    model_name: &str,
    model_config: serde_norway::Value,
    build: &BuildBackbone,
    ds: &PreparedDataset,
    data_path: &Path,
    cfg: &RewardConfig,
    opts: &FitOptions,
) -> Result<FitOutcome> {
    cfg.validate()?;
    let run_cfg = RewardRunConfig {
        model: model_name.to_owned(),
        model_config,
        data: data_path.to_path_buf(),
        reward: cfg.clone(),
    };
    let ckpt = run.join(files::CHECKPOINT);
    let fingerprint = mtrec_train::dataset_fingerprint(ds);
    let holds_fit = run.join(files::CONFIG).exists();
    if holds_fit && !opts.resume && !opts.force {
        return Err(RewardError::Run {
            path: run.to_path_buf(),
            message:
                "already holds a reward fit (pass --resume to continue it or --force to replace it)"
                    .into(),
        });
    }
    if holds_fit && opts.resume {
        let old = RewardRunConfig::read(run)?;
        if old.model != run_cfg.model || old.reward != run_cfg.reward {
            return Err(RewardError::Run {
                path: run.to_path_buf(),
                message: format!(
                    "holds a fit of {} with other settings; --resume needs the same model and settings",
                    old.model
                ),
            });
        }
    }
    if holds_fit && opts.force && !opts.resume {
        for f in [files::REWARDS, files::METRICS_JSON, files::METRICS_MD] {
            let _ = std::fs::remove_file(run.join(f));
        }
        let _ = std::fs::remove_dir_all(&ckpt);
    }
    std::fs::create_dir_all(run).map_err(|e| RewardError::Io {
        path: run.to_path_buf(),
        source: e,
    })?;
    run_cfg.write(run)?;

    let device = &opts.device;
    let (mut vm, model) = build_q_model(model_name, build, ds, cfg, device)?;
    let mut adam = Adam::new(
        &vm,
        AdamConfig {
            lr: cfg.lr,
            ..AdamConfig::default()
        },
    )?;
    let mut state = FitState {
        step: 0,
        loss_curve: Vec::new(),
        dataset: fingerprint.clone(),
        train_seconds: 0.0,
    };
    if opts.resume && ckpt.join(files::STATE).exists() {
        state = read_state(&ckpt)?;
        if state.dataset != fingerprint {
            return Err(RewardError::Run {
                path: run.to_path_buf(),
                message: "its checkpoint was fitted on another dataset".into(),
            });
        }
        vm.load(ckpt.join(files::MODEL))?;
        adam.load(&ckpt.join(files::OPTIMIZER))?;
        tracing::info!("resuming the reward fit at step {}", state.step);
    }

    let trans = transitions(ds, Split::Train);
    if trans.is_empty() {
        return Err(RewardError::Empty(
            "the dataset has no training transitions (every user is a test user or has one step)"
                .into(),
        ));
    }
    let batcher = Batcher::new(ds).with_layout(model.layout());
    let n = trans.len();
    let b = cfg.batch_size.min(n);
    let per_epoch = (n / b).max(1) as u64;
    let iq = cfg.iq();
    let end = match opts.stop_after {
        Some(k) => (state.step + k).min(cfg.steps),
        None => cfg.steps,
    };
    let pb = bar(opts.progress, cfg.steps, "fit");
    pb.set_position(state.step);
    let started = Instant::now();
    let mut perm: Vec<usize> = Vec::new();
    let mut perm_epoch: Option<u64> = None;
    let mut block_sum = 0.0;
    let mut block_n = 0u64;
    let mut chunk = Vec::with_capacity(b);
    while state.step < end {
        let k = state.step;
        let epoch = k / per_epoch;
        let j = (k % per_epoch) as usize;
        if perm_epoch != Some(epoch) {
            perm = shuffled_indices(n, cfg.seed, epoch);
            perm_epoch = Some(epoch);
        }
        let idx = &perm[j * b..(j + 1) * b];
        chunk.clear();
        chunk.extend(idx.iter().map(|&i| trans[i]));
        let tb = batcher.transitions(&chunk, device)?;
        mtrec_nn::seed_dropout(mtrec_nn::step_seed(cfg.seed, k));
        let out_s = model.forward(&tb.state, true)?;
        let out_n = model.forward(&tb.next, true)?;
        let q_loss = match cfg.kind {
            RewardKind::QrIql => {
                qr_iql_loss(&out_s.logits, &tb.actions, &out_n.logits, &tb.done, &iq)?
            }
            RewardKind::IqLearn => {
                iq_loss(&out_s.logits, &tb.actions, &out_n.logits, &tb.done, &iq)?
            }
        };
        let (loss, aux) = match (&out_s.aux_loss, cfg.aux_loss) {
            (Some(a), true) => ((&q_loss + a)?, scalar(a)?),
            _ => (q_loss.clone(), 0.0),
        };
        let l = scalar(&q_loss)?;
        if !l.is_finite() || !aux.is_finite() {
            return Err(RewardError::NonFinite {
                kind: cfg.kind.as_str(),
                step: k,
                loss: l,
                aux,
            });
        }
        adam.backward_step(&loss)?;
        state.step += 1;
        block_sum += l;
        block_n += 1;
        if state.step % LOSS_BLOCK == 0 || state.step == cfg.steps {
            state
                .loss_curve
                .push((state.step, block_sum / block_n as f64));
            pb.set_message(format!("loss {:.4}", block_sum / block_n as f64));
            tracing::debug!(
                step = state.step,
                loss = block_sum / block_n as f64,
                "reward fit"
            );
            block_sum = 0.0;
            block_n = 0;
        }
        pb.inc(1);
        if cfg.checkpoint_every > 0 && state.step % cfg.checkpoint_every == 0 && state.step < end {
            state.train_seconds += started.elapsed().as_secs_f64();
            write_checkpoint(&ckpt, &vm, &adam, &state)?;
            state.train_seconds -= started.elapsed().as_secs_f64();
        }
    }
    if block_n > 0 {
        state
            .loss_curve
            .push((state.step, block_sum / block_n as f64));
    }
    pb.finish_and_clear();
    let this_run = started.elapsed().as_secs_f64();
    state.train_seconds += this_run;
    write_checkpoint(&ckpt, &vm, &adam, &state)?;
    if state.step < cfg.steps {
        return Ok(FitOutcome {
            metrics: None,
            state,
        });
    }

    let patch_started = Instant::now();
    let patch = patch_rewards(&model, ds, cfg, device, opts.progress)?;
    write_patch(&run.join(files::REWARDS), &patch, cfg)?;
    let q_test_auc = q_click_auc(&model, ds, cfg, device)?;
    let patch_seconds = patch_started.elapsed().as_secs_f64();
    let metrics = summarise(&run_cfg, &state, &patch, n, q_test_auc, patch_seconds);
    write_metrics(run, &metrics)?;
    Ok(FitOutcome {
        metrics: Some(metrics),
        state,
    })
}

fn read_state(ckpt: &Path) -> Result<FitState> {
    let path = ckpt.join(files::STATE);
    let text = std::fs::read_to_string(&path).map_err(|e| RewardError::Io {
        path: path.clone(),
        source: e,
    })?;
    serde_json::from_str(&text).map_err(|e| RewardError::Run {
        path,
        message: format!("unreadable checkpoint state: {e}"),
    })
}

fn write_checkpoint(ckpt: &Path, vm: &VarMap, adam: &Adam, state: &FitState) -> Result<()> {
    let staged = StagedDir::new(ckpt, true)?;
    vm.save(staged.path().join(files::MODEL))?;
    adam.save(&staged.path().join(files::OPTIMIZER))?;
    let json = serde_json::to_vec_pretty(state).map_err(|e| RewardError::Run {
        path: ckpt.to_path_buf(),
        message: e.to_string(),
    })?;
    std::fs::write(staged.path().join(files::STATE), json).map_err(|e| RewardError::Io {
        path: staged.path().join(files::STATE),
        source: e,
    })?;
    staged.commit()?;
    Ok(())
}

/// The rewards of every training sample, in `samples(ds, Split::Train)` order.
#[derive(Debug, Clone, Default)]
pub struct Patch {
    pub states: Vec<State>,
    pub done: Vec<bool>,
    /// `r*(s,P)`, `r*(s,N)` (Eq. 7).
    pub r_pos: Vec<f32>,
    pub r_neg: Vec<f32>,
    /// Per-quantile rewards `[sample][head]` of each action (QR-IQL only; empty for IQ-Learn).
    pub q_pos: Vec<Vec<f32>>,
    pub q_neg: Vec<Vec<f32>>,
}

/// Alg. 2: `r*(s,a) = Q_λ(s,a) − γ(1−done)·logsumexp Q_λ(s',·)` for both actions of every training
/// sample, with the sample's logged `s'` (method §4).
pub fn patch_rewards(
    model: &Model,
    ds: &PreparedDataset,
    cfg: &RewardConfig,
    device: &Device,
    progress: bool,
) -> Result<Patch> {
    patch_states(model, ds, &samples(ds, Split::Train), cfg, device, progress)
}

/// Alg. 2 on any list of sample states (of any split), in the given order: each state's rewards
/// use its logged transition (`mtrec_mdp::transition_of`). Ground-truth metrics score held-out users
/// this way, exactly as training samples are patched.
pub fn patch_states(
    model: &Model,
    ds: &PreparedDataset,
    states: &[State],
    cfg: &RewardConfig,
    device: &Device,
    progress: bool,
) -> Result<Patch> {
    let batcher = Batcher::new(ds).with_layout(model.layout());
    let mut p = Patch {
        states: states.to_vec(),
        ..Patch::default()
    };
    let pb = bar(progress, states.len() as u64, "patch");
    let chunk_len = cfg.eval_batch_size.max(1);
    let mut start = 0;
    while start < states.len() {
        // A chunk ends on a user boundary, so that the next states of its transitions (same user)
        // are mostly its own states: every distinct state is scored once, which halves the work
        // against scoring `s` and `s'` separately (the next state of a step is the next step's
        // positive, itself a sample).
        let mut end = (start + chunk_len).min(states.len());
        while end < states.len() && states[end].user == states[end - 1].user {
            end += 1;
        }
        let chunk = &states[start..end];
        let ts: Vec<_> = chunk.iter().map(|&s| transition_of(ds, s)).collect();
        let mut index: std::collections::HashMap<State, u32> = std::collections::HashMap::new();
        let mut unique: Vec<State> = Vec::new();
        let mut slot = |s: State, unique: &mut Vec<State>| {
            *index.entry(s).or_insert_with(|| {
                unique.push(s);
                (unique.len() - 1) as u32
            })
        };
        let mut at_s = Vec::with_capacity(ts.len());
        let mut at_next = Vec::with_capacity(ts.len());
        for t in &ts {
            let i = slot(t.state, &mut unique);
            at_s.push(i);
            // The value of `s'` is masked out at `done`: any row will do there.
            at_next.push(if t.done { i } else { slot(t.next, &mut unique) });
        }
        let mut parts = Vec::new();
        for block in unique.chunks(chunk_len) {
            let batch = batcher.batch(block, device)?;
            parts.push(model.forward(&batch, false)?.logits);
        }
        let q_all = Tensor::cat(&parts, 0)?;
        let q_s = q_all.index_select(&Tensor::new(at_s.as_slice(), device)?, 0)?;
        let q_n = q_all.index_select(&Tensor::new(at_next.as_slice(), device)?, 0)?;
        let done = Tensor::new(
            ts.iter()
                .map(|t| if t.done { 1f32 } else { 0.0 })
                .collect::<Vec<f32>>()
                .as_slice(),
            device,
        )?;
        let r: Vec<Vec<f32>> = expected_rewards(&q_s, &q_n, &done, cfg.gamma)?
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .to_vec2()?;
        for row in r {
            p.r_neg.push(row[0]);
            p.r_pos.push(row[mtrec_nn::ACTION_P]);
        }
        p.done.extend(ts.iter().map(|t| t.done));
        if cfg.kind == RewardKind::QrIql {
            let q: Vec<Vec<Vec<f32>>> = quantile_rewards(&q_s, &q_n, &done, cfg.gamma)?
                .to_dtype(DType::F32)?
                .to_device(&Device::Cpu)?
                .to_vec3()?;
            for row in q {
                p.q_neg.push(row[0].clone());
                p.q_pos.push(row[mtrec_nn::ACTION_P].clone());
            }
        }
        pb.inc(chunk.len() as u64);
        start = end;
    }
    pb.finish_and_clear();
    Ok(p)
}

/// Writes a patch as the rewards file `mtrec train --rewards` reads (format: `mtrec_train::rewards`),
/// plus `done` and the per-quantile columns `q_pos_i`, `q_neg_i`.
pub fn write_patch(path: &Path, p: &Patch, cfg: &RewardConfig) -> Result<()> {
    let n = p.states.len();
    let mut cols = vec![
        Column::new(
            "user".into(),
            p.states.iter().map(|s| s.user).collect::<Vec<_>>(),
        ),
        Column::new(
            "step".into(),
            p.states.iter().map(|s| s.step).collect::<Vec<_>>(),
        ),
        Column::new(
            "positive".into(),
            p.states.iter().map(|s| s.positive).collect::<Vec<_>>(),
        ),
        Column::new("done".into(), p.done.clone()),
        Column::new("r_pos".into(), p.r_pos.clone()),
        Column::new("r_neg".into(), p.r_neg.clone()),
    ];
    if cfg.kind == RewardKind::QrIql {
        for i in 0..cfg.quantiles {
            cols.push(Column::new(
                format!("q_pos_{i}").into(),
                p.q_pos.iter().map(|q| q[i]).collect::<Vec<_>>(),
            ));
        }
        for i in 0..cfg.quantiles {
            cols.push(Column::new(
                format!("q_neg_{i}").into(),
                p.q_neg.iter().map(|q| q[i]).collect::<Vec<_>>(),
            ));
        }
    }
    let bad = |e: PolarsError| RewardError::Rewards {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut df = DataFrame::new(n, cols).map_err(bad)?;
    let mut buf = Vec::new();
    ParquetWriter::new(&mut buf).finish(&mut df).map_err(bad)?;
    write_atomic(path, &buf)?;
    Ok(())
}

/// Reads a rewards file written by [`write_patch`] back into a [`Patch`] (with the `quantiles`
/// per-quantile columns of each action when `quantiles > 0`), so that what a fit already computed
/// need not be scored again.
pub fn read_patch(path: &Path, quantiles: usize) -> Result<Patch> {
    let f = crate::rewards_file::RewardsFile::open(path)?;
    let (user, step, positive) = (f.u32s("user")?, f.u32s("step")?, f.bools("positive")?);
    let quantile_rows = |action: &str| -> Result<Vec<Vec<f32>>> {
        let cols = (0..quantiles)
            .map(|i| f.f32s(&format!("q_{action}_{i}")))
            .collect::<Result<Vec<_>>>()?;
        Ok((0..if quantiles > 0 { user.len() } else { 0 })
            .map(|r| cols.iter().map(|c| c[r]).collect())
            .collect())
    };
    Ok(Patch {
        states: (0..user.len())
            .map(|i| State {
                user: user[i],
                step: step[i],
                positive: positive[i],
            })
            .collect(),
        done: f.bools("done")?,
        r_pos: f.f32s("r_pos")?,
        r_neg: f.f32s("r_neg")?,
        q_pos: quantile_rows("pos")?,
        q_neg: quantile_rows("neg")?,
    })
}

/// AUC of the Q-net's preference `Q(s,P) − Q(s,N)` over every test sample.
pub fn q_click_auc(
    model: &Model,
    ds: &PreparedDataset,
    cfg: &RewardConfig,
    device: &Device,
) -> Result<f64> {
    let states = samples(ds, Split::Test);
    if states.is_empty() {
        return Ok(f64::NAN);
    }
    let batcher = Batcher::new(ds).with_layout(model.layout());
    let mut scores = Vec::with_capacity(states.len());
    for chunk in states.chunks(cfg.eval_batch_size) {
        let batch = batcher.batch(chunk, device)?;
        let q: Vec<Vec<f32>> = mean_q(&model.forward(&batch, false)?.logits)?
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .to_vec2()?;
        scores.extend(q.iter().map(|r| r[mtrec_nn::ACTION_P] - r[0]));
    }
    let labels: Vec<bool> = states.iter().map(|s| s.positive).collect();
    Ok(mtrec_eval::auc(&scores, &labels)?)
}

fn mean(xs: impl Iterator<Item = f32>) -> f64 {
    let (s, n) = xs.fold((0.0f64, 0usize), |(s, n), x| (s + x as f64, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        s / n as f64
    }
}

fn summarise(
    run_cfg: &RewardRunConfig,
    state: &FitState,
    p: &Patch,
    transitions: usize,
    q_test_auc: f64,
    patch_seconds: f64,
) -> RewardMetrics {
    let cfg = &run_cfg.reward;
    let idx_p: Vec<usize> = (0..p.states.len())
        .filter(|&i| p.states[i].positive)
        .collect();
    let idx_n: Vec<usize> = (0..p.states.len())
        .filter(|&i| !p.states[i].positive)
        .collect();
    let misorder = idx_p.iter().filter(|&&i| p.r_pos[i] < p.r_neg[i]).count() as f64
        / idx_p.len().max(1) as f64;
    RewardMetrics {
        model: run_cfg.model.clone(),
        kind: cfg.kind,
        steps: state.step,
        batch_size: cfg.batch_size,
        lr: cfg.lr,
        seed: cfg.seed,
        transitions,
        loss_curve: state.loss_curve.clone(),
        final_loss: state.loss_curve.last().map(|x| x.1).unwrap_or(f64::NAN),
        q_test_auc,
        train_positive_misorder: misorder,
        mean_r_pos_given_p: mean(idx_p.iter().map(|&i| p.r_pos[i])),
        mean_r_neg_given_p: mean(idx_p.iter().map(|&i| p.r_neg[i])),
        mean_r_pos_given_n: mean(idx_n.iter().map(|&i| p.r_pos[i])),
        mean_r_neg_given_n: mean(idx_n.iter().map(|&i| p.r_neg[i])),
        train_seconds: state.train_seconds,
        transitions_per_second: state.step as f64 * cfg.batch_size.min(transitions) as f64
            / state.train_seconds.max(1e-9),
        patch_seconds,
    }
}

fn write_metrics(run: &Path, m: &RewardMetrics) -> Result<()> {
    let json = serde_json::to_vec_pretty(m).map_err(|e| RewardError::Run {
        path: run.to_path_buf(),
        message: e.to_string(),
    })?;
    write_atomic(&run.join(files::METRICS_JSON), &json)?;
    write_atomic(&run.join(files::METRICS_MD), metrics_markdown(m).as_bytes())?;
    Ok(())
}

/// `reward_metrics.md`.
pub fn metrics_markdown(m: &RewardMetrics) -> String {
    format!(
        "# Reward model: {} ({})\n\n\
         | quantity | value |\n|---|---|\n\
         | steps × batch | {} × {} (lr {}, seed {}) |\n\
         | training transitions | {} |\n\
         | final loss (last {} steps) | {:.5} |\n\
         | Q-net click AUC on test users, `Q(s,P) − Q(s,N)` | {:.4} |\n\
         | training positives with r*(s,P) < r*(s,N) | {:.1}% |\n\
         | mean r*(s,P), r*(s,N) given real P | {:.4}, {:.4} |\n\
         | mean r*(s,P), r*(s,N) given real N | {:.4}, {:.4} |\n\
         | training time | {:.1} s ({:.0} transitions/s) |\n\
         | patching + scoring time | {:.1} s |\n",
        m.model,
        m.kind.as_str(),
        m.steps,
        m.batch_size,
        m.lr,
        m.seed,
        m.transitions,
        LOSS_BLOCK,
        m.final_loss,
        m.q_test_auc,
        100.0 * m.train_positive_misorder,
        m.mean_r_pos_given_p,
        m.mean_r_neg_given_p,
        m.mean_r_pos_given_n,
        m.mean_r_neg_given_n,
        m.train_seconds,
        m.transitions_per_second,
        m.patch_seconds,
    )
}

/// Reads `reward_metrics.json`.
pub fn read_metrics(run: &Path) -> Result<RewardMetrics> {
    let path = run.join(files::METRICS_JSON);
    let text = std::fs::read_to_string(&path).map_err(|e| RewardError::Io {
        path: path.clone(),
        source: e,
    })?;
    serde_json::from_str(&text).map_err(|e| RewardError::Run {
        path,
        message: format!("unreadable metrics: {e}"),
    })
}
