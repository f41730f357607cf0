//! The training loop: seeded shuffles, the loss `L_CE + κ·L_Align + aux`, Adam with the per-epoch
//! learning-rate decay, validation AUC, early stopping, checkpoints and exact resume.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mtrec_data::io::StagedDir;
use mtrec_data::PreparedDataset;
use mtrec_eval::{auc, logloss_from_logits};
use mtrec_mdp::{samples, shuffled_indices, Batcher, Split, State};
use mtrec_nn::{Backbone, HeadKind, Layout, Model, Vocab};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::adam::{Adam, AdamConfig};
use crate::config::TrainConfig;
use crate::error::{candle_message, Result, TrainError};
use crate::eval::score;
use crate::init::seeded_var_builder;
use crate::loss::training_loss;
use crate::rewards::Rewards;

/// Builds a backbone for a dataset's vocabulary from a `VarBuilder` (a closure over the model
/// registry, or a test model).
pub type BuildBackbone<'a> =
    dyn Fn(Vocab, VarBuilder<'static>) -> candle_core::Result<Box<dyn Backbone>> + 'a;

/// File names inside a checkpoint folder.
pub mod files {
    /// The model's variables (the `VarMap`), safetensors.
    pub const MODEL: &str = "model.safetensors";
    /// Adam's `m/<var>`, `v/<var>` and `adam.step`, safetensors.
    pub const OPTIMIZER: &str = "optimizer.safetensors";
    /// The weights of the best validation epoch (only with early stopping), safetensors.
    pub const BEST: &str = "best.safetensors";
    /// [`super::CheckpointMeta`] as JSON.
    pub const TRAINER: &str = "trainer.json";
}

/// Version of the checkpoint layout.
pub const CHECKPOINT_VERSION: u32 = 1;

/// The stream of `shuffled_indices` that picks the validation users (epochs use streams 0, 1, ...).
const VALIDATION_STREAM: u64 = u64::MAX;

/// Vocabulary sizes of a dataset (largest id + 1; 0 is padding).
pub fn vocab_of(ds: &PreparedDataset) -> Vocab {
    Vocab {
        users: ds.n_users() + 1,
        items: ds.item_vocab(),
        categories: ds.category_vocab(),
    }
}

/// A CTR model (backbone + one-logit head) with seeded initial weights, and its `VarMap`. The
/// same `seed` gives the same initial weights: this is also how `M_init` of ΔNCIS is rebuilt.
pub fn build_model(
    name: &str,
    build: &BuildBackbone,
    ds: &PreparedDataset,
    seed: u64,
    device: &Device,
) -> Result<(VarMap, Model)> {
    let vm = VarMap::new();
    let vb = seeded_var_builder(&vm, seed, DType::F32, device);
    let err = |e: candle_core::Error| TrainError::Model {
        model: name.to_owned(),
        message: crate::error::candle_message(&e),
    };
    let backbone = build(vocab_of(ds), vb.clone()).map_err(err)?;
    let model = Model::new(backbone, HeadKind::Ctr, vb).map_err(err)?;
    Ok((vm, model))
}

/// The device of a `--device` flag: `cpu`, `cuda` or `cuda:N` (CUDA needs a build with the `cuda`
/// feature; without it candle's error says so).
pub fn parse_device(spec: &str) -> Result<Device> {
    let bad = |m: String| TrainError::Config(format!("--device {spec}: {m}"));
    match spec {
        "cpu" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let n = match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse::<usize>()
                    .map_err(|_| bad("expected cuda:<number>".into()))?,
                None => 0,
            };
            Device::new_cuda(n).map_err(|e| bad(crate::error::candle_message(&e)))
        }
        _ => Err(bad("expected cpu, cuda or cuda:<N>".into())),
    }
}

/// A fingerprint of a prepared dataset: SHA-256 of its provenance (input hashes, rules, counts),
/// not of where it lives. Two preparations of the same inputs with the same rules agree.
pub fn dataset_fingerprint(ds: &PreparedDataset) -> String {
    let m = &ds.manifest;
    let inputs: Vec<(u64, &str)> = m
        .inputs
        .iter()
        .map(|i| (i.bytes, i.sha256.as_str()))
        .collect();
    let v = serde_json::json!({
        "source_format": m.source_format,
        "inputs": inputs,
        "rules": m.rules,
        "counts": m.counts,
    });
    let mut h = Sha256::new();
    h.update(v.to_string().as_bytes());
    hex::encode(h.finalize())
}

/// Marks the validation users: a seeded `validation_fraction` share (rounded) of the training
/// users that have samples. Indexed by user id.
pub fn validation_users(ds: &PreparedDataset, fraction: f64, seed: u64) -> Vec<bool> {
    let mut out = vec![false; ds.n_users() + 1];
    let train: Vec<usize> = (1..=ds.n_users())
        .filter(|&u| !ds.is_test(u) && ds.sequence(u).len() >= 2)
        .collect();
    let k = ((fraction * train.len() as f64).round() as usize).min(train.len());
    for &i in shuffled_indices(train.len(), seed, VALIDATION_STREAM)
        .iter()
        .take(k)
    {
        out[train[i]] = true;
    }
    out
}

/// Why training stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Every epoch ran.
    Completed,
    /// `patience` epochs without a better validation AUC; the best epoch's weights are kept.
    EarlyStopped,
    /// `max_steps` reached; resume without it to go on.
    MaxSteps,
}

/// Loss sums of the epoch in progress (sample-weighted), kept in checkpoints so that a resumed
/// run reports the same epoch losses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochAccum {
    pub steps: usize,
    pub samples: u64,
    pub loss_sum: f64,
    pub bce_sum: f64,
    pub align_sum: f64,
    pub aux_sum: f64,
    /// Wall time of the steps (forward, backward, update), seconds.
    pub seconds: f64,
}

impl EpochAccum {
    fn mean(&self, sum: f64) -> f64 {
        if self.samples == 0 {
            f64::NAN
        } else {
            sum / self.samples as f64
        }
    }
}

/// One finished epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 0-based.
    pub epoch: usize,
    pub lr: f64,
    pub steps: usize,
    pub samples: u64,
    /// Mean training loss `L` over the epoch's samples.
    pub train_loss: f64,
    /// Mean `L_CE`.
    pub train_bce: f64,
    /// Mean `L_Align` (unweighted), when κ > 0.
    pub train_align: Option<f64>,
    /// Mean auxiliary loss, when the backbone has one.
    pub train_aux: Option<f64>,
    /// AUC over the validation users' samples (all steps).
    pub val_auc: Option<f64>,
    /// Log loss over the validation users' samples.
    pub val_logloss: Option<f64>,
    /// Wall time of the epoch's training steps.
    pub seconds: f64,
    pub samples_per_s: f64,
}

/// Where training stands: everything a resumed run needs besides the weights and Adam's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// The epoch in progress (0-based); equals `epochs` once training is over.
    pub epoch: usize,
    /// Batches of `epoch` already trained.
    pub step_in_epoch: usize,
    /// Optimiser steps in all.
    pub global_step: u64,
    /// Training samples seen in all.
    pub samples_seen: u64,
    /// Sums of the epoch in progress.
    pub running: EpochAccum,
    /// Finished epochs.
    pub epochs: Vec<EpochRecord>,
    pub best_val_auc: Option<f64>,
    pub best_epoch: Option<usize>,
    pub epochs_since_best: usize,
    /// Set once training stopped (a `MaxSteps` stop is cleared by a resume).
    pub stopped: Option<StopReason>,
}

/// What a checkpoint's weights belong to, recorded in `trainer.json` and checked on resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// Registry name of the backbone.
    pub model: String,
    /// The backbone's effective configuration.
    pub model_config: serde_norway::Value,
    /// The prepared dataset's folder (as given).
    pub data: PathBuf,
    /// [`dataset_fingerprint`] of the dataset.
    pub dataset_fingerprint: String,
    /// The rewards file and its SHA-256, when the alignment loss uses one.
    pub rewards: Option<RewardsInfo>,
}

/// A rewards file and its content hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardsInfo {
    pub path: PathBuf,
    pub sha256: String,
}

/// `trainer.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub format_version: u32,
    pub mtrec_version: String,
    pub config: TrainConfig,
    pub run: RunInfo,
    pub state: TrainState,
    /// Trainable scalars of the model.
    pub params: usize,
}

impl CheckpointMeta {
    /// Reads `trainer.json` of a checkpoint folder.
    pub fn read(dir: &Path) -> Result<Self> {
        let p = dir.join(files::TRAINER);
        let bytes = std::fs::read(&p).map_err(|e| {
            TrainError::checkpoint(dir, format!("cannot read {}: {e}", files::TRAINER))
        })?;
        let meta: CheckpointMeta = serde_json::from_slice(&bytes)
            .map_err(|e| TrainError::checkpoint(&p, format!("not a trainer state: {e}")))?;
        if meta.format_version != CHECKPOINT_VERSION {
            return Err(TrainError::checkpoint(
                dir,
                format!(
                    "layout version {} but this mtrec reads version {CHECKPOINT_VERSION}",
                    meta.format_version
                ),
            ));
        }
        Ok(meta)
    }
}

/// Lists the fields in which two serialisable values differ (`a.b: x → y`), for error messages.
pub fn differences<T: Serialize>(old: &T, new: &T) -> Vec<String> {
    fn walk(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        use serde_json::Value;
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(
                        &p,
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                        out,
                    );
                }
            }
            _ if a != b => out.push(format!("{prefix}: {a} → {b}")),
            _ => {}
        }
    }
    let (Ok(a), Ok(b)) = (serde_json::to_value(old), serde_json::to_value(new)) else {
        return vec!["(values cannot be compared)".into()];
    };
    let mut out = Vec::new();
    walk("", &a, &b, &mut out);
    out
}

/// Whether progress bars are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Bars on stderr when it is a terminal.
    Auto,
    /// No bars (tests, logs to files).
    Hidden,
}

/// Trains one CTR model on one prepared dataset.
pub struct Trainer<'a> {
    ds: &'a PreparedDataset,
    cfg: TrainConfig,
    run: RunInfo,
    varmap: VarMap,
    model: Model,
    opt: Adam,
    rewards: Option<Rewards>,
    device: Device,
    layout: Layout,
    train: Vec<State>,
    val: Vec<State>,
    state: TrainState,
    best_weights: Option<HashMap<String, Tensor>>,
    progress: Progress,
    /// Seconds spent in batching, forward (with the loss), backward and the update since the
    /// last epoch's end (a profile for the logs, not saved).
    phase_seconds: [f64; 4],
}

impl std::fmt::Debug for Trainer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("model", &self.run.model)
            .field("state", &self.state)
            .finish()
    }
}

impl<'a> Trainer<'a> {
    /// A trainer at step 0 with the seeded initial model. With κ > 0, `rewards` must cover every
    /// training sample (the error names the first that is missing).
    pub fn new(
        ds: &'a PreparedDataset,
        run: RunInfo,
        build: &BuildBackbone,
        cfg: TrainConfig,
        rewards: Option<Rewards>,
        device: Device,
    ) -> Result<Self> {
        cfg.validate()?;
        let (varmap, model) = build_model(&run.model, build, ds, cfg.seed, &device)?;
        let opt = Adam::new(
            &varmap,
            AdamConfig {
                lr: cfg.lr,
                beta1: cfg.beta1,
                beta2: cfg.beta2,
                eps: cfg.eps,
            },
        )?;
        let is_val = validation_users(ds, cfg.validation_fraction, cfg.seed);
        let (val, train): (Vec<State>, Vec<State>) = samples(ds, Split::Train)
            .into_iter()
            .partition(|s| is_val[s.user as usize]);
        if train.is_empty() {
            return Err(TrainError::Empty(
                "no training sample: every training user has fewer than 2 interactions or is held out for validation".into(),
            ));
        }
        if cfg.kappa > 0.0 {
            match &rewards {
                Some(r) => r.check_covers(&train)?,
                None => return Err(TrainError::Config(
                    "kappa > 0 needs a rewards file (r*(s,P), r*(s,N) of every training sample)"
                        .into(),
                )),
            }
        }
        let layout = model.layout();
        tracing::info!(
            "model {}: {} parameters; {} training samples, {} validation samples",
            run.model,
            opt.n_params(),
            train.len(),
            val.len()
        );
        Ok(Trainer {
            ds,
            cfg,
            run,
            varmap,
            model,
            opt,
            rewards,
            device,
            layout,
            train,
            val,
            state: TrainState::default(),
            best_weights: None,
            progress: Progress::Auto,
            phase_seconds: [0.0; 4],
        })
    }

    /// Sets whether progress bars are drawn.
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = progress;
        self
    }

    /// Changes the step limit and the checkpoint interval (a resumed run may change them).
    pub fn set_limits(&mut self, max_steps: Option<u64>, checkpoint_every: Option<u64>) {
        self.cfg.max_steps = max_steps;
        self.cfg.checkpoint_every = checkpoint_every;
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    pub fn state(&self) -> &TrainState {
        &self.state
    }

    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    pub fn run_info(&self) -> &RunInfo {
        &self.run
    }

    /// Trainable scalars.
    pub fn n_params(&self) -> usize {
        self.opt.n_params()
    }

    /// Training samples (validation users excluded).
    pub fn train_samples(&self) -> &[State] {
        &self.train
    }

    /// Validation samples.
    pub fn validation_samples(&self) -> &[State] {
        &self.val
    }

    fn batcher(&self) -> Batcher<'a> {
        Batcher::new(self.ds).with_layout(self.layout)
    }

    /// Trains until every epoch ran, early stopping, or `max_steps`; writes a checkpoint into
    /// `checkpoint` (when given) at the end of every epoch, every `checkpoint_every` steps and
    /// where it stops.
    pub fn fit(&mut self, checkpoint: Option<&Path>) -> Result<StopReason> {
        match self.state.stopped {
            Some(StopReason::MaxSteps) => self.state.stopped = None,
            Some(r) => return Ok(r),
            None => {}
        }
        let n = self.train.len();
        let bs = self.cfg.batch_size;
        let steps_per_epoch = n.div_ceil(bs);
        let batcher = self.batcher();
        let mut states = Vec::with_capacity(bs);
        while self.state.epoch < self.cfg.epochs {
            let epoch = self.state.epoch;
            self.opt.set_lr(self.cfg.lr_at(epoch));
            let order = shuffled_indices(n, self.cfg.seed, epoch as u64);
            let pb = self.progress_bar(epoch, steps_per_epoch);
            // Without a bar (logs to a file), a line a minute says where training stands.
            let mut last_log = Instant::now();
            while self.state.step_in_epoch < steps_per_epoch {
                if self
                    .cfg
                    .max_steps
                    .is_some_and(|m| self.state.global_step >= m)
                {
                    pb.finish_and_clear();
                    return self.stop(StopReason::MaxSteps, checkpoint);
                }
                let k = self.state.step_in_epoch;
                states.clear();
                states.extend(
                    order[k * bs..((k + 1) * bs).min(n)]
                        .iter()
                        .map(|&i| self.train[i]),
                );
                let start = Instant::now();
                let l = self.train_step(&batcher, &states)?;
                let b = states.len() as u64;
                let r = &mut self.state.running;
                r.steps += 1;
                r.samples += b;
                r.loss_sum += l[0] * b as f64;
                r.bce_sum += l[1] * b as f64;
                r.align_sum += l[2] * b as f64;
                r.aux_sum += l[3] * b as f64;
                r.seconds += start.elapsed().as_secs_f64();
                self.state.step_in_epoch += 1;
                self.state.global_step += 1;
                self.state.samples_seen += b;
                pb.set_position(self.state.step_in_epoch as u64);
                if self.state.step_in_epoch % 20 == 0 || self.state.step_in_epoch == 1 {
                    let r = &self.state.running;
                    let msg = format!(
                        "loss {:.4} · {:.0} samples/s",
                        r.mean(r.loss_sum),
                        r.samples as f64 / r.seconds.max(1e-9)
                    );
                    if pb.is_hidden() && last_log.elapsed() >= Duration::from_secs(60) {
                        last_log = Instant::now();
                        tracing::info!(
                            "epoch {}/{}: step {}/{steps_per_epoch} · {msg}",
                            epoch + 1,
                            self.cfg.epochs,
                            self.state.step_in_epoch
                        );
                    }
                    pb.set_message(msg);
                }
                if let (Some(every), Some(dir)) = (self.cfg.checkpoint_every, checkpoint) {
                    if self.state.global_step % every == 0
                        && self.state.step_in_epoch < steps_per_epoch
                    {
                        self.save_checkpoint(dir)?;
                    }
                }
            }
            pb.finish_and_clear();
            if self.end_epoch()? {
                return self.stop(StopReason::EarlyStopped, checkpoint);
            }
            if self.state.epoch < self.cfg.epochs {
                if let Some(dir) = checkpoint {
                    self.save_checkpoint(dir)?;
                }
            }
        }
        self.stop(StopReason::Completed, checkpoint)
    }

    fn progress_bar(&self, epoch: usize, steps: usize) -> ProgressBar {
        if self.progress == Progress::Hidden || !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let pb = ProgressBar::with_draw_target(Some(steps as u64), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} steps · {msg} [{elapsed_precise}, eta {eta}]",
        ) {
            pb.set_style(style.progress_chars("=> "));
        }
        pb.set_prefix(format!("epoch {}/{}", epoch + 1, self.cfg.epochs));
        pb.set_position(self.state.step_in_epoch as u64);
        pb.enable_steady_tick(Duration::from_millis(250));
        pb
    }

    /// One optimiser step; returns `[loss, bce, align, aux]` of the batch.
    fn train_step(&mut self, batcher: &Batcher, states: &[State]) -> Result<[f64; 4]> {
        let t0 = Instant::now();
        let batch = batcher.batch(states, &self.device)?;
        let t1 = Instant::now();
        // Dropout masks of this step: a function of the seed and the step (resume-exact).
        mtrec_nn::seed_dropout(mtrec_nn::step_seed(self.cfg.seed, self.state.global_step));
        let out = self.model.forward(&batch, true)?;
        let kappa = self.cfg.kappa;
        let rewards = match (&self.rewards, kappa > 0.0) {
            (Some(r), true) => {
                let (rp, rn) = r.columns(states);
                let b = states.len();
                Some((
                    Tensor::from_vec(rp, b, &self.device)?,
                    Tensor::from_vec(rn, b, &self.device)?,
                ))
            }
            _ => None,
        };
        let terms = training_loss(
            &out.logits,
            &batch.labels,
            rewards.as_ref().map(|(a, b)| (a, b)),
            kappa,
            out.aux_loss.as_ref(),
        )?;
        let scalar = |t: Option<&Tensor>| -> Result<f64> {
            match t {
                Some(t) => Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?),
                None => Ok(0.0),
            }
        };
        let l = [
            scalar(Some(&terms.total))?,
            scalar(Some(&terms.bce))?,
            scalar(terms.align.as_ref())?,
            scalar(terms.aux.as_ref())?,
        ];
        if !l[0].is_finite() {
            return Err(self.non_finite(states, l));
        }
        let t2 = Instant::now();
        let grads = terms.total.backward()?;
        let t3 = Instant::now();
        self.opt.step(&grads)?;
        let t4 = Instant::now();
        for (acc, (a, b)) in
            self.phase_seconds
                .iter_mut()
                .zip([(t0, t1), (t1, t2), (t2, t3), (t3, t4)])
        {
            *acc += (b - a).as_secs_f64();
        }
        Ok(l)
    }

    fn non_finite(&self, states: &[State], l: [f64; 4]) -> TrainError {
        let mut hint = String::new();
        if !l[2].is_finite() {
            if let Some(r) = &self.rewards {
                if let Some(s) = states.iter().find(|s| {
                    r.get(**s)
                        .is_some_and(|(p, n)| !(p.is_finite() && n.is_finite()))
                }) {
                    hint = format!(
                        "; the rewards of sample (user {}, step {}, positive {}) in {} are not finite",
                        s.user,
                        s.step,
                        s.positive,
                        r.path().display()
                    );
                }
            }
        }
        if hint.is_empty() {
            hint = "; try a lower lr".into();
        }
        TrainError::NonFinite {
            epoch: self.state.epoch,
            step: self.state.step_in_epoch,
            global_step: self.state.global_step,
            loss: l[0],
            bce: l[1],
            align: l[2],
            kappa: self.cfg.kappa,
            aux: l[3],
            hint,
        }
    }

    /// Validation AUC and log loss over the validation users' samples.
    pub fn validate(&self) -> Result<Option<(f64, f64)>> {
        if self.val.is_empty() {
            return Ok(None);
        }
        let logits = score(
            &self.model,
            &self.batcher(),
            &self.val,
            self.cfg.eval_batch_size,
            &self.device,
        )?;
        let labels: Vec<u8> = self.val.iter().map(|s| u8::from(s.positive)).collect();
        Ok(Some((
            auc(&logits, &labels)?,
            logloss_from_logits(&logits, &labels)?,
        )))
    }

    /// Closes the epoch in progress: validation, the epoch's record, the best epoch. Returns
    /// whether early stopping triggers.
    fn end_epoch(&mut self) -> Result<bool> {
        let val = self.validate()?;
        let r = std::mem::take(&mut self.state.running);
        let epoch = self.state.epoch;
        let rec = EpochRecord {
            epoch,
            lr: self.cfg.lr_at(epoch),
            steps: r.steps,
            samples: r.samples,
            train_loss: r.mean(r.loss_sum),
            train_bce: r.mean(r.bce_sum),
            train_align: (self.cfg.kappa > 0.0).then(|| r.mean(r.align_sum)),
            train_aux: (r.aux_sum != 0.0).then(|| r.mean(r.aux_sum)),
            val_auc: val.map(|v| v.0),
            val_logloss: val.map(|v| v.1),
            seconds: r.seconds,
            samples_per_s: r.samples as f64 / r.seconds.max(1e-9),
        };
        tracing::info!(
            "epoch {}/{}: loss {:.5} (bce {:.5}{}) · val AUC {} · {:.0} samples/s",
            epoch + 1,
            self.cfg.epochs,
            rec.train_loss,
            rec.train_bce,
            rec.train_align
                .map(|a| format!(", align {a:.5}"))
                .unwrap_or_default(),
            rec.val_auc
                .map(|a| format!("{a:.5}"))
                .unwrap_or_else(|| "-".into()),
            rec.samples_per_s
        );
        self.log_phases();
        if let Some(a) = rec.val_auc {
            if self.state.best_val_auc.is_none_or(|b| a > b) {
                self.state.best_val_auc = Some(a);
                self.state.best_epoch = Some(epoch);
                self.state.epochs_since_best = 0;
                if self.cfg.patience.is_some() {
                    self.best_weights = Some(self.snapshot()?);
                }
            } else {
                self.state.epochs_since_best += 1;
            }
        }
        self.state.epochs.push(rec);
        self.state.epoch += 1;
        self.state.step_in_epoch = 0;
        Ok(self.state.epoch < self.cfg.epochs
            && self
                .cfg
                .patience
                .is_some_and(|p| self.state.epochs_since_best >= p))
    }

    /// Logs (debug) where the training steps' time went since the last call.
    fn log_phases(&mut self) {
        let [b, f, bw, u] = std::mem::take(&mut self.phase_seconds);
        tracing::debug!(
            "epoch {}, up to step {}: batching {b:.2}s, forward {f:.2}s, backward {bw:.2}s, Adam {u:.2}s",
            self.state.epoch + 1,
            self.state.step_in_epoch
        );
    }

    fn stop(&mut self, reason: StopReason, checkpoint: Option<&Path>) -> Result<StopReason> {
        if self.phase_seconds.iter().any(|&s| s > 0.0) {
            self.log_phases();
        }
        if reason != StopReason::MaxSteps {
            if let Some(best) = &self.best_weights {
                // Early stopping keeps the best validation epoch's weights.
                for (name, var) in self.varmap.data().lock().map_err(poisoned)?.iter() {
                    if let Some(t) = best.get(name) {
                        var.set(t)?;
                    }
                }
            }
        }
        self.state.stopped = Some(reason);
        if let Some(dir) = checkpoint {
            self.save_checkpoint(dir)?;
        }
        tracing::info!(
            "training stopped ({reason:?}) after {} steps, {} samples",
            self.state.global_step,
            self.state.samples_seen
        );
        Ok(reason)
    }

    fn snapshot(&self) -> Result<HashMap<String, Tensor>> {
        let data = self.varmap.data().lock().map_err(poisoned)?;
        let mut out = HashMap::with_capacity(data.len());
        for (k, v) in data.iter() {
            out.insert(k.clone(), v.as_tensor().copy()?);
        }
        Ok(out)
    }

    /// The checkpoint's `trainer.json` content.
    pub fn meta(&self) -> CheckpointMeta {
        CheckpointMeta {
            format_version: CHECKPOINT_VERSION,
            mtrec_version: env!("CARGO_PKG_VERSION").to_owned(),
            config: self.cfg.clone(),
            run: self.run.clone(),
            state: self.state.clone(),
            params: self.opt.n_params(),
        }
    }

    /// Writes a checkpoint folder atomically: weights, Adam's state, the best weights (early
    /// stopping), `trainer.json`. The folder is staged beside `dir` and renamed into place.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        let staged = StagedDir::new(dir, true)?;
        let p = staged.path();
        let model_path = p.join(files::MODEL);
        self.varmap
            .save(&model_path)
            .map_err(|e| TrainError::checkpoint(&model_path, candle_message(&e)))?;
        self.opt.save(&p.join(files::OPTIMIZER))?;
        if let Some(best) = &self.best_weights {
            let bp = p.join(files::BEST);
            candle_core::safetensors::save(best, &bp)
                .map_err(|e| TrainError::checkpoint(&bp, candle_message(&e)))?;
        }
        let tp = p.join(files::TRAINER);
        let json = serde_json::to_vec_pretty(&self.meta())
            .map_err(|e| TrainError::checkpoint(&tp, e.to_string()))?;
        std::fs::write(&tp, json).map_err(|e| TrainError::io(&tp, e))?;
        staged.commit()?;
        tracing::debug!(
            "checkpoint at global step {} written to {}",
            self.state.global_step,
            dir.display()
        );
        Ok(())
    }

    /// Restores a checkpoint written by [`Trainer::save_checkpoint`] for the same run: the
    /// settings (but `max_steps` and `checkpoint_every`), model, dataset and rewards must match.
    pub fn restore(&mut self, dir: &Path) -> Result<()> {
        let meta = CheckpointMeta::read(dir)?;
        let diff = [
            differences(&meta.config.identity(), &self.cfg.identity()),
            differences(&meta.run, &self.run)
                .into_iter()
                .filter(|d| !d.starts_with("data:") && !d.starts_with("rewards.path"))
                .collect(),
        ]
        .concat();
        if !diff.is_empty() {
            return Err(TrainError::checkpoint(
                dir,
                format!("belongs to another run; it differs in: {}", diff.join("; ")),
            ));
        }
        let mut vm = self.varmap.clone();
        let mp = dir.join(files::MODEL);
        vm.load(&mp)
            .map_err(|e| TrainError::checkpoint(&mp, candle_message(&e)))?;
        self.opt.load(&dir.join(files::OPTIMIZER))?;
        let bp = dir.join(files::BEST);
        self.best_weights = if bp.is_file() {
            Some(
                candle_core::safetensors::load(&bp, &self.device)
                    .map_err(|e| TrainError::checkpoint(&bp, candle_message(&e)))?,
            )
        } else {
            None
        };
        self.state = meta.state;
        tracing::info!(
            "resumed from {} at epoch {}, step {} of the epoch (global step {})",
            dir.display(),
            self.state.epoch + 1,
            self.state.step_in_epoch,
            self.state.global_step
        );
        Ok(())
    }
}

fn poisoned<T>(_: T) -> TrainError {
    TrainError::Config("the VarMap's lock is poisoned".into())
}

/// Loads the weights of a checkpoint folder into a freshly built model's `VarMap`.
pub fn load_weights(varmap: &VarMap, dir: &Path) -> Result<()> {
    let mp = dir.join(files::MODEL);
    let mut vm = varmap.clone();
    vm.load(&mp)
        .map_err(|e| TrainError::checkpoint(&mp, candle_message(&e)))
}
