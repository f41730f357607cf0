//! # mtrec-train
//!
//! Training and evaluation of a recommendation model `F = σ(z)` with MTRec's loss (paper Eq. 8–10,
//! `specs/method.md` §4):
//!
//! ```text
//! L = BCE(z, y) + κ·L_Align + aux,   L_Align = −mean[ r_P·σ(z) + r_N·(1 − σ(z)) ]
//! ```
//! where `r_P = r*(s,P)` and `r_N = r*(s,N)` are the mental rewards of each training sample, read
//! as constants from a rewards file ([`Rewards`]); κ = 0 is plain training. The recipe is the DIEN
//! reference's (`specs/backbones.md` §1, §5): Adam lr 1e-3, batch 128, 3 epochs, lr × 0.5 after each
//! epoch ([`TrainConfig`]).
//!
//! | module | what |
//! |---|---|
//! | [`config`] | [`TrainConfig`] (YAML, unknown keys rejected) |
//! | [`adam`] | [`Adam`] with a state that is saved and loaded (exact resume) |
//! | [`init`] | seeded initial weights ([`seeded_var_builder`]): candle's CPU RNG cannot be seeded |
//! | [`loss`] | [`training_loss`], [`alignment_loss`] |
//! | [`rewards`] | the rewards file (format in its docs) |
//! | [`trainer`] | [`Trainer`]: the loop, validation, early stopping, checkpoints, resume |
//! | [`eval`] | [`evaluate_test`]: last-pair and all-steps AUC, GAUC, log loss, NCIS, ΔNCIS, ESS |
//! | [`run`] | run folders: [`train_run`], [`evaluate_run`], `metrics.json` ([`RunMetrics`]) |
//!
//! The crate does not know the backbones: callers pass a [`BuildBackbone`] closure (the CLI's is
//! `mtrec_models::build`).
//!
//! ## Determinism
//! Initial weights come from per-variable ChaCha8 streams keyed by the seed and the variable's name
//! ([`init`]); epoch `e` visits the training samples in `mtrec_mdp::shuffled_indices(n, seed, e)`;
//! the validation users are a seeded draw; candle's CPU kernels are deterministic. So the same seed
//! on CPU gives bit-identical weights and metrics (tested), and a run interrupted by `max_steps` and
//! resumed from its checkpoint ends exactly where an uninterrupted run does (tested). Dropout masks
//! come from [`mtrec_nn::dropout`], reseeded before every step from the seed and the step number,
//! so backbones with dropout (SASRec, LinRec, SIGMA) are repeatable too.
//!
//! ## Decisions
//! - **Validation**: a seeded `validation_fraction` (default 5%) of the *training* users is held out
//!   and scored after each epoch (AUC over all their samples, more stable than their last pairs).
//!   Early stopping is off by default (`patience: None`), as in the reference recipe, which trains
//!   a fixed 3 epochs; with `patience: k` training stops after `k` epochs without a better
//!   validation AUC and keeps the best epoch's weights.
//! - **Adam**: our own ([`adam`] explains why), PyTorch's update form, no weight decay, dense
//!   updates of embedding tables (as TensorFlow 1's Adam does for the reference's tables).
//! - **NaN guard**: a non-finite loss stops training with an error naming the epoch, step and every
//!   loss term (and the sample, when a reward is at fault).
//! - **Test metrics** are read from one scoring pass in fixed order ([`eval`]); the primary AUC is
//!   the last pair of each test user (DIN/DIEN), the all-steps AUC is also reported.

pub mod adam;
pub mod config;
pub mod error;
pub mod eval;
pub mod init;
pub mod loss;
pub mod rewards;
pub mod run;
#[doc(hidden)]
pub mod testing;
pub mod trainer;

pub use adam::{Adam, AdamConfig};
pub use config::TrainConfig;
pub use error::{candle_message, Result, TrainError};
pub use eval::{evaluate_test, metrics_from_scores, score, TestMetrics};
pub use init::{seeded_var_builder, SeededVarMap};
pub use loss::{alignment_loss, training_loss, LossTerms};
pub use rewards::{write_rewards, Rewards};
pub use run::{
    evaluate_run, metrics_markdown, read_metrics, train_run, write_metrics, RunConfig, RunMetrics,
    RunOptions, TrainingSummary,
};
pub use trainer::{
    build_model, dataset_fingerprint, parse_device, validation_users, vocab_of, BuildBackbone,
    CheckpointMeta, EpochRecord, Progress, RunInfo, StopReason, TrainState, Trainer,
};

#[cfg(test)]
mod tests;
