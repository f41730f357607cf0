//! The reward hook: an extra reward per transition, added to the environment's.
//!
//! MTRec (§4.3, Eq. 12) trains the recommender on `r̂ + κ·r*`: the environment's reward (clicks)
//! plus κ = 0.2 times the mental reward `r*(s, a_user)` of a reward model learnt from logged
//! behaviour. The trainers here know nothing of reward models: they call a [`RewardHook`] once per
//! vector step with the whole batch of transitions and train on `r_env + extra`. The caller builds
//! `extra = κ·r_mental` inside its hook (so κ lives with the reward model, not in the RL settings).

use crate::env::{check_step, Env, EnvStep};
use crate::error::{EnvError, RlError};

/// Computes the extra reward of each slot's transition of one vector step.
///
/// Arguments (all row-major over the `n = num_envs` slots): `obs` (`n × obs_dim`, the observation
/// acted on), `actions` (`n × act_dim`, the actions the environment received, i.e. clipped to the
/// box), `env_rewards` (`n`), `next_obs` (`n × obs_dim`, the true next observation, the terminal
/// one where an episode ended) and `dones` (`n`, true terminations: a reward model's `γ·V(s')`
/// term is dropped there; truncated slots are *not* marked). Returns `n` finite extra rewards.
pub trait RewardHook {
    fn rewards(
        &mut self,
        obs: &[f32],
        actions: &[f32],
        env_rewards: &[f32],
        next_obs: &[f32],
        dones: &[bool],
    ) -> Result<Vec<f32>, EnvError>;
}

/// No extra reward: plain RL on the environment's reward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoHook;

impl RewardHook for NoHook {
    fn rewards(
        &mut self,
        _obs: &[f32],
        _actions: &[f32],
        env_rewards: &[f32],
        _next_obs: &[f32],
        _dones: &[bool],
    ) -> Result<Vec<f32>, EnvError> {
        Ok(vec![0.0; env_rewards.len()])
    }
}

/// Any closure with the hook's signature is a hook.
impl<F> RewardHook for F
where
    F: FnMut(&[f32], &[f32], &[f32], &[f32], &[bool]) -> Result<Vec<f32>, EnvError>,
{
    fn rewards(
        &mut self,
        obs: &[f32],
        actions: &[f32],
        env_rewards: &[f32],
        next_obs: &[f32],
        dones: &[bool],
    ) -> Result<Vec<f32>, EnvError> {
        self(obs, actions, env_rewards, next_obs, dones)
    }
}

/// The observations to act on, checked to hold `num_envs × obs_dim` floats.
pub(crate) fn current_obs<E: Env + ?Sized>(
    env: &E,
    obs_dim: usize,
    env_steps: u64,
) -> crate::Result<Vec<f32>> {
    let n = env.num_envs();
    let obs = env.obs().to_vec();
    if obs.len() != n * obs_dim {
        return Err(RlError::EnvContract {
            env_steps,
            message: format!("obs() holds {} floats for {n} × {obs_dim}", obs.len()),
        });
    }
    Ok(obs)
}

/// One vector step as every trainer and the evaluation take it: steps `env` with `actions`,
/// checks what it returns, and asks `hook` for the extra rewards. Returns the step and the shaped
/// rewards `r_env + extra`.
pub(crate) fn step_shaped<E, H>(
    env: &mut E,
    hook: &mut H,
    obs: &[f32],
    actions: &[f32],
    obs_dim: usize,
    env_steps: u64,
) -> crate::Result<(EnvStep, Vec<f32>)>
where
    E: Env + ?Sized,
    H: RewardHook + ?Sized,
{
    let step = env
        .step(actions)
        .map_err(|source| RlError::Env { env_steps, source })?;
    check_step(&step, env.num_envs(), obs_dim, env_steps)?;
    let extra = extra_rewards(
        hook,
        obs,
        actions,
        &step.rewards,
        &step.next_obs,
        &step.dones,
        env_steps,
    )?;
    let shaped = step
        .rewards
        .iter()
        .zip(&extra)
        .map(|(r, x)| r + x)
        .collect();
    Ok((step, shaped))
}

/// Calls the hook and checks its answer (one finite value per slot).
fn extra_rewards<H: RewardHook + ?Sized>(
    hook: &mut H,
    obs: &[f32],
    actions: &[f32],
    env_rewards: &[f32],
    next_obs: &[f32],
    dones: &[bool],
    env_steps: u64,
) -> crate::Result<Vec<f32>> {
    let err = |source: EnvError| crate::RlError::Hook { env_steps, source };
    let extra = hook
        .rewards(obs, actions, env_rewards, next_obs, dones)
        .map_err(err)?;
    if extra.len() != env_rewards.len() {
        return Err(err(format!(
            "returned {} rewards for {} slots",
            extra.len(),
            env_rewards.len()
        )
        .into()));
    }
    if let Some((i, r)) = extra.iter().enumerate().find(|(_, r)| !r.is_finite()) {
        return Err(err(
            format!("extra reward {r} of slot {i} is not finite").into()
        ));
    }
    Ok(extra)
}

/// Returns `f` unchanged; calling it lets the compiler infer a closure's argument types for the
/// hook signature (`hook_fn(|obs, actions, r, next_obs, dones| ...)`).
pub fn hook_fn<F>(f: F) -> F
where
    F: FnMut(&[f32], &[f32], &[f32], &[f32], &[bool]) -> Result<Vec<f32>, EnvError>,
{
    f
}
