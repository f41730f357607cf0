//! Evaluation of a deterministic policy over a number of episodes.

use serde::{Deserialize, Serialize};

use crate::env::{Env, EnvSpec};
use crate::error::{Result, RlError};
use crate::hook::{current_obs, step_shaped, RewardHook};
use crate::log::{episode_means, EpisodeRecord, EpisodeTracker};

/// A trained policy that can act without noise.
pub trait Policy {
    /// The shapes and action box the policy was built for.
    fn spec(&self) -> EnvSpec;
    /// The deterministic action of each row of `obs` (`n × obs_dim` → `n × act_dim`), inside the
    /// action box: PPO's Gaussian mean clipped to the box, SAC's `tanh(mean)` scaled to it.
    fn act_deterministic(&self, obs: &[f32]) -> Result<Vec<f32>>;
}

/// The outcome of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// Every counted episode, in the order they finished.
    pub episodes: Vec<EpisodeRecord>,
    pub mean_raw_return: f64,
    pub mean_shaped_return: f64,
    pub mean_len: f64,
    /// Mean score over the episodes that report one.
    pub mean_score: Option<f64>,
    /// Normal-approximation 95 % interval of the mean raw return, `mean ± 1.96·s/√n`.
    pub raw_return_ci95: (f64, f64),
    /// The same for the score.
    pub score_ci95: Option<(f64, f64)>,
    /// Transitions stepped (all slots, counted or not).
    pub env_steps: u64,
}

/// `mean ± 1.96·s/√n` (sample standard deviation; zero width for one value).
pub fn ci95(values: &[f64]) -> (f64, f64) {
    let n = values.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return (mean, mean);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let h = 1.96 * (var / n as f64).sqrt();
    (mean - h, mean + h)
}

/// Resets `env` and runs `policy`'s deterministic actions until `n_episodes` episodes have
/// finished, then reports them (with `hook`'s shaped return beside the raw one; pass
/// [`crate::NoHook`] for none).
///
/// Slot `i` of `n` slots contributes at most `(n_episodes + i) / n` episodes (SB3's
/// `evaluate_policy`): counting whichever episodes finish first would favour short episodes.
/// Fails if `max_vector_steps` vector steps pass first. Evaluate on another environment than the
/// one being trained on: the reset would cut the trainer's episodes in progress.
pub fn evaluate<P, E, H>(
    policy: &P,
    env: &mut E,
    hook: &mut H,
    n_episodes: usize,
    max_vector_steps: u64,
) -> Result<EvalResult>
where
    P: Policy + ?Sized,
    E: Env + ?Sized,
    H: RewardHook + ?Sized,
{
    let spec = policy.spec();
    spec.check_env("evaluation", env)?;
    if n_episodes == 0 {
        return Err(RlError::config("evaluation", "n_episodes must be positive"));
    }
    let n = env.num_envs();
    let targets: Vec<usize> = (0..n).map(|i| (n_episodes + i) / n).collect();
    let mut counts = vec![0usize; n];
    let mut tracker = EpisodeTracker::new(n);
    let mut episodes = Vec::with_capacity(n_episodes);
    let mut env_steps = 0u64;
    env.reset()
        .map_err(|source| RlError::Env { env_steps, source })?;
    let mut vector_steps = 0u64;
    while counts.iter().zip(&targets).any(|(c, t)| c < t) {
        if vector_steps >= max_vector_steps {
            return Err(RlError::config(
                "evaluation",
                format!(
                    "{} of {n_episodes} episodes finished within {max_vector_steps} vector steps",
                    episodes.len()
                ),
            ));
        }
        let obs = current_obs(env, spec.obs_dim, env_steps)?;
        let actions = policy.act_deterministic(&obs)?;
        let (step, shaped) = step_shaped(env, hook, &obs, &actions, spec.obs_dim, env_steps)?;
        tracker.record(&step, &shaped);
        env_steps += n as u64;
        vector_steps += 1;
        // The tracker closes episodes in slot order.
        let finished = tracker.drain();
        let mut it = finished.into_iter();
        for i in 0..n {
            if step.dones[i] || step.truncated[i] || step.episodes[i].is_some() {
                if let Some(ep) = it.next() {
                    if counts[i] < targets[i] {
                        counts[i] += 1;
                        episodes.push(ep);
                    }
                }
            }
        }
    }
    let (raw, shaped, score, len) = episode_means(&episodes);
    let raws: Vec<f64> = episodes.iter().map(|e| e.raw_return).collect();
    let scores: Vec<f64> = episodes.iter().filter_map(|e| e.score).collect();
    Ok(EvalResult {
        mean_raw_return: raw.unwrap_or(f64::NAN),
        mean_shaped_return: shaped.unwrap_or(f64::NAN),
        mean_len: len.unwrap_or(f64::NAN),
        mean_score: score,
        raw_return_ci95: ci95(&raws),
        score_ci95: (!scores.is_empty()).then(|| ci95(&scores)),
        episodes,
        env_steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci95_hand_values() {
        let (lo, hi) = ci95(&[1.0, 2.0, 3.0, 4.0]);
        // mean 2.5, s² = 5/3, half-width 1.96·sqrt(5/12).
        let h = 1.96 * (5.0f64 / 12.0).sqrt();
        assert!((lo - (2.5 - h)).abs() < 1e-12 && (hi - (2.5 + h)).abs() < 1e-12);
        assert_eq!(ci95(&[3.0]), (3.0, 3.0));
    }
}
