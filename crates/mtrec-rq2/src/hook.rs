//! The mental reward as an RL reward hook (Eq. 12): `r = r_env + κ·r_mental(s, a_user)`, where the
//! user's action is the page's click count, which is also VirtualTB's reward.

use mtrec_rl::{EnvError, RewardHook};

use crate::mental::{MentalReward, USER_ACTIONS};

/// Adds `κ·r*(s, clicks)` ([`MentalReward::rewards`]) to every transition.
#[derive(Debug, Clone)]
pub struct MentalHook {
    model: MentalReward,
    kappa: f32,
    /// Sum and count of the extra rewards given, for the report.
    given: (f64, u64),
}

impl MentalHook {
    pub fn new(model: MentalReward, kappa: f32) -> Self {
        MentalHook {
            model,
            kappa,
            given: (0.0, 0),
        }
    }

    /// The mean extra reward `κ·r_mental` handed out so far.
    pub fn mean_extra(&self) -> f64 {
        self.given.0 / self.given.1.max(1) as f64
    }
}

/// The click count of a page from the simulator's reward (a whole number 0..=10).
pub fn clicks_of(reward: f32) -> Result<u32, EnvError> {
    let c = reward.round();
    if !(0.0..USER_ACTIONS as f32).contains(&c) || (reward - c).abs() > 1e-3 {
        return Err(format!(
            "the mental reward needs the page's click count as the reward (0..={}), got {reward}",
            USER_ACTIONS - 1
        )
        .into());
    }
    Ok(c as u32)
}

impl RewardHook for MentalHook {
    fn rewards(
        &mut self,
        obs: &[f32],
        actions: &[f32],
        env_rewards: &[f32],
        next_obs: &[f32],
        dones: &[bool],
    ) -> Result<Vec<f32>, EnvError> {
        let clicks = env_rewards
            .iter()
            .map(|&r| clicks_of(r))
            .collect::<Result<Vec<_>, _>>()?;
        let done: Vec<f32> = dones.iter().map(|&d| if d { 1.0 } else { 0.0 }).collect();
        // s' = (next observation, the same recommender action): see the `mental` module docs.
        let r = self
            .model
            .rewards(obs, actions, &clicks, next_obs, actions, &done)
            .map_err(|e| -> EnvError { Box::new(e) })?;
        let extra: Vec<f32> = r.iter().map(|x| self.kappa * x).collect();
        self.given.0 += extra.iter().map(|&x| f64::from(x)).sum::<f64>();
        self.given.1 += extra.len() as u64;
        Ok(extra)
    }
}
