//! NCIS, ΔNCIS and the effective sample size, exactly as `specs/method.md` §5.3.

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::input::{log_sigmoid, same_len, Sum};

/// One NCIS user: the model's logits along her logged trajectory.
///
/// `pos_logits[t]` is the logit of her logged positive at each positive step `t ∈ T_u` (the steps
/// `2..=n_u` that have a history, exactly those that give DIN/DIEN samples); `neg_logits`, when
/// present, holds the logit of the same step's negative, one per positive step (used only with
/// [`NcisConfig::with_negatives`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserTrajectory {
    /// Logits `F_M(pos_t | h_t)` of the positive steps, in any order.
    pub pos_logits: Vec<f64>,
    /// Logits of the steps' negatives, aligned with `pos_logits`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neg_logits: Option<Vec<f64>>,
}

impl UserTrajectory {
    /// A trajectory from the logits of its positive steps (`f32` or `f64`).
    pub fn new<S: Into<f64>>(pos_logits: impl IntoIterator<Item = S>) -> Self {
        Self {
            pos_logits: pos_logits.into_iter().map(Into::into).collect(),
            neg_logits: None,
        }
    }

    /// Adds the logits of the steps' negatives (one per positive step).
    pub fn with_negatives<S: Into<f64>>(mut self, neg_logits: impl IntoIterator<Item = S>) -> Self {
        self.neg_logits = Some(neg_logits.into_iter().map(Into::into).collect());
        self
    }

    /// Number of positive steps `|T_u|`.
    pub fn len(&self) -> usize {
        self.pos_logits.len()
    }

    /// Whether the trajectory has no positive step.
    pub fn is_empty(&self) -> bool {
        self.pos_logits.is_empty()
    }
}

/// Capping of the importance weights: `ρ̃_u = min(ρ_u, c)`, applied in log space as
/// `ln ρ̃_u = min(ln ρ_u, ln c)`. Since `ρ_u ≤ 1`, an absolute cap `c ≥ 1` changes nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogCap {
    /// No cap (`c = ∞`): the spec's default \[DECISION\].
    #[default]
    None,
    /// `ln c` given directly.
    Absolute(f64),
    /// A relative cap `ln c = max_u ln ρ_u − K`, `K ≥ 0` finite: every user with
    /// `ln ρ_u > max − K` is brought down to `max − K`, so no user weighs more than `e^K` times a
    /// user at `max − K`. `K = 0` changes nothing; a `K` beyond the spread of `ln ρ` gives every
    /// user the same weight (NCIS = mean `L_u`).
    BelowMax(f64),
}

/// What `L_u` counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrajectoryLength {
    /// `L_u = |T_u|`, the number of positive steps \[DECISION, default].
    #[default]
    PositiveSteps,
    /// `L_u = n_u = |T_u| + 1`, counting the first review too: shifts every NCIS by exactly 1,
    /// which cancels in ΔNCIS.
    Reviews,
}

/// NCIS settings (`specs/method.md` §5.3). The default is the spec's: positives only, no cap,
/// `L_u` = positive steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NcisConfig {
    /// `ln ρ_u = Σ_t [ln σ(z_pos,t) + ln(1 − σ(z_neg,t))]` instead of `Σ_t ln σ(z_pos,t)`
    /// (`--ncis-with-negatives`).
    pub with_negatives: bool,
    /// The cap (`--ncis-log-cap`).
    pub log_cap: LogCap,
    /// What `L_u` counts.
    pub length: TrajectoryLength,
}

/// An NCIS estimate with its diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ncis {
    /// `J̃ = Σ_u w_u L_u / Σ_u w_u`.
    pub value: f64,
    /// Effective sample size `(Σ w)² / Σ w²`, in `[1, users]`: how many users the estimate
    /// effectively rests on.
    pub ess: f64,
    /// Number of users `n`.
    pub users: usize,
    /// Users whose weight the cap lowered.
    pub capped_users: usize,
    /// The cap `ln c` in effect, `None` without one.
    pub log_cap: Option<f64>,
    /// `max_u ln ρ_u` before capping.
    pub max_log_rho: f64,
    /// Unweighted mean of `L_u` (what NCIS would be with equal weights).
    pub mean_length: f64,
    /// Smallest `L_u` (an untrained model, `p ≈ 0.5`, gives NCIS ≈ this).
    pub min_length: f64,
}

/// `ΔNCIS = NCIS(M_trained) − NCIS(M_init)`, with both estimates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DeltaNcis {
    /// `trained.value − init.value`.
    pub value: f64,
    /// NCIS of the trained model.
    pub trained: Ncis,
    /// NCIS of the same architecture at initialisation (same seed, zero training steps).
    pub init: Ncis,
}

/// `ln ρ_u` of every trajectory: `Σ_t ln σ(z_t) = −Σ_t softplus(−z_t)` in f64 (compensated sum),
/// plus `Σ_t ln(1 − σ(z_neg,t)) = −Σ_t softplus(z_neg,t)` with negatives. Never underflows: a
/// 3,000-step trajectory at `p = 0.5` has `ln ρ = −2079.4`, where `ρ = 0.5^3000` is 0 in f64.
///
/// `±inf` logits are accepted (`−inf` on a positive gives `ln ρ = −inf`, weight 0).
///
/// # Errors
/// [`EvalError::Empty`] (no trajectory), [`EvalError::EmptyTrajectory`], [`EvalError::NaNLogit`],
/// and with negatives [`EvalError::NegativesMismatch`].
pub fn log_rhos(trajectories: &[UserTrajectory], with_negatives: bool) -> Result<Vec<f64>> {
    if trajectories.is_empty() {
        return Err(EvalError::Empty { what: "NCIS" });
    }
    trajectories
        .iter()
        .enumerate()
        .map(|(user, traj)| log_rho(user, traj, with_negatives))
        .collect()
}

fn log_rho(user: usize, traj: &UserTrajectory, with_negatives: bool) -> Result<f64> {
    if traj.is_empty() {
        return Err(EvalError::EmptyTrajectory { user });
    }
    let mut sum = Sum::default();
    for (step, &z) in traj.pos_logits.iter().enumerate() {
        if z.is_nan() {
            return Err(EvalError::NaNLogit {
                user,
                step,
                kind: "positive",
            });
        }
        sum.add(log_sigmoid(z));
    }
    if with_negatives {
        let neg = traj.neg_logits.as_deref().unwrap_or(&[]);
        if neg.len() != traj.len() {
            return Err(EvalError::NegativesMismatch {
                user,
                expected: traj.len(),
                found: neg.len(),
            });
        }
        for (step, &z) in neg.iter().enumerate() {
            if z.is_nan() {
                return Err(EvalError::NaNLogit {
                    user,
                    step,
                    kind: "negative",
                });
            }
            // ln(1 − σ(z)) = ln σ(−z)
            sum.add(log_sigmoid(-z));
        }
    }
    Ok(sum.value())
}

/// NCIS of a model over its users' trajectories (`specs/method.md` §5.3, steps 3–7):
/// `ln ρ_u` by [`log_rhos`], `L_u` by [`NcisConfig::length`], then [`ncis_from_log_weights`].
///
/// ```
/// # use mtrec_eval::{ncis, NcisConfig, UserTrajectory};
/// // p = 0.5 everywhere: ρ_u = 2^{-L_u}, so the shortest trajectory dominates.
/// let users = vec![UserTrajectory::new([0.0; 3]), UserTrajectory::new([0.0; 12])];
/// let r = ncis(&users, &NcisConfig::default()).unwrap();
/// let (w3, w12) = (0.5f64.powi(3), 0.5f64.powi(12));
/// assert!((r.value - (3.0 * w3 + 12.0 * w12) / (w3 + w12)).abs() < 1e-12);
/// assert!(r.value < 3.02); // ≈ min L_u = 3
/// ```
///
/// # Errors
/// Those of [`log_rhos`] and [`ncis_from_log_weights`].
pub fn ncis(trajectories: &[UserTrajectory], config: &NcisConfig) -> Result<Ncis> {
    let log_rho = log_rhos(trajectories, config.with_negatives)?;
    let extra = match config.length {
        TrajectoryLength::PositiveSteps => 0.0,
        TrajectoryLength::Reviews => 1.0,
    };
    let lengths: Vec<f64> = trajectories
        .iter()
        .map(|t| t.len() as f64 + extra)
        .collect();
    ncis_from_log_weights(&log_rho, &lengths, config.log_cap)
}

/// The normalised capped estimator on given log weights: `ln ρ̃_u = min(ln ρ_u, ln c)`,
/// `m = max_u ln ρ̃_u`, `w_u = exp(ln ρ̃_u − m)` (the max trick: the largest weight is 1, so
/// nothing underflows that matters), `NCIS = Σ w_u L_u / Σ w_u`, `ESS = (Σ w)² / Σ w²`.
///
/// Exposed for other weightings (a logging propensity, a custom `L_u`).
///
/// # Errors
/// [`EvalError::Empty`], [`EvalError::LengthMismatch`], [`EvalError::NaN`] (a NaN log weight),
/// [`EvalError::InvalidParameter`] (a `+inf` log weight, a NaN or negative length, a NaN cap or a
/// negative or non-finite `K`), [`EvalError::ZeroWeights`] when every capped weight is 0.
pub fn ncis_from_log_weights(log_rho: &[f64], lengths: &[f64], cap: LogCap) -> Result<Ncis> {
    const WHAT: &str = "NCIS";
    if log_rho.is_empty() {
        return Err(EvalError::Empty { what: WHAT });
    }
    same_len("NCIS: lengths", log_rho.len(), lengths.len())?;
    let mut max_log_rho = f64::NEG_INFINITY;
    for (index, &lr) in log_rho.iter().enumerate() {
        if lr.is_nan() {
            return Err(EvalError::NaN {
                what: "NCIS: log weights",
                index,
            });
        }
        if lr == f64::INFINITY {
            return Err(EvalError::InvalidParameter {
                name: "log weight",
                value: lr,
                reason: "an infinite importance weight",
            });
        }
        max_log_rho = max_log_rho.max(lr);
    }
    for &l in lengths {
        if l.is_nan() || l < 0.0 || l.is_infinite() {
            return Err(EvalError::InvalidParameter {
                name: "trajectory length",
                value: l,
                reason: "L_u must be finite and >= 0",
            });
        }
    }
    let log_cap = match cap {
        LogCap::None => None,
        LogCap::Absolute(c) => {
            if c.is_nan() {
                return Err(EvalError::InvalidParameter {
                    name: "log cap",
                    value: c,
                    reason: "ln c must be a number",
                });
            }
            Some(c)
        }
        LogCap::BelowMax(k) => {
            if k.is_nan() || k < 0.0 || k.is_infinite() {
                return Err(EvalError::InvalidParameter {
                    name: "log cap offset K",
                    value: k,
                    reason: "ln c = max ln rho - K needs a finite K >= 0",
                });
            }
            Some(max_log_rho - k)
        }
    };
    let capped: Vec<f64> = match log_cap {
        Some(c) => log_rho.iter().map(|&lr| lr.min(c)).collect(),
        None => log_rho.to_vec(),
    };
    let capped_users = match log_cap {
        Some(c) => log_rho.iter().filter(|&&lr| lr > c).count(),
        None => 0,
    };
    let m = capped.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return Err(EvalError::ZeroWeights);
    }
    let (mut sw, mut swl, mut sw2) = (Sum::default(), Sum::default(), Sum::default());
    for (&lr, &l) in capped.iter().zip(lengths) {
        let w = (lr - m).exp();
        sw.add(w);
        swl.add(w * l);
        sw2.add(w * w);
    }
    let (sw, swl, sw2) = (sw.value(), swl.value(), sw2.value());
    let mut sum_l = Sum::default();
    lengths.iter().for_each(|&l| sum_l.add(l));
    Ok(Ncis {
        value: swl / sw,
        // Σw ≥ 1 and Σw² ≥ 1 (the largest weight is 1); clamp the last ulp into [1, n].
        ess: (sw * sw / sw2).clamp(1.0, log_rho.len() as f64),
        users: log_rho.len(),
        capped_users,
        log_cap,
        max_log_rho,
        mean_length: sum_l.value() / lengths.len() as f64,
        min_length: lengths.iter().copied().fold(f64::INFINITY, f64::min),
    })
}

/// `ΔNCIS = NCIS(M_trained) − NCIS(M_init)` over the same users: `trained[u]` and `init[u]` are
/// user `u`'s trajectory scored by the trained model and by the same architecture at
/// initialisation (same seed, zero training steps), `specs/method.md` §5.3 step 8.
///
/// A model against itself gives exactly 0.
///
/// # Errors
/// [`EvalError::LengthMismatch`] (different numbers of users), [`EvalError::TrajectoryMismatch`]
/// (a user with different numbers of steps), and those of [`ncis`].
pub fn delta_ncis(
    trained: &[UserTrajectory],
    init: &[UserTrajectory],
    config: &NcisConfig,
) -> Result<DeltaNcis> {
    same_len("ΔNCIS: users", trained.len(), init.len())?;
    for (user, (a, b)) in trained.iter().zip(init).enumerate() {
        if a.len() != b.len() {
            return Err(EvalError::TrajectoryMismatch {
                user,
                trained: a.len(),
                init: b.len(),
            });
        }
    }
    let trained = ncis(trained, config)?;
    let init = ncis(init, config)?;
    Ok(DeltaNcis {
        value: trained.value - init.value,
        trained,
        init,
    })
}
