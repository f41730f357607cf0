//! The mental reward of a Virtual Taobao user (paper §4.3, Eq. 11–12): a QR-IQL Q-network over the
//! user-centric MDP whose state is what the user sees (its features, the page counter, the last
//! page's clicks) together with the recommender's 27-dim action, and whose action is the user's
//! response, the click count 0..=10 (11 actions). Trained on expert trajectories with
//! [`mtrec_reward::qr_iql_loss`], the same objective as the recommendation experiments.
//!
//! The reward added to the RL agent's is the expected mental reward of the realised click count,
//! `r*(s, a) = mean_i λ_i(s, a) − γ(1 − done)·logsumexp_a' mean_i λ_i(s', a')` (method §3.2),
//! with `s' = (next observation, the same recommender action)`. The RL trainer needs the reward
//! when the step happens, before the policy has picked its next action; holding the action fixed
//! is the value of "the next page, if it looked like this one", and the expert data it was
//! trained on uses the recommender's real next action (see [`Transitions`]).

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use mtrec_nn::{Activation, Mlp, MlpConfig};
use mtrec_reward::{qr_iql_loss, IqConfig};
use mtrec_train::{seeded_var_builder, Adam, AdamConfig};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, Rq2Error};

/// Observation floats of VirtualTB-v0: 88 one-hot user features, clicks, the `b` head, pages.
pub const OBS_DIM: usize = 91;
/// The recommender's action.
pub const ACT_DIM: usize = 27;
/// The user's actions: 0..=10 clicks.
pub const USER_ACTIONS: usize = 11;

/// Settings of the mental reward model (defaults: paper App. A.3 and the reward crate's quick
/// profile; N = 10 quantiles as in §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MentalConfig {
    /// Quantile heads N.
    pub quantiles: usize,
    /// Discount γ of the user-centric MDP.
    pub gamma: f64,
    /// χ² regulariser α.
    pub alpha: f64,
    /// Hidden layer widths of the Q-network (ReLU).
    pub hidden: [usize; 2],
    pub lr: f64,
    pub batch_size: usize,
    pub steps: usize,
}

impl Default for MentalConfig {
    fn default() -> Self {
        MentalConfig {
            quantiles: 10,
            gamma: 0.99,
            alpha: 0.5,
            hidden: [256, 256],
            lr: 1e-3,
            batch_size: 512,
            steps: 2000,
        }
    }
}

impl MentalConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Rq2Error::Config(format!("mental reward: {m}")));
        if self.quantiles == 0 || self.batch_size == 0 || self.hidden.contains(&0) {
            return bad("quantiles, batch_size and hidden sizes must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.gamma) || self.alpha <= 0.0 || self.lr <= 0.0 {
            return bad("need 0 <= gamma <= 1, alpha > 0 and lr > 0");
        }
        Ok(())
    }
}

/// Expert transitions of the user-centric MDP, row-major: state `(obs, act)`, the user's action
/// (clicks), the next state `(next_obs, next_act)` and whether the episode ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transitions {
    pub obs: Vec<f32>,
    pub act: Vec<f32>,
    pub clicks: Vec<u32>,
    pub next_obs: Vec<f32>,
    pub next_act: Vec<f32>,
    pub done: Vec<f32>,
}

impl Transitions {
    pub fn len(&self) -> usize {
        self.clicks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clicks.is_empty()
    }

    /// Checks the column lengths and the click range.
    pub fn validate(&self) -> Result<()> {
        let n = self.len();
        let ok = self.obs.len() == n * OBS_DIM
            && self.next_obs.len() == n * OBS_DIM
            && self.act.len() == n * ACT_DIM
            && self.next_act.len() == n * ACT_DIM
            && self.done.len() == n;
        if !ok {
            return Err(Rq2Error::Data(format!(
                "expert transitions: columns of inconsistent lengths for {n} transitions"
            )));
        }
        if let Some(c) = self.clicks.iter().find(|&&c| c as usize >= USER_ACTIONS) {
            return Err(Rq2Error::Data(format!(
                "expert transitions: click count {c} outside 0..={}",
                USER_ACTIONS - 1
            )));
        }
        Ok(())
    }
}

/// The Q-network's input: the observation as the simulator gives it with `scale_obs` (counters
/// already scaled to about [0, 1]: clicks / 10, b / 9, pages / 100; the experiment always scales
/// them, see [`crate::experiment`]) and the action clipped to [-1, 1], as the simulator clips it.
pub fn features(obs: &[f32], act: &[f32]) -> Vec<f32> {
    let n = obs.len() / OBS_DIM;
    let mut x = Vec::with_capacity(n * (OBS_DIM + ACT_DIM));
    for i in 0..n {
        x.extend_from_slice(&obs[i * OBS_DIM..(i + 1) * OBS_DIM]);
        x.extend(
            act[i * ACT_DIM..(i + 1) * ACT_DIM]
                .iter()
                .map(|a| a.clamp(-1.0, 1.0)),
        );
    }
    x
}

/// The QR-IQL Q-network `λ(s, ·) ∈ R^{11×N}`.
#[derive(Debug, Clone)]
pub struct MentalReward {
    mlp: Mlp,
    cfg: MentalConfig,
    device: Device,
}

impl MentalReward {
    pub fn new(cfg: MentalConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let mlp_cfg = MlpConfig::new(OBS_DIM + ACT_DIM, &cfg.hidden, Activation::Relu)
            .with_output(USER_ACTIONS * cfg.quantiles);
        let device = vb.device().clone();
        Ok(MentalReward {
            mlp: Mlp::new(&mlp_cfg, vb.pp("q"))?,
            cfg,
            device,
        })
    }

    pub fn config(&self) -> MentalConfig {
        self.cfg
    }

    /// `λ(s, ·)`: `[B, 11, N]` for `B` rows of observations and actions.
    pub fn lambdas(&self, obs: &[f32], act: &[f32]) -> Result<Tensor> {
        let n = obs.len() / OBS_DIM;
        let x = Tensor::from_vec(features(obs, act), (n, OBS_DIM + ACT_DIM), &self.device)?;
        Ok(self
            .mlp
            .forward(&x)?
            .reshape((n, USER_ACTIONS, self.cfg.quantiles))?)
    }

    /// The expected mental reward of the realised clicks, one per row (module docs).
    pub fn rewards(
        &self,
        obs: &[f32],
        act: &[f32],
        clicks: &[u32],
        next_obs: &[f32],
        next_act: &[f32],
        done: &[f32],
    ) -> Result<Vec<f32>> {
        let n = clicks.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let q = self.lambdas(obs, act)?;
        let q_next = self.lambdas(next_obs, next_act)?;
        let done = Tensor::from_slice(done, n, &self.device)?;
        let r = mtrec_reward::expected_rewards(&q, &q_next, &done, self.cfg.gamma)?; // [B, 11]
        let a = Tensor::from_slice(clicks, n, &self.device)?;
        Ok(mtrec_reward::gather_action(&r, &a)?.to_vec1::<f32>()?)
    }
}

/// What [`fit_mental`] reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MentalFit {
    pub transitions: usize,
    pub steps: usize,
    /// Mean loss of the first and the last 10% of the steps.
    pub first_loss: f64,
    pub last_loss: f64,
    /// Share of expert transitions whose realised click count has the largest `mean_i λ_i(s, ·)`.
    pub expert_argmax_agreement: f64,
    pub seconds: f64,
}

/// Fits the mental reward on expert transitions: `cfg.steps` Adam steps on minibatches drawn
/// without replacement (reshuffled every pass) from a seeded order.
pub fn fit_mental(
    data: &Transitions,
    cfg: MentalConfig,
    seed: u64,
    device: &Device,
) -> Result<(VarMap, MentalReward, MentalFit)> {
    fit_mental_with_progress(data, cfg, seed, device, &mut |_, _| {})
}

/// [`fit_mental`], calling `on_step(steps done, steps in all)` every 1% of the steps.
pub fn fit_mental_with_progress(
    data: &Transitions,
    cfg: MentalConfig,
    seed: u64,
    device: &Device,
    on_step: &mut dyn FnMut(usize, usize),
) -> Result<(VarMap, MentalReward, MentalFit)> {
    cfg.validate()?;
    data.validate()?;
    if data.is_empty() {
        return Err(Rq2Error::Data(
            "no expert transitions to fit the mental reward on".into(),
        ));
    }
    let started = std::time::Instant::now();
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, seed, DType::F32, device);
    let model = MentalReward::new(cfg, vb)?;
    let mut opt = Adam::new(
        &varmap,
        AdamConfig {
            lr: cfg.lr,
            ..AdamConfig::default()
        },
    )?;
    let iq = IqConfig {
        gamma: cfg.gamma,
        alpha: cfg.alpha,
        u2_gamma: true,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6d65_6e74);
    let n = data.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    let mut cursor = 0;
    let bs = cfg.batch_size.min(n);
    let mut losses = Vec::with_capacity(cfg.steps);
    let rows = |idx: &[usize], src: &[f32], dim: usize| -> Vec<f32> {
        idx.iter()
            .flat_map(|&i| src[i * dim..(i + 1) * dim].iter().copied())
            .collect()
    };
    for step in 0..cfg.steps {
        if cursor + bs > n {
            order.shuffle(&mut rng);
            cursor = 0;
        }
        let idx = &order[cursor..cursor + bs];
        cursor += bs;
        let q = model.lambdas(
            &rows(idx, &data.obs, OBS_DIM),
            &rows(idx, &data.act, ACT_DIM),
        )?;
        let q_next = model.lambdas(
            &rows(idx, &data.next_obs, OBS_DIM),
            &rows(idx, &data.next_act, ACT_DIM),
        )?;
        let a: Vec<u32> = idx.iter().map(|&i| data.clicks[i]).collect();
        let d: Vec<f32> = idx.iter().map(|&i| data.done[i]).collect();
        let a = Tensor::from_vec(a, bs, device)?;
        let d = Tensor::from_vec(d, bs, device)?;
        let loss = qr_iql_loss(&q, &a, &q_next, &d, &iq)?;
        let v = f64::from(loss.to_scalar::<f32>()?);
        if !v.is_finite() {
            return Err(Rq2Error::Training(format!(
                "mental reward: loss {v} at step {step}"
            )));
        }
        opt.backward_step(&loss)?;
        losses.push(v);
        if (step + 1) % (cfg.steps / 100).max(1) == 0 || step + 1 == cfg.steps {
            on_step(step + 1, cfg.steps);
        }
    }
    let tenth = (losses.len() / 10).max(1);
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len().max(1) as f64;
    let agreement = argmax_agreement(&model, data)?;
    let fit = MentalFit {
        transitions: n,
        steps: cfg.steps,
        first_loss: mean(&losses[..tenth.min(losses.len())]),
        last_loss: mean(&losses[losses.len().saturating_sub(tenth)..]),
        expert_argmax_agreement: agreement,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((varmap, model, fit))
}

/// Share of transitions where the realised clicks maximise the head-mean Q.
fn argmax_agreement(model: &MentalReward, data: &Transitions) -> Result<f64> {
    let n = data.len();
    let mut hits = 0usize;
    for start in (0..n).step_by(4096) {
        let end = (start + 4096).min(n);
        let q = model
            .lambdas(
                &data.obs[start * OBS_DIM..end * OBS_DIM],
                &data.act[start * ACT_DIM..end * ACT_DIM],
            )?
            .mean(2)?
            .argmax(1)?
            .to_vec1::<u32>()?;
        hits += q
            .iter()
            .zip(&data.clicks[start..end])
            .filter(|(a, b)| a == b)
            .count();
    }
    Ok(hits as f64 / n.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// Episodes of 4 pages whose expert clicks 9 times when the action's first coordinate is
    /// positive and once otherwise.
    fn synthetic(n_episodes: usize, seed: u64) -> Transitions {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut t = Transitions::default();
        for _ in 0..n_episodes {
            let user = rng.random_range(0..88);
            let mut obs = vec![0f32; OBS_DIM];
            obs[user] = 1.0;
            let mut act: Vec<f32> = (0..ACT_DIM).map(|_| rng.random_range(-1.0..1.0)).collect();
            for page in 0..4 {
                let clicks = if act[0] > 0.0 { 9 } else { 1 };
                let mut next = obs.clone();
                next[88] = clicks as f32 / 10.0;
                next[90] = (page + 1) as f32 / 100.0;
                let next_act: Vec<f32> =
                    (0..ACT_DIM).map(|_| rng.random_range(-1.0..1.0)).collect();
                t.obs.extend_from_slice(&obs);
                t.act.extend_from_slice(&act);
                t.clicks.push(clicks);
                t.next_obs.extend_from_slice(&next);
                t.next_act.extend_from_slice(&next_act);
                t.done.push(if page == 3 { 1.0 } else { 0.0 });
                obs = next;
                act = next_act;
            }
        }
        t
    }

    #[test]
    fn features_join_observation_and_clipped_action() {
        let mut obs = vec![0f32; OBS_DIM];
        obs[3] = 1.0;
        obs[88] = 0.5;
        obs[89] = 1.0;
        obs[90] = 0.5;
        let mut act = vec![0.5f32; ACT_DIM];
        act[0] = 3.0;
        act[1] = -2.0;
        let x = features(&obs, &act);
        assert_eq!(x.len(), OBS_DIM + ACT_DIM);
        assert_eq!(x[3], 1.0);
        assert_eq!(&x[88..91], &[0.5, 1.0, 0.5]);
        assert_eq!(&x[91..94], &[1.0, -1.0, 0.5]);
    }

    #[test]
    fn mental_reward_learns_which_clicks_the_expert_chooses() {
        let data = synthetic(200, 7);
        let cfg = MentalConfig {
            hidden: [64, 64],
            steps: 300,
            batch_size: 128,
            ..MentalConfig::default()
        };
        let (_, model, fit) = fit_mental(&data, cfg, 3, &Device::Cpu).unwrap();
        assert!(fit.last_loss < fit.first_loss, "{fit:?}");
        assert!(fit.expert_argmax_agreement > 0.95, "{fit:?}");
        // The realised (expert) clicks earn more mental reward than any other click count.
        let n = 32;
        let r_expert = model
            .rewards(
                &data.obs[..n * OBS_DIM],
                &data.act[..n * ACT_DIM],
                &data.clicks[..n],
                &data.next_obs[..n * OBS_DIM],
                &data.act[..n * ACT_DIM],
                &data.done[..n],
            )
            .unwrap();
        let other: Vec<u32> = data.clicks[..n].iter().map(|&c| 10 - c).collect();
        let r_other = model
            .rewards(
                &data.obs[..n * OBS_DIM],
                &data.act[..n * ACT_DIM],
                &other,
                &data.next_obs[..n * OBS_DIM],
                &data.act[..n * ACT_DIM],
                &data.done[..n],
            )
            .unwrap();
        let better = r_expert.iter().zip(&r_other).filter(|(a, b)| a > b).count();
        assert!(better >= n - 1, "{better}/{n}: {r_expert:?} vs {r_other:?}");
        // Same seed, same fit.
        let (_, _, again) = fit_mental(&data, cfg, 3, &Device::Cpu).unwrap();
        assert_eq!(fit.last_loss, again.last_loss);
    }

    #[test]
    fn bad_transitions_are_errors() {
        let mut t = synthetic(2, 1);
        t.clicks[0] = 11;
        assert!(matches!(t.validate(), Err(Rq2Error::Data(m)) if m.contains("11")));
        let mut t = synthetic(2, 1);
        t.obs.pop();
        assert!(t.validate().is_err());
        let empty = Transitions::default();
        assert!(fit_mental(&empty, MentalConfig::default(), 1, &Device::Cpu).is_err());
        let bad = MentalConfig {
            quantiles: 0,
            ..MentalConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
