//! MTRec's mental reward models (paper §4.2, Alg. 1–2, App. A.1–A.3; `specs/method.md` §2–§4).
//!
//! A Q-network is any registered backbone with a [`mtrec_nn::HeadKind::Q`] head (IQ-Learn, the
//! "IRL" baseline) or a [`mtrec_nn::HeadKind::Quantile`] head (QR-IQL, MTRec).
//!
//! | module | what |
//! |---|---|
//! | [`losses`] | the two objectives, the pinball loss, `r*(s,a) = Q(s,a) − γ(1−done) V(s')` |
//! | [`config`] | [`RewardConfig`] and its profiles (`paper`, `quick`, `smoke`) |
//! | [`inspect`] | the paper's Figure 3 from a rewards file: SVG plots, CSVs, `figure3.json` |
//! | [`fit`] | the training loop (Alg. 1) with checkpoints and resume, reward patching (Alg. 2) |
//!
//! ## Decisions (each a setting, with the spec's default)
//! - γ = 0.99 and `γ(1 − done)` kept inside the χ² square (`u2_gamma`, method §3.3 A1–A2).
//! - Gradients through `V(s)` and `V(s')`, no target network (A5); temperature 1 (A6).
//! - The quantile heads are summed (Alg. 1) and never sorted (method §10).
//! - Both actions' rewards of a sample use the sample's logged `s'` (method §4), so
//!   `r*(s,P) − r*(s,N) = Q(s,P) − Q(s,N)`: the alignment gradient is the learned policy's logit.
//! - DIEN's auxiliary loss is added to the Q objective by default (`aux_loss`), as a regulariser.
//! - Quick profiles use lr 1e-3: at small budgets lr 1e-4 barely learns (method §10).

pub mod config;
pub mod error;
pub mod fit;
pub mod inspect;
pub mod losses;
mod rewards_file;

pub use config::{Profile, RewardConfig, RewardKind};
pub use error::{Result, RewardError};
pub use fit::{
    build_q_model, fit_reward, patch_rewards, patch_states, q_click_auc, read_metrics, read_patch,
    write_patch, FitOptions, FitOutcome, FitState, Patch, RewardMetrics, RewardRunConfig,
};
pub use inspect::{inspect_rewards, Figure3};
pub use losses::{
    expected_rewards, gather_action, iq_loss, mean_q, pinball, qr_iql_loss, quantile_rewards,
    quantile_taus, soft_value, IqConfig,
};

#[cfg(test)]
mod tests;
