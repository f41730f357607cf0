//! # mtrec-rl
//!
//! PPO and SAC for continuous actions, on candle, with a reward hook: the reinforcement-learning
//! half of MTRec's §5.2 experiment (Virtual Taobao), where a recommender policy is trained on the
//! environment's reward plus κ times the mental reward (paper §4.3, Eq. 11–12).
//!
//! | module | what |
//! |---|---|
//! | [`env`](mod@env) | the [`Env`] trait (batched, auto-reset), [`EnvStep`], [`EpisodeInfo`], [`EnvSpec`] |
//! | [`hook`] | the [`RewardHook`] trait, [`NoHook`], closures as hooks ([`hook_fn`]) |
//! | [`ppo`] | [`Ppo`], [`PpoConfig`], [`ppo_clip_loss`], [`ppo_value_loss`] |
//! | [`sac`] | [`Sac`], [`SacConfig`], [`EntCoef`] |
//! | [`gae`] | [`compute_gae`] with separate termination / episode-end flags |
//! | [`dist`] | Gaussian and tanh-squashed Gaussian log-densities, Gaussian entropy |
//! | [`buffer`] | the uniform [`ReplayBuffer`] |
//! | [`nets`] | [`Activation`], [`clip_grad_norm`], [`soft_update`] (and the internal MLP) |
//! | [`log`] | training curves: [`TrainLog`] of [`LogPoint`]s, [`EpisodeRecord`] |
//! | [`eval`] | the [`Policy`] trait (`act_deterministic`) and [`evaluate`] over K episodes |
//!
//! ## The reward hook contract
//! Each vector step the trainer calls [`RewardHook::rewards`] once with the whole batch
//! `(s, a, r_env, s', done)` and trains on `r = r_env + extra`. MTRec's use is
//! `extra = κ·r_mental(s, a_user)` with κ = 0.2 (Eq. 12; `r_mental` from the QR-IQL reward
//! model on the user's realised response, built by the caller). Training curves log the raw
//! environment return, the environment's score (e.g. eCTR) *and* the shaped return, so runs with
//! and without the hook are compared on the environment's own metric.
//!
//! ## Defaults and where they come from
//! The reference point is Stable-Baselines3 (2.x) `MlpPolicy`, as `specs/virtualtaobao.md` §5
//! recommends (no PPO/SAC settings are given in the paper):
//! * PPO ([`PpoConfig::default`]): `n_steps` 2048 per env, batch 64, 10 epochs, γ 0.99, λ 0.95,
//!   clip 0.2, no value clip, lr 3e-4 (Adam ε 1e-5), vf_coef 0.5, ent_coef 0, max_grad_norm 0.5,
//!   advantage normalisation per minibatch, separate 2×64 tanh actor and critic, orthogonal init,
//!   state-independent log σ initialised at 0. The SB3 runs on Virtual Taobao used `n_steps` 64,
//!   batch 64, γ 0.997.
//! * SAC ([`SacConfig::default`]): 2×256 ReLU actor and twin critics, lr 3e-4, batch 256,
//!   buffer 10⁶ (configurable; grows lazily), τ 0.005, γ 0.99, learning_starts 100, 1 gradient
//!   step per vector step, α learned from 1.0 towards the target entropy −act_dim (−27 on
//!   Virtual Taobao), log σ clamped to [−20, 2]. The SB3 Virtual Taobao runs used γ 0.995, a fixed
//!   α ∈ {1/16, 1/32, 1/64} ([`EntCoef::Fixed`]) and a 10⁵ buffer.
//!
//! ## Actions and bootstrapping
//! * PPO samples `u ~ N(μ, σ²)`, keeps `log π(u)` for the ratio and sends `clip(u, low, high)` to
//!   the environment (SB3's choice; the clipped action's density is not a Gaussian).
//!   [`Policy::act_deterministic`] is the clipped mean.
//! * SAC acts with `tanh(u)` in `[−1, 1]` (log-density with the tanh Jacobian
//!   `−Σ log(1 − tanh² u)`, computed stably), mapped affinely onto the environment's box;
//!   deterministic action `tanh(μ)`.
//! * Termination (`EnvStep::dones`) stops bootstrapping; truncation (`EnvStep::truncated`)
//!   bootstraps from `V(terminal observation)` (PPO) or keeps `done = 0` with the terminal
//!   `s'` in the replay (SAC). Environments report the true terminal observation in
//!   `EnvStep::next_obs` and the auto-reset one in [`Env::obs`].
//!
//! ## Determinism
//! Initial weights come from per-variable ChaCha8 streams keyed by the seed and the variable's
//! name (`mtrec_train::init::init_values`); action noise, exploration, minibatch shuffles and replay
//! sampling have their own seeded streams; candle's CPU kernels are deterministic. The same seed
//! on CPU gives bit-identical weights and curves (tested). A loss or gradient norm that turns
//! non-finite stops training with [`RlError::NonFinite`] naming the update.
//!
//! ## Weights
//! [`Ppo::save`] / [`Sac::save`] write every weight to one safetensors file (candle `VarMap`);
//! `load` reads it back into an agent of the same architecture and restarts the optimisers.

pub mod buffer;
pub mod dist;
pub mod env;
pub mod error;
pub mod eval;
pub mod gae;
pub mod hook;
pub mod log;
pub mod nets;
pub mod ppo;
pub mod sac;

pub use buffer::{ReplayBatch, ReplayBuffer};
pub use dist::{gaussian_entropy, gaussian_log_prob, log_one_minus_tanh_sq, squashed_log_prob};
pub use env::{Env, EnvSpec, EnvStep, EpisodeInfo};
pub use error::{EnvError, Result, RlError};
pub use eval::{ci95, evaluate, EvalResult, Policy};
pub use gae::compute_gae;
pub use hook::{hook_fn, NoHook, RewardHook};
pub use log::{EpisodeRecord, LogPoint, TrainLog};
pub use nets::{clip_grad_norm, soft_update, Activation};
pub use ppo::{ppo_clip_loss, ppo_value_loss, Ppo, PpoConfig};
pub use sac::{EntCoef, Sac, SacConfig};
