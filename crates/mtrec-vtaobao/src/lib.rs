//! # Virtual Taobao (VirtualTB-v0) in candle
//!
//! The simulator of MTRec's §5.2 RL experiments: a population of Taobao users who are shown one
//! page of 10 items per step and click on some of them. It is the public release of
//! *Virtual-Taobao: Virtualizing Real-World Online Retail Environment for Reinforcement Learning*
//! (J.-C. Shi, Y. Yu, Q. Da, S.-Y. Chen, A.-X. Zeng; AAAI 2019), repository `eyounx/VirtualTaobao`
//! (HEAD `ff4f1cc`). That repository has no licence file; its README asks users to give credit to
//! the paper, so cite it when using this crate's results.
//!
//! The released simulator is much simpler than the paper's: three small MLPs and no item set.
//! * the **user generator** (`z ~ U[0,1)^128 → 88` logits, a softmax per attribute group, one
//!   categorical draw per group) draws a user as 11 one-hot attributes (88 floats);
//! * the **leave model** (user → 101 logits) draws, once per user, how many pages the user views;
//! * the **click model** (user, raw page counter, 27-dim action → 21 logits) draws the clicks on the
//!   page (0..=10; the reward) and a leftover value `b` (0..=9) that only appears in the
//!   observation.
//!
//! The recommender's action (the "weight vector") goes straight into the click model. An episode
//! is one user's visit; its length is the user's leave count (1..=100 pages, mean ≈ 7.8) and does
//! not depend on the policy, so maximising clicks is maximising the CTR.
//!
//! Weights: this crate does not bundle them; [`VirtualTb::load`] takes the path of
//! `virtualtb_v0.safetensors` (the original pickles converted to safetensors, bit-identical; the
//! tests read it from `../shared/data/virtualtaobao/`).
//!
//! ## The environment and its explicit decisions
//! [`VecEnv`] steps `N` users together (one batched click-model forward per step) and resets
//! finished slots itself. The dynamics are exactly the original `VirtualTB.step`/`reset`; where the
//! original is ambiguous or odd, [`EnvConfig`] decides, with these defaults:
//! * **(a) action clipping** — [`EnvConfig::clip_actions`], default **on**: actions are clipped to
//!   `[-1, 1]`, the declared action box, as SB3 and tianshou do before calling the env. The raw
//!   env does not clip (`false` reproduces it).
//! * **(b) terminal observation** — [`EnvConfig::terminal_obs`], default
//!   [`TerminalObs::TrueLast`]: a finished slot reports the true last observation of its episode
//!   in [`StepBatch::next_obs`], its [`EpisodeStats`] in [`StepBatch::episodes`], and is reset;
//!   [`VecEnv::obs`] then holds the new user's first observation. The original instead returns the
//!   *next* user with zeroed clicks and the old page counter ([`TerminalObs::OriginalQuirk`]).
//! * **(c) eCTR** — both estimators: the paper's per-episode mean of `clicks / (10 · pages)`
//!   (primary, with a 95 % interval) and the repository's ratio of sums; see [`EctrReport`] and
//!   [`evaluate_policy`].
//! * **(d) observation normalisation** — [`EnvConfig::scale_obs`], default **off**: the
//!   observation is `[user (88), clicks, b, page counter]` in raw counts, as the original and all
//!   baselines use it. The click model always gets the raw page counter.
//!
//! Randomness: one `ChaCha8Rng` per environment, seeded from a `u64`; all sampling is plain Rust
//! (uniform `z`, categorical draws by inverse CDF over softmax probabilities computed in f64 from
//! the logits, see [`sample_categorical`]). Bit parity with torch's sampler is not attempted (torch
//! changes it between versions); the networks match the reference forward passes to float
//! rounding, and the sampled statistics match the Python env within sampling error (see the tests).
//!
//! Speed: one step of `N = 64` users is one click-model forward (three small matmuls, which
//! dominate), the categorical draws, and a generator and leave forward for the slots that reset.
//! Measured at about 0.6 ms per step, i.e. ≈ 1,600 vector steps/s or ≈ 100,000 user-steps/s, on
//! one shared CPU core in the test profile (dependencies optimised; `CANDLE_NUM_THREADS=1`); the
//! Python env takes about 8 ms per single-user step. The `step_throughput` test prints the figure
//! for N = 1, 64 and 256 (`cargo test -p mtrec-vtaobao --test statistics -- --ignored
//! --nocapture`). On a busy machine, `CANDLE_NUM_THREADS=1` is faster than candle's threads for
//! tensors this small.
//!
//! ```no_run
//! use std::{path::Path, sync::Arc};
//! use candle_core::Device;
//! use mtrec_vtaobao::{evaluate_policy, EnvConfig, VirtualTb, ACT_DIM};
//!
//! let model = Arc::new(VirtualTb::load(
//!     Path::new("../shared/data/virtualtaobao/virtualtb_v0.safetensors"),
//!     &Device::Cpu,
//! )?);
//! // The all-zero action: eCTR ≈ 0.09 per episode (0.056 as a ratio of sums).
//! let report = evaluate_policy(model, 64, 1000, 1, EnvConfig::default(), |obs| {
//!     vec![0.0; obs.len() / 91 * ACT_DIM]
//! })?;
//! println!("{} ± {}", report.per_episode_mean, report.ci95_half_width);
//! # Ok::<(), mtrec_vtaobao::VtbError>(())
//! ```

mod env;
mod error;
mod eval;
mod model;
mod sample;

pub use env::{EnvConfig, EpisodeStats, StepBatch, TerminalObs, VecEnv, OBS_DIM};
pub use error::{Result, VtbError};
pub use eval::{evaluate_policy, EctrEstimator, EctrReport};
pub use model::{
    grouped_softmax, VirtualTb, ACTION_OUT, ACT_DIM, B_CLASSES, CLICK_CLASSES, LEAVE_CLASSES,
    USER_DIM, USER_GROUPS, Z_DIM,
};
pub use sample::{sample_categorical, softmax_f64};

#[cfg(test)]
pub(crate) mod testutil;
