//! Reward recovery: does a learned mental reward `r*(s,P)` rank and separate the engagements as
//! the users' true rewards do?

use candle_core::Device;
use mtrec_data::PreparedDataset;
use mtrec_mdp::{samples, Split, State};
use mtrec_nn::{HeadKind, Model};
use mtrec_reward::inspect::spearman;
use mtrec_reward::{patch_states, Patch, RewardConfig};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TruthError};
use crate::truth::GroundTruth;

/// Calibration of a distributional reward's quantiles against the true rewards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantileCalibration {
    /// `τ_i = (2i − 1) / 2N`.
    pub taus: Vec<f64>,
    /// Share of held-out true rewards at or below the mapped quantile `i`.
    pub coverage: Vec<f64>,
    /// Mean `|coverage_i − τ_i|` (0 = calibrated).
    pub mean_abs_error: f64,
    /// The affine map `a + b·r` to the true reward's scale, least squares on the training users.
    pub affine: (f64, f64),
    /// Engagements the map was fitted on.
    pub fit_engagements: usize,
}

/// Reward-recovery metrics over held-out engagements (see the crate docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveryMetrics {
    /// Held-out engagements scored (test users' positive steps `t ≥ 1`).
    pub engagements: usize,
    pub users: usize,
    /// `qr-iql` or `iq-learn`.
    pub kind: String,
    /// Spearman of `r*(s,P)` with the felt reward and with its expectation (the learnable part).
    pub spearman_true: f64,
    pub spearman_expected: f64,
    /// Pearson of `r*(s,P)` with the felt reward (scale-free but sensitive to shape).
    pub pearson_true: f64,
    /// AUC of `r*(s,P)` at telling satisfied from disappointed engagements.
    pub satisfied_auc: f64,
    /// Mean `r*(s,P)` of satisfied and of disappointed engagements.
    pub mean_r_satisfied: f64,
    pub mean_r_disappointed: f64,
    /// Share of the engagements that satisfied, and their mean true reward (context).
    pub satisfied_share: f64,
    pub mean_true_reward: f64,
    /// QR-IQL only: the quantiles' calibration.
    pub calibration: Option<QuantileCalibration>,
}

fn mean(x: &[f64]) -> f64 {
    if x.is_empty() {
        f64::NAN
    } else {
        x.iter().sum::<f64>() / x.len() as f64
    }
}

/// Pearson's correlation (NaN when undefined).
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let (mx, my) = (mean(x), mean(y));
    let cov: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
    cov / (vx * vy).sqrt()
}

/// Least squares `y ≈ a + b·x`; `b = 0` when `x` is constant.
pub fn affine_fit(x: &[f64], y: &[f64]) -> (f64, f64) {
    let (mx, my) = (mean(x), mean(y));
    let cov: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let b = if vx > 0.0 { cov / vx } else { 0.0 };
    (my - b * mx, b)
}

/// Quantile calibration: fits `a + b·r` from the mean of the quantile rewards to the true reward on
/// the fit engagements (`fit_mean`, `fit_true`), maps each held-out quantile reward
/// (`quantiles[engagement][i]`) through it, and counts how often the true reward lies at or below
/// quantile `i`. The heads are taken in their own order, never sorted (method §10): a head that
/// learned another level than its `τ_i` shows up as a coverage error.
pub fn quantile_calibration(
    fit_mean: &[f64],
    fit_true: &[f64],
    quantiles: &[Vec<f64>],
    truth: &[f64],
) -> QuantileCalibration {
    let (a, b) = affine_fit(fit_mean, fit_true);
    let n = quantiles.first().map_or(0, Vec::len);
    let taus = mtrec_reward::quantile_taus(n);
    let m = truth.len().max(1) as f64;
    let coverage: Vec<f64> = (0..n)
        .map(|i| {
            quantiles
                .iter()
                .zip(truth)
                .filter(|(q, &y)| y <= a + b * q[i])
                .count() as f64
                / m
        })
        .collect();
    let mean_abs_error = coverage
        .iter()
        .zip(&taus)
        .map(|(c, t)| (c - t).abs())
        .sum::<f64>()
        / n.max(1) as f64;
    QuantileCalibration {
        taus,
        coverage,
        mean_abs_error,
        affine: (a, b),
        fit_engagements: fit_mean.len(),
    }
}

/// The positive samples (engagements at steps `t ≥ 1`) of a split.
fn positives(ds: &PreparedDataset, split: Split) -> Vec<State> {
    samples(ds, split)
        .into_iter()
        .filter(|s| s.positive)
        .collect()
}

/// Reward recovery of a Q-network (Q or quantile head) on the test users of `ds`.
pub fn reward_recovery(
    truth: &GroundTruth,
    ds: &PreparedDataset,
    model: &Model,
    reward_cfg: &RewardConfig,
    device: &Device,
) -> Result<RecoveryMetrics> {
    reward_recovery_with(truth, ds, model, reward_cfg, device, None)
}

/// [`reward_recovery`], given the model's rewards of the training samples when they are at hand
/// (the fit's rewards file, `mtrec_reward::read_patch`): the quantile calibration reads the
/// training engagements' quantiles from it instead of scoring them again. A patch that misses a
/// training engagement is not used.
pub fn reward_recovery_with(
    truth: &GroundTruth,
    ds: &PreparedDataset,
    model: &Model,
    reward_cfg: &RewardConfig,
    device: &Device,
    train_patch: Option<&Patch>,
) -> Result<RecoveryMetrics> {
    let quantile = match model.head().kind() {
        HeadKind::Q => false,
        HeadKind::Quantile(_) => true,
        HeadKind::Ctr => {
            return Err(TruthError::Invalid(
                "reward recovery needs a Q-network (a reward run); this model has a CTR head"
                    .into(),
            ))
        }
    };
    truth.check_dataset(ds)?;
    let test = positives(ds, Split::Test);
    if test.is_empty() {
        return Err(TruthError::Invalid(
            "no held-out engagement: the dataset has no test user with two steps".into(),
        ));
    }
    let p = patch_states(model, ds, &test, reward_cfg, device, false)?;
    let truths: Vec<_> = test
        .iter()
        .map(|s| {
            truth.engagement(s.user, s.step).ok_or_else(|| {
                TruthError::Mismatch(format!("no truth for user {} step {}", s.user, s.step))
            })
        })
        .collect::<Result<_>>()?;
    let r: Vec<f64> = p.r_pos.iter().map(|&x| x as f64).collect();
    let y: Vec<f64> = truths.iter().map(|e| e.true_reward as f64).collect();
    let ey: Vec<f64> = truths.iter().map(|e| e.expected_reward as f64).collect();
    let sat: Vec<bool> = truths.iter().map(|e| e.satisfied).collect();
    let pick = |want: bool| -> Vec<f64> {
        r.iter()
            .zip(&sat)
            .filter(|(_, &s)| s == want)
            .map(|(&x, _)| x)
            .collect()
    };
    let (r_sat, r_dis) = (pick(true), pick(false));
    let satisfied_auc = if r_sat.is_empty() || r_dis.is_empty() {
        f64::NAN
    } else {
        mtrec_eval::auc(&r, &sat).unwrap_or(f64::NAN)
    };
    let calibration = if quantile {
        let fit = positives(ds, Split::Train);
        let known = train_patch.and_then(|p| {
            let by_state: std::collections::HashMap<State, &Vec<f32>> =
                p.states.iter().copied().zip(&p.q_pos).collect();
            fit.iter()
                .map(|s| {
                    by_state
                        .get(s)
                        .filter(|q| q.len() == reward_cfg.quantiles)
                        .map(|q| (*q).clone())
                })
                .collect::<Option<Vec<Vec<f32>>>>()
        });
        let fit_q = match known {
            Some(q) => q,
            None => patch_states(model, ds, &fit, reward_cfg, device, false)?.q_pos,
        };
        let mut fit_mean = Vec::with_capacity(fit.len());
        let mut fit_true = Vec::with_capacity(fit.len());
        for (s, q) in fit.iter().zip(&fit_q) {
            if let Some(e) = truth.engagement(s.user, s.step) {
                fit_mean.push(q.iter().map(|&x| x as f64).sum::<f64>() / q.len().max(1) as f64);
                fit_true.push(e.true_reward as f64);
            }
        }
        let qs: Vec<Vec<f64>> = p
            .q_pos
            .iter()
            .map(|q| q.iter().map(|&x| x as f64).collect())
            .collect();
        Some(quantile_calibration(&fit_mean, &fit_true, &qs, &y))
    } else {
        None
    };
    let mut users: Vec<u32> = test.iter().map(|s| s.user).collect();
    users.dedup();
    Ok(RecoveryMetrics {
        engagements: test.len(),
        users: users.len(),
        kind: reward_cfg.kind.as_str().to_owned(),
        spearman_true: spearman(&r, &y),
        spearman_expected: spearman(&r, &ey),
        pearson_true: pearson(&r, &y),
        satisfied_auc,
        mean_r_satisfied: mean(&r_sat),
        mean_r_disappointed: mean(&r_dis),
        satisfied_share: r_sat.len() as f64 / r.len() as f64,
        mean_true_reward: mean(&y),
        calibration,
    })
}
