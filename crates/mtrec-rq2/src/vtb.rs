//! Virtual Taobao ([`mtrec_vtaobao::VecEnv`]) as an [`mtrec_rl::Env`], with the experiment's
//! simulator settings: actions clipped to [-1, 1], the true last observation on termination, and
//! the observation's counters scaled to about [0, 1] (clicks / 10, b / 9, pages / 100), because
//! the raw page counter (0..100) would saturate the tanh networks of PPO. The click model itself
//! always sees the raw counter.

use std::sync::Arc;

use mtrec_rl::{Env, EnvError, EnvStep, EpisodeInfo};
use mtrec_vtaobao::{EnvConfig, TerminalObs, VecEnv, VirtualTb};

use crate::error::{Result, Rq2Error};

/// The simulator settings of the RQ2 experiment (module docs).
pub fn env_config() -> EnvConfig {
    EnvConfig {
        clip_actions: true,
        terminal_obs: TerminalObs::TrueLast,
        scale_obs: true,
    }
}

/// `N` simulated users behind the [`Env`] trait. An episode's score is its eCTR,
/// clicks / (10 · pages).
pub struct VtbEnv(VecEnv);

impl VtbEnv {
    pub fn new(model: Arc<VirtualTb>, n: usize, seed: u64) -> Result<Self> {
        VecEnv::new(model, n, env_config(), seed)
            .map(VtbEnv)
            .map_err(|e| Rq2Error::Env(e.to_string()))
    }
}

impl Env for VtbEnv {
    fn num_envs(&self) -> usize {
        self.0.num_envs()
    }

    fn obs_dim(&self) -> usize {
        self.0.obs_dim()
    }

    fn act_dim(&self) -> usize {
        self.0.act_dim()
    }

    fn obs(&self) -> &[f32] {
        self.0.obs()
    }

    fn reset(&mut self) -> std::result::Result<(), EnvError> {
        self.0.reset().map_err(|e| -> EnvError { Box::new(e) })
    }

    fn step(&mut self, actions: &[f32]) -> std::result::Result<EnvStep, EnvError> {
        let s = self
            .0
            .step(actions)
            .map_err(|e| -> EnvError { Box::new(e) })?;
        let n = s.rewards.len();
        Ok(EnvStep {
            rewards: s.rewards,
            dones: s.dones,
            truncated: vec![false; n],
            next_obs: s.next_obs,
            episodes: s
                .episodes
                .into_iter()
                .map(|e| {
                    e.map(|e| EpisodeInfo {
                        ret: f64::from(e.clicks),
                        len: e.pages as usize,
                        score: Some(e.ctr()),
                    })
                })
                .collect(),
        })
    }
}
