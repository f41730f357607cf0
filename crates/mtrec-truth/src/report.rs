//! Run folders: score a train run or a reward run from its checkpoint, and write
//! `<run>/truth_metrics.{json,md}`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use candle_core::Device;
use mtrec_data::io::write_atomic;
use mtrec_data::PreparedDataset;
use mtrec_reward::{build_q_model, FitState, RewardKind, RewardRunConfig};
use mtrec_train::trainer::load_weights;
use mtrec_train::{build_model, dataset_fingerprint, BuildBackbone, CheckpointMeta, RunConfig};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TruthError};
use crate::ranking::{ranking_metrics, RankingConfig, RankingMetrics};
use crate::recovery::{reward_recovery_with, RecoveryMetrics};
use crate::truth::GroundTruth;

/// File names written into a run folder.
pub mod files {
    pub const JSON: &str = "truth_metrics.json";
    pub const MD: &str = "truth_metrics.md";
}

/// Version of `truth_metrics.json`'s layout.
pub const REPORT_SCHEMA: u32 = 1;

/// `truth_metrics.json`: what was scored against which world.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TruthReport {
    pub schema: u32,
    pub mtrec_version: String,
    /// The world folder, its preset and seed.
    pub world: PathBuf,
    pub preset: String,
    pub world_seed: u64,
    /// Whether counterfactual rewards used exact taste weights (see `GroundTruth::load`).
    pub exact_tastes: bool,
    /// The run folder and its backbone.
    pub run: PathBuf,
    pub model: String,
    /// `train` (a recommender: ranking) or `reward` (a Q-network: recovery).
    pub run_kind: String,
    pub ranking: Option<RankingMetrics>,
    pub recovery: Option<RecoveryMetrics>,
}

impl TruthReport {
    /// A report of `run` scored against `truth`.
    pub fn new(
        truth: &GroundTruth,
        run: &Path,
        model: &str,
        ranking: Option<RankingMetrics>,
        recovery: Option<RecoveryMetrics>,
    ) -> Self {
        TruthReport {
            schema: REPORT_SCHEMA,
            mtrec_version: env!("CARGO_PKG_VERSION").to_owned(),
            world: truth.dir().to_path_buf(),
            preset: truth.config().preset.clone(),
            world_seed: truth.config().seed,
            exact_tastes: truth.exact_tastes(),
            run: run.to_path_buf(),
            model: model.to_owned(),
            run_kind: if recovery.is_some() {
                "reward"
            } else {
                "train"
            }
            .to_owned(),
            ranking,
            recovery,
        }
    }

    /// The report for people (Markdown tables).
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# Ground-truth metrics: {} ({} run)\n\nworld `{}` (preset {}, seed {}){}\n",
            self.model,
            self.run_kind,
            self.world.display(),
            self.preset,
            self.world_seed,
            if self.exact_tastes {
                ""
            } else {
                " — taste weights rounded to 1e-4"
            }
        );
        if let Some(r) = &self.ranking {
            let _ = writeln!(
                s,
                "## Aligned ranking\n\n{} steps of {} test users, {:.1} candidates each (logged positive, logged negative, unseen items), top-{}, score `{}`.\n",
                r.steps, r.users, r.mean_candidates, r.k, r.score
            );
            let _ = writeln!(s, "| metric | value |\n|---|---|");
            for (name, v) in [
                (format!("mean expected reward @{}", r.k), r.mean_reward_at_k),
                ("mean expected reward @1".into(), r.mean_reward_at_1),
                (format!("NDCG@{} (shifted gains)", r.k), r.ndcg_at_k),
                (format!("oracle @{}", r.k), r.oracle_mean_reward_at_k),
                ("oracle @1".into(), r.oracle_mean_reward_at_1),
                ("random (mean over candidates)".into(), r.random_mean_reward),
                (format!("gain captured @{}", r.k), r.gain_captured_at_k),
                (
                    "logged positive's expected reward".into(),
                    r.logged_positive_reward,
                ),
                (
                    format!("logged positive in top-{}", r.k),
                    r.positive_hit_at_k,
                ),
            ] {
                let _ = writeln!(s, "| {name} | {v:.4} |");
            }
            s.push('\n');
        }
        if let Some(r) = &self.recovery {
            let _ = writeln!(
                s,
                "## Reward recovery ({})\n\n{} held-out engagements of {} test users.\n",
                r.kind, r.engagements, r.users
            );
            let _ = writeln!(s, "| metric | value |\n|---|---|");
            for (name, v) in [
                ("Spearman(r*, true reward)", r.spearman_true),
                ("Spearman(r*, expected reward)", r.spearman_expected),
                ("Pearson(r*, true reward)", r.pearson_true),
                ("AUC satisfied vs disappointed", r.satisfied_auc),
                ("mean r* (satisfied)", r.mean_r_satisfied),
                ("mean r* (disappointed)", r.mean_r_disappointed),
                ("satisfied share", r.satisfied_share),
            ] {
                let _ = writeln!(s, "| {name} | {v:.4} |");
            }
            if let Some(c) = &r.calibration {
                let _ = writeln!(
                    s,
                    "\nQuantile calibration (affine map {:.4} + {:.4}·r fitted on {} training engagements): mean |coverage − τ| = {:.4}\n",
                    c.affine.0, c.affine.1, c.fit_engagements, c.mean_abs_error
                );
                let _ = writeln!(s, "| τ | coverage |\n|---|---|");
                for (t, v) in c.taus.iter().zip(&c.coverage) {
                    let _ = writeln!(s, "| {t:.3} | {v:.4} |");
                }
            }
        }
        s
    }
}

fn run_err(run: &Path, message: String) -> TruthError {
    TruthError::file(run, message)
}

/// Scores the recommender of a train run (`mtrec train`: `config.yaml` + `checkpoint/`) with
/// [`ranking_metrics`]. `ds` must be the run's dataset and this world's log.
pub fn evaluate_train_run(
    run: &Path,
    ds: &PreparedDataset,
    build: &BuildBackbone,
    truth: &GroundTruth,
    cfg: &RankingConfig,
    device: &Device,
) -> Result<RankingMetrics> {
    let rc = RunConfig::read(run)?;
    let ckpt = run.join(mtrec_train::run::files::CHECKPOINT);
    let meta = CheckpointMeta::read(&ckpt)?;
    let fp = dataset_fingerprint(ds);
    if fp != meta.run.dataset_fingerprint {
        return Err(run_err(
            run,
            "the dataset given is not the one this run was trained on; pass the run's --data"
                .into(),
        ));
    }
    let (vm, model) = build_model(&rc.model, build, ds, meta.config.seed, device)?;
    load_weights(&vm, &ckpt)?;
    ranking_metrics(truth, ds, &model, meta.config.eval_batch_size, device, cfg)
}

/// Scores the Q-network of a reward run (`mtrec fit-reward`: `reward.yaml` + `checkpoint/`) with
/// [`reward_recovery`]. `ds` must be the run's dataset and this world's log.
pub fn evaluate_reward_run(
    run: &Path,
    ds: &PreparedDataset,
    build: &BuildBackbone,
    truth: &GroundTruth,
    device: &Device,
) -> Result<RecoveryMetrics> {
    use mtrec_reward::fit::files;
    let rc = RewardRunConfig::read(run)?;
    let ckpt = run.join(files::CHECKPOINT);
    let state_path = ckpt.join(files::STATE);
    let bytes = std::fs::read(&state_path).map_err(|e| {
        run_err(
            run,
            format!(
                "cannot read {}: {e} (a finished `mtrec fit-reward` run?)",
                state_path.display()
            ),
        )
    })?;
    let state: FitState = serde_json::from_slice(&bytes)
        .map_err(|e| TruthError::file(&state_path, format!("not a fit state: {e}")))?;
    if state.dataset != dataset_fingerprint(ds) {
        return Err(run_err(
            run,
            "the dataset given is not the one this reward model was fitted on; pass the run's --data"
                .into(),
        ));
    }
    let (vm, model) = build_q_model(&rc.model, build, ds, &rc.reward, device)?;
    load_weights(&vm, &ckpt)?;
    // The fit's own rewards of the training samples, when its rewards file is there and readable
    // (else they are scored again).
    let patch = match rc.reward.kind {
        RewardKind::QrIql => {
            mtrec_reward::read_patch(&run.join(files::REWARDS), rc.reward.quantiles).ok()
        }
        RewardKind::IqLearn => None,
    };
    reward_recovery_with(truth, ds, &model, &rc.reward, device, patch.as_ref())
}

/// Writes `<run>/truth_metrics.json` and `<run>/truth_metrics.md`, each atomically.
pub fn write_truth_metrics(run: &Path, report: &TruthReport) -> Result<()> {
    let p = run.join(files::JSON);
    let json =
        serde_json::to_vec_pretty(report).map_err(|e| TruthError::file(&p, e.to_string()))?;
    write_atomic(&p, &json)?;
    write_atomic(&run.join(files::MD), report.markdown().as_bytes())?;
    Ok(())
}
