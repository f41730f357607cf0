//! # mtrec-eval
//!
//! The evaluation metrics of MTRec (paper §5.1, `specs/method.md` §5), in pure Rust and f64
//! throughout. Inputs may be `f32` or `f64`; labels `bool`, integers 0/1 or floats 0.0/1.0
//! ([`Label`]). Nothing panics on user input: every function checks its arguments (lengths, NaN,
//! empty inputs, parameter domains) and returns an [`EvalError`] that says what was wrong.
//!
//! ## AUC — [`auc`], [`auc_pos_neg`]
//! Over all evaluated samples with `P` positives and `M` negatives,
//! `AUC = [Σ_{k ∈ pos} rank_k − P(P+1)/2] / (P·M)` with 1-based ascending **midranks** for ties:
//! the probability that a random positive outscores a random negative, a tie counting 1/2
//! (Mann–Whitney U). One sort, O(n log n); `2U` is counted exactly in integers. Scores may be
//! logits or probabilities (same AUC; logits avoid saturation ties). Without a positive or without
//! a negative AUC is undefined: [`EvalError::SingleClass`] (the spec's "NaN, skip").
//! DIN's and DIEN's `calc_auc` break ties by sort order; we deliberately do not copy them (§5.1).
//!
//! ## GAUC — [`gauc`], [`gauc_weighted`]
//! `GAUC = Σ_u w_u AUC_u / Σ_u w_u` over the users that have both classes; the others are skipped
//! and counted ([`Gauc::groups_skipped`]). The weight is the DIN paper's: `w_u` = the user's number
//! of evaluated samples, i.e. her impressions ([`GaucWeighting::Samples`], the default); DIN's
//! click weighting ([`GaucWeighting::Positives`]) and equal weights ([`GaucWeighting::Uniform`])
//! are offered. DIN's *code* computes `mean(logit_pos > logit_neg)` per user over one pair, ties
//! counting 0; with one pair per user ours equals it except that ties count 1/2 (§5.2).
//!
//! ## Log loss — [`logloss`], [`logloss_from_logits`]
//! `−(1/n) Σ [y ln p + (1 − y) ln(1 − p)]`, natural log. From probabilities, `p` is clipped to
//! `[ε, 1 − ε]`, `ε = 1e-15` ([`LOGLOSS_EPS`]; [`logloss_with_eps`] to change it). From logits it
//! needs no clipping: `softplus(−z)` for a positive, `softplus(z)` for a negative ([`softplus`]).
//!
//! ## NCIS, ΔNCIS and ESS — [`ncis`], [`delta_ncis`]
//! The paper's normalised capped importance sampling estimate of a model `M`,
//! `J̃(M) = Σ_u ρ̃_u(M) L_u / Σ_u ρ̃_u(M)`, `ρ_u(M) = Π_{t ∈ T_u} p_t(M)`, over the held-out users'
//! complete trajectories ([`UserTrajectory`]: the logits of each positive step `t ∈ T_u`, the steps
//! `2..n_u` that have a history). Exactly `specs/method.md` §5.3:
//! - `p_t = σ(logit_t)` of the logged positive: positives only \[DECISION\]. Option
//!   [`NcisConfig::with_negatives`]: `ln ρ_u = Σ_t [ln σ(z_pos,t) + ln(1 − σ(z_neg,t))]`.
//! - `L_u = |T_u|`, the number of positive steps \[DECISION\]; option
//!   [`TrajectoryLength::Reviews`] counts the first review too (`n_u`; +1 on every NCIS, cancels
//!   in ΔNCIS).
//! - Log space: `ln ρ_u = −Σ_t softplus(−z_t)` in f64 ([`log_rhos`]); products underflow
//!   (`0.5^150` is below the f32 minimum, and Books users with thousands of reviews underflow f64).
//! - Capping `ln ρ̃_u = min(ln ρ_u, ln c)`; default none (`c = ∞`) \[DECISION\], since `ρ_u ≤ 1`
//!   any `c ≥ 1` is a no-op; [`LogCap::Absolute`] or the relative [`LogCap::BelowMax`]
//!   (`ln c = max_u ln ρ_u − K`).
//! - Max trick: `m = max_u ln ρ̃_u`, `w_u = exp(ln ρ̃_u − m)`, `NCIS = Σ w_u L_u / Σ w_u`
//!   ([`ncis_from_log_weights`] for custom weights).
//! - `ΔNCIS = NCIS(M_trained) − NCIS(M_init)`, `M_init` = the same architecture with the same seed
//!   and zero training steps; [`delta_ncis`] checks that both lists hold the same users' trajectories.
//! - `ESS = (Σ w)² / Σ w²` ∈ `[1, n]`, reported with every NCIS: the estimate is typically dominated
//!   by a few short trajectories. An untrained model gives `p ≈ 0.5`, `ρ_u ≈ 2^{−L_u}`, hence
//!   `NCIS(M_init) ≈ min_u L_u` and an ESS near the number of shortest users.
//!
//! ## Uncertainty — [`bootstrap_ci`], [`mean_t_interval`]
//! [`bootstrap_ci`] is the percentile bootstrap of any statistic of `n` units (a closure over
//! resampled indices, e.g. users), deterministic from its seed (ChaCha8); [`bootstrap_ci_mean`]
//! for a mean. [`mean_t_interval`] gives `mean ± t_{0.975, n−1} s/√n` over a few seeds with the
//! exact Student t quantile ([`student_t_quantile`]); [`paired_t_interval`] the same for
//! seed-paired differences, which the spec recommends for comparing variants (§10).
//!
//! ## Decisions
//! From `specs/method.md` (marked \[DECISION\] there; change only deliberately, keep configurable):
//! - NCIS uses the positives' CTR only (`p_t = σ(logit_pos,t)`); negatives are an option.
//! - `L_u` counts positive steps `|T_u|`, not reviews `n_u`.
//! - No cap by default; a cap is given in log space, absolute or relative to the largest weight.
//! - NCIS users are the held-out test users with their complete trajectories, and `M_init` is the
//!   trained model's architecture and seed with zero training steps: choosing them is the
//!   caller's job; this crate computes on what it is given.
//!
//! Ours, in this crate:
//! - AUC and GAUC count a pos/neg tie as 1/2 (midranks), unlike DIN's and DIEN's code.
//! - A single-class input is an error for AUC, a skipped (and counted) group for GAUC.
//! - A trajectory with no positive step is an error (its `ρ_u = 1` would swamp every other user);
//!   users with a single review have no samples and must be left out.
//! - Log loss from probabilities clips at `ε = 1e-15`; from logits it is exact.
//! - The bootstrap interval is the percentile interval with linear interpolation (numpy's default
//!   quantile); the t-interval uses the exact t quantile, not a table.
//!
//! ## metrics.json — [`Metrics`]
//! A serde summary (auc, gauc, logloss, ncis, ncis_init, delta_ncis, ess, counts), filled by
//! [`Metrics::ctr`], [`Metrics::record_gauc`] and [`Metrics::record_delta_ncis`].
//!
//! ```
//! use mtrec_eval::{delta_ncis, Metrics, NcisConfig, UserTrajectory};
//!
//! // Test-set samples: user, logit, label.
//! let users = [1, 1, 1, 2, 2, 3, 3];
//! let logits = [2.1f32, -0.3, 0.4, 1.5, -1.0, 0.2, 0.9];
//! let labels = [1, 0, 1, 1, 0, 0, 1];
//! let mut m = Metrics::ctr(&users, &logits, &labels).unwrap();
//!
//! // NCIS users: the logits of each positive step, by the trained and the initial model.
//! let trained = vec![UserTrajectory::new([2.0, 1.5, 1.8, 2.2]), UserTrajectory::new([0.3, -0.2])];
//! let init = vec![UserTrajectory::new([0.0; 4]), UserTrajectory::new([0.0; 2])];
//! let cfg = NcisConfig::default();
//! let d = delta_ncis(&trained, &init, &cfg).unwrap();
//! m.record_delta_ncis(&d, &cfg);
//! assert!(m.delta_ncis.unwrap() > 0.0); // the trained model follows the long trajectory
//! ```

mod auc;
mod error;
mod input;
mod logloss;
mod metrics;
mod ncis;
mod stats;

pub use auc::{auc, auc_pos_neg, gauc, gauc_weighted, Gauc, GaucWeighting};
pub use error::{EvalError, Result};
pub use input::{log_sigmoid, softplus, Label};
pub use logloss::{logloss, logloss_from_logits, logloss_with_eps, LOGLOSS_EPS};
pub use metrics::{Counts, Metrics};
pub use ncis::{
    delta_ncis, log_rhos, ncis, ncis_from_log_weights, DeltaNcis, LogCap, Ncis, NcisConfig,
    TrajectoryLength, UserTrajectory,
};
pub use stats::{
    bootstrap_ci, bootstrap_ci_mean, mean_t_interval, paired_t_interval, student_t_quantile,
    BootstrapInterval, MeanInterval,
};
