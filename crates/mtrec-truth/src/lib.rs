//! # mtrec-truth
//!
//! Alignment metrics that the paper could not compute: a learned mental reward and a recommender
//! scored against the ground truth of an `mtrec-synth` world. The paper (§5.3) judges learned
//! rewards only indirectly, since nobody knows how satisfied real users were; a simulated world
//! records the satisfaction of every engagement and the reward model that produced it.
//!
//! ```no_run
//! # use std::path::Path;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use mtrec_truth::{GroundTruth, RankingConfig};
//! let truth = GroundTruth::load(Path::new("data/generated/synth-es"))?;
//! let ds = mtrec_data::PreparedDataset::load(Path::new("data/prepared/synth-es"))?;
//! truth.check_dataset(&ds)?;
//! let e = truth.engagement(7, 3);                 // user 7's engagement at 0-based step 3
//! let g = truth.expected_reward(7, 3, 42);        // had she engaged item 42 instead
//! # Ok(()) }
//! ```
//!
//! ## The join
//! `mtrec synth` writes user, item and category ids `1..n`, which `mtrec prepare` keeps (it numbers
//! integer keys numerically), and `rewards.parquet`'s `step` is 0-based like `mtrec_mdp::State::step`:
//! `PreparedDataset::sequence(u)[t]` is the item of `rewards.parquet`'s row (u, t).
//! [`GroundTruth::check_dataset`] verifies this (users, items, categories, the item of every step)
//! before any metric is computed, so a dataset of another world fails with the first difference.
//!
//! ## Counterfactual truth
//! The simulator's mental reward depends on the item's quality and category, the user's static
//! taste and the step's fatigue only (`mtrec_synth::Params::reward_model`), not on her changing
//! interests or mood. So the reward she *would* have expected from any item at any step is exact:
//! [`GroundTruth::expected_reward`] evaluates the simulator's own function, and for the logged items
//! it reproduces `rewards.parquet`'s `expected_reward` to f32 precision (tested). Taste weights are
//! drawn again from the seed, since `users.parquet` rounds them.
//!
//! ## Reward recovery ([`reward_recovery`])
//! Over the held-out engagements (the test users' positive samples, steps `t ≥ 1`:
//! `mtrec_mdp::samples(ds, Split::Test)` with `positive`), `r*(s,P)` is computed exactly as Alg. 2
//! patches the training samples (`mtrec_reward::patch_states`, the logged transition, Eq. 7). Then:
//! - **Spearman** of `r*(s,P)` with the felt reward and with its expectation (midrank ties). Ranks,
//!   because IRL recovers a reward only up to scale and shift (and potential shaping), so only the
//!   order is comparable; the expectation is the part any model can learn (the satisfaction draw
//!   and noise are not predictable).
//! - **AUC** of `r*(s,P)` at telling satisfied from disappointed engagements (`mtrec_eval::auc`):
//!   the bimodal reward's main fact.
//! - **Calibration** (QR-IQL only). The quantile rewards `r_i(s,P)` live on the learned, arbitrary
//!   scale, so an affine map `a + b·r` from the *mean* of the quantile rewards to the true reward is
//!   fitted by least squares on the *training* users' engagements (never the held-out ones), then
//!   applied to each quantile reward of the held-out engagements; `coverage_i` is the share of true
//!   rewards at or below mapped quantile `i`, to be compared with `τ_i = (2i − 1)/2N`, and their
//!   mean `|coverage_i − τ_i|` is reported. One map for all heads keeps the heads' spread as learned:
//!   a distributional model that learned the reward's spread covers each level at its `τ`.
//!
//! ## Aligned ranking ([`ranking_metrics`])
//! For each test user's positive step `t ≥ 1` (optionally only her last `max_steps_per_user`), the
//! candidates are the logged positive, the logged negative and `candidates − 2` items drawn uniformly
//! without replacement among the items she never engaged (ChaCha8, `seed`, stream = user id: the
//! same candidates for every model, see [`candidate_sets`]). The recommender scores each candidate
//! given the state's history (`mtrec_mdp::Batcher::batch_items`): a CTR head by its click logit; a Q
//! or quantile head (a reward model's Q-network) by its soft policy's logit `Q(s,P) − Q(s,N)` (mean
//! of the heads). The gain of a candidate is the counterfactual expected reward at that step. Per
//! step, with ties in score broken by candidate order ([`rank_step`]):
//! - **mean reward @k / @1**: the mean gain of the top-k and of the top item: what a user would
//!   expect to feel from what is recommended;
//! - **NDCG@k** with gains shifted by the step's minimum (`g − min g ≥ 0`: expected rewards can be
//!   negative, NDCG needs non-negative gains; the shift keeps all differences);
//! - **oracle @k / @1**: the best possible (candidates sorted by gain), and **random**: the mean gain
//!   of the candidates; `gain_captured_at_k = (reward@k − random)/(oracle@k − random)` places a model
//!   between them (means over steps first);
//! - the logged positive's gain and how often it is in the top-k (the behavioural view).
//!
//! ## Run folders
//! [`evaluate_train_run`] and [`evaluate_reward_run`] rebuild a run's model from its checkpoint;
//! [`write_truth_metrics`] writes `<run>/truth_metrics.json` and `.md` (`mtrec evaluate --run <dir>
//! --ground-truth <world>` does all three).

pub mod error;
pub mod ranking;
pub mod recovery;
pub mod report;
pub mod truth;

pub use error::{Result, TruthError};
pub use ranking::{
    candidate_sets, rank_step, ranking_metrics, ranking_metrics_with, score_items, CandidateSet,
    RankingConfig, RankingMetrics, StepRanking,
};
pub use recovery::{
    affine_fit, pearson, quantile_calibration, reward_recovery, reward_recovery_with,
    QuantileCalibration, RecoveryMetrics,
};
pub use report::{
    evaluate_reward_run, evaluate_train_run, write_truth_metrics, TruthReport, REPORT_SCHEMA,
};
pub use truth::{EngagementTruth, GroundTruth};

#[cfg(test)]
mod tests;
