//! The environment contract: a batched ("vector") environment of `num_envs` independent slots that
//! step together and reset themselves when an episode ends (gym's `VectorEnv` with auto-reset).
//!
//! Why batched: the target simulator (Virtual Taobao) is three small MLPs, so stepping many users
//! at once is what makes it fast, and PPO/SAC only need one policy forward pass per vector step.

use crate::error::{EnvError, Result, RlError};

/// The end of one episode, as the environment reports it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpisodeInfo {
    /// The episode's undiscounted return in the environment's own reward (e.g. clicks).
    pub ret: f64,
    /// Number of steps of the episode.
    pub len: usize,
    /// An optional environment-specific score of the episode (e.g. Virtual Taobao's eCTR =
    /// clicks / (10 · pages)): logged beside the returns so runs can be compared on the env's own
    /// metric whatever reward shaping was used.
    pub score: Option<f64>,
}

/// What one vector step returns. Every `Vec` has one entry per slot (`num_envs`), except
/// `next_obs` which is `num_envs × obs_dim`, row-major.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnvStep {
    /// The environment's reward of each slot's transition.
    pub rewards: Vec<f32>,
    /// True termination (an absorbing state: no value is bootstrapped after it).
    pub dones: Vec<bool>,
    /// Truncation (time limit, or any cut that is not a property of the MDP): the trainers
    /// bootstrap from `V(next_obs)` there. May be all `false`.
    pub truncated: Vec<bool>,
    /// The true next observation of each slot: the terminal one where the episode ended (the
    /// observation to act on after an auto-reset is in [`Env::obs`] instead).
    pub next_obs: Vec<f32>,
    /// `Some` where an episode ended in this step (`dones[i] || truncated[i]`). `None` at an
    /// episode end is allowed: the trainer then uses its own sum of `rewards` and no score.
    pub episodes: Vec<Option<EpisodeInfo>>,
}

/// A batched environment with continuous actions in a box `[low, high]^act_dim`.
///
/// Contract: [`Env::obs`] holds the observations to act on (`num_envs × obs_dim`, row-major);
/// [`Env::step`] takes `num_envs × act_dim` actions (already clipped to [`Env::action_bounds`] by
/// the trainers), advances every slot by one step, resets the slots whose episode ended and
/// returns an [`EnvStep`]; afterwards `obs()` holds the next observations (the auto-reset ones for
/// finished slots). [`Env::reset`] starts a new episode in every slot (used by evaluation).
pub trait Env {
    /// Number of slots stepped together.
    fn num_envs(&self) -> usize;
    /// Length of one observation.
    fn obs_dim(&self) -> usize;
    /// Length of one action.
    fn act_dim(&self) -> usize;
    /// The action box `[low, high]` (the same for every dimension). Virtual Taobao's is `[-1, 1]`.
    fn action_bounds(&self) -> (f32, f32) {
        (-1.0, 1.0)
    }
    /// The current observations, `num_envs × obs_dim`, row-major.
    fn obs(&self) -> &[f32];
    /// Starts a new episode in every slot.
    fn reset(&mut self) -> std::result::Result<(), EnvError>;
    /// One step of every slot; `actions` is `num_envs × act_dim`, row-major.
    fn step(&mut self, actions: &[f32]) -> std::result::Result<EnvStep, EnvError>;
}

impl<E: Env + ?Sized> Env for &mut E {
    fn num_envs(&self) -> usize {
        (**self).num_envs()
    }
    fn obs_dim(&self) -> usize {
        (**self).obs_dim()
    }
    fn act_dim(&self) -> usize {
        (**self).act_dim()
    }
    fn action_bounds(&self) -> (f32, f32) {
        (**self).action_bounds()
    }
    fn obs(&self) -> &[f32] {
        (**self).obs()
    }
    fn reset(&mut self) -> std::result::Result<(), EnvError> {
        (**self).reset()
    }
    fn step(&mut self, actions: &[f32]) -> std::result::Result<EnvStep, EnvError> {
        (**self).step(actions)
    }
}

/// The shapes and action box a policy is built for.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EnvSpec {
    pub obs_dim: usize,
    pub act_dim: usize,
    pub action_low: f32,
    pub action_high: f32,
}

impl EnvSpec {
    /// The spec of an environment.
    pub fn of<E: Env + ?Sized>(env: &E) -> Self {
        let (action_low, action_high) = env.action_bounds();
        EnvSpec {
            obs_dim: env.obs_dim(),
            act_dim: env.act_dim(),
            action_low,
            action_high,
        }
    }

    /// Checks the dimensions and the box.
    pub(crate) fn validate(&self, algo: &'static str) -> Result<()> {
        if self.obs_dim == 0 || self.act_dim == 0 {
            return Err(RlError::config(
                algo,
                format!(
                    "obs_dim ({}) and act_dim ({}) must be positive",
                    self.obs_dim, self.act_dim
                ),
            ));
        }
        if !(self.action_low.is_finite()
            && self.action_high.is_finite()
            && self.action_low < self.action_high)
        {
            return Err(RlError::config(
                algo,
                format!(
                    "the action box [{}, {}] must be finite and non-empty",
                    self.action_low, self.action_high
                ),
            ));
        }
        Ok(())
    }

    /// Checks that `env` matches the spec the policy was built for.
    pub(crate) fn check_env<E: Env + ?Sized>(&self, algo: &'static str, env: &E) -> Result<()> {
        let got = EnvSpec::of(env);
        if got != *self {
            return Err(RlError::config(
                algo,
                format!("the environment {got:?} does not match the policy's {self:?}"),
            ));
        }
        if env.num_envs() == 0 {
            return Err(RlError::config(algo, "the environment has no slots"));
        }
        if env.obs().len() != env.num_envs() * self.obs_dim {
            return Err(RlError::EnvContract {
                env_steps: 0,
                message: format!(
                    "obs() holds {} floats, num_envs × obs_dim = {}",
                    env.obs().len(),
                    env.num_envs() * self.obs_dim
                ),
            });
        }
        Ok(())
    }
}

/// Checks the lengths of a step's vectors and that the rewards are finite.
pub(crate) fn check_step(
    step: &EnvStep,
    num_envs: usize,
    obs_dim: usize,
    env_steps: u64,
) -> Result<()> {
    let bad = |message: String| RlError::EnvContract { env_steps, message };
    let lens = [
        ("rewards", step.rewards.len()),
        ("dones", step.dones.len()),
        ("truncated", step.truncated.len()),
        ("episodes", step.episodes.len()),
    ];
    for (name, len) in lens {
        if len != num_envs {
            return Err(bad(format!(
                "{name} has {len} entries for {num_envs} slots"
            )));
        }
    }
    if step.next_obs.len() != num_envs * obs_dim {
        return Err(bad(format!(
            "next_obs has {} floats, num_envs × obs_dim = {}",
            step.next_obs.len(),
            num_envs * obs_dim
        )));
    }
    if let Some((i, r)) = step
        .rewards
        .iter()
        .enumerate()
        .find(|(_, r)| !r.is_finite())
    {
        return Err(bad(format!("reward {r} of slot {i} is not finite")));
    }
    Ok(())
}
