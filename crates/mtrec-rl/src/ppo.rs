//! PPO-clip (Schulman et al. 2017) for continuous actions, following Stable-Baselines3's `PPO`
//! with `MlpPolicy` (the reference point of `specs/virtualtaobao.md` §5).
//!
//! * Policy: a diagonal Gaussian whose mean is an MLP of the observation (identity output, or
//!   `tanh` mapped onto the action box with [`PpoConfig::squash_mean`]) and whose log standard
//!   deviation is one state-independent parameter per action dimension (init
//!   [`PpoConfig::log_std_init`]). Critic: a separate MLP. Both `tanh`, 2×64 by default,
//!   orthogonal initialisation with SB3's gains (√2 hidden, 0.01 policy output, 1 value output).
//! * Actions: the sample `u ~ N(mean, σ²)` is stored and its log-probability used in the ratio;
//!   the environment receives `clip(u, low, high)` (SB3): the clipped action's density would be a
//!   mixture with point masses on the bounds.
//! * Rollouts of `n_steps` vector steps; GAE(λ) ([`crate::compute_gae`]) bootstrapping from
//!   `V(terminal observation)` on truncation and from nothing on termination; the last
//!   observation of the rollout is bootstrapped from `V(s_T)`.
//! * `n_epochs` passes over shuffled minibatches of `batch_size`: advantages normalised per
//!   minibatch, clipped surrogate ([`ppo_clip_loss`]), value loss ([`ppo_value_loss`], optionally
//!   clipped), entropy bonus, one Adam step on `pg + ent_coef·(−H) + vf_coef·L_V` after global
//!   grad-norm clipping; optional early stop on the approximate KL (`target_kl`, SB3's rule).

use std::path::Path;

use candle_core::{Device, Tensor, Var, D};
use candle_nn::VarMap;
use mtrec_train::{Adam, AdamConfig};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::dist::{gaussian_entropy, gaussian_log_prob};
use crate::env::{Env, EnvSpec};
use crate::error::{Result, RlError};
use crate::eval::Policy;
use crate::gae::compute_gae;
use crate::hook::{current_obs, step_shaped, RewardHook};
use crate::log::{close_point, run_callback, EpisodeTracker, LogPoint, LossMeans, TrainLog};
use crate::nets::{
    clip_grad_norm, host, rng, rows, sorted_vars, standard_normal, Activation, Mlp, ParamFactory,
    WeightInit,
};

const ALGO: &str = "ppo";

/// PPO's settings. Defaults are SB3's `PPO` defaults (SB3 2.x) unless noted; unknown keys are
/// rejected. The third-party Virtual Taobao runs of spec §5 used `n_steps: 64, batch_size: 64,
/// gamma: 0.997` with the rest at these defaults; CIRS used `learning_rate: 1e-3, gamma: 0.95,
/// vf_coef: 0.25, clip_range_vf` (value clipping) and `n_epochs: 2`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PpoConfig {
    /// Seeds the initial weights, the action noise and the minibatch shuffles.
    pub seed: u64,
    /// Vector steps per rollout (each collects `num_envs` transitions). SB3: 2048.
    pub n_steps: usize,
    /// Minibatch size (transitions); the last minibatch of an epoch may be smaller. SB3: 64.
    pub batch_size: usize,
    /// Passes over the rollout per update. SB3: 10.
    pub n_epochs: usize,
    /// Discount. SB3: 0.99.
    pub gamma: f64,
    /// GAE λ. SB3: 0.95.
    pub gae_lambda: f64,
    /// Ratio clip ε. SB3: 0.2.
    pub clip_range: f64,
    /// Value clip around the rollout's values; `None` (SB3's default) = unclipped. When set, the
    /// loss is `max((V − R)², (V_clip − R)²)` (PPO2/tianshou form; SB3 uses the clipped term only).
    pub clip_range_vf: Option<f64>,
    /// Normalise advantages per minibatch (mean 0, std 1). SB3: true.
    pub normalize_advantage: bool,
    /// Entropy bonus weight. SB3: 0.
    pub ent_coef: f64,
    /// Value loss weight. SB3: 0.5.
    pub vf_coef: f64,
    /// Global L2 norm the gradient is clipped to; `None` = no clipping. SB3: 0.5.
    pub max_grad_norm: Option<f64>,
    /// Adam learning rate (constant). SB3: 3e-4.
    pub learning_rate: f64,
    /// Adam ε. SB3 sets 1e-5 for its actor-critic policies (not PyTorch's 1e-8).
    pub adam_eps: f64,
    /// Stop the epochs of an update once the approximate KL exceeds `1.5·target_kl`. SB3: None.
    pub target_kl: Option<f64>,
    /// Hidden sizes of the policy MLP. SB3: [64, 64].
    pub pi_hidden: Vec<usize>,
    /// Hidden sizes of the value MLP. SB3: [64, 64].
    pub vf_hidden: Vec<usize>,
    /// Hidden activation. SB3: tanh.
    pub activation: Activation,
    /// Initial log standard deviation. SB3: 0.
    pub log_std_init: f64,
    /// Orthogonal initialisation with SB3's gains; `false` = PyTorch's `nn.Linear` default.
    /// SB3: true.
    pub ortho_init: bool,
    /// Put the Gaussian mean through `tanh`, mapped onto the action box (ours; SB3 has an
    /// identity mean). Keeps the mean inside the box while σ explores around it.
    pub squash_mean: bool,
}

impl Default for PpoConfig {
    fn default() -> Self {
        PpoConfig {
            seed: 0,
            n_steps: 2048,
            batch_size: 64,
            n_epochs: 10,
            gamma: 0.99,
            gae_lambda: 0.95,
            clip_range: 0.2,
            clip_range_vf: None,
            normalize_advantage: true,
            ent_coef: 0.0,
            vf_coef: 0.5,
            max_grad_norm: Some(0.5),
            learning_rate: 3e-4,
            adam_eps: 1e-5,
            target_kl: None,
            pi_hidden: vec![64, 64],
            vf_hidden: vec![64, 64],
            activation: Activation::Tanh,
            log_std_init: 0.0,
            ortho_init: true,
            squash_mean: false,
        }
    }
}

impl PpoConfig {
    /// Checks every setting's domain.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(RlError::config(ALGO, m));
        if self.n_steps == 0 || self.batch_size == 0 || self.n_epochs == 0 {
            return bad(format!(
                "n_steps ({}), batch_size ({}) and n_epochs ({}) must be positive",
                self.n_steps, self.batch_size, self.n_epochs
            ));
        }
        if !(0.0..=1.0).contains(&self.gamma) || !(0.0..=1.0).contains(&self.gae_lambda) {
            return bad(format!(
                "gamma ({}) and gae_lambda ({}) must be in [0, 1]",
                self.gamma, self.gae_lambda
            ));
        }
        if !positive(self.clip_range) {
            return bad(format!("clip_range ({}) must be positive", self.clip_range));
        }
        if let Some(c) = self.clip_range_vf {
            if !positive(c) {
                return bad(format!("clip_range_vf ({c}) must be positive"));
            }
        }
        if let Some(m) = self.max_grad_norm {
            if !positive(m) {
                return bad(format!("max_grad_norm ({m}) must be positive"));
            }
        }
        if let Some(k) = self.target_kl {
            if !positive(k) {
                return bad(format!("target_kl ({k}) must be positive"));
            }
        }
        if !positive(self.learning_rate) || !positive(self.adam_eps) {
            return bad(format!(
                "learning_rate ({}) and adam_eps ({}) must be positive",
                self.learning_rate, self.adam_eps
            ));
        }
        let finite = [self.ent_coef, self.vf_coef, self.log_std_init];
        if finite.iter().any(|x| !x.is_finite()) || self.vf_coef < 0.0 {
            return bad(format!(
                "ent_coef ({}), vf_coef ({} ≥ 0) and log_std_init ({}) must be finite",
                self.ent_coef, self.vf_coef, self.log_std_init
            ));
        }
        if self.pi_hidden.contains(&0) || self.vf_hidden.contains(&0) {
            return bad("hidden sizes must be positive".into());
        }
        Ok(())
    }
}

/// The clipped surrogate loss `−mean(min(ρ·A, clip(ρ, 1−ε, 1+ε)·A))` with `ρ = exp(logp − logp_old)`.
/// Returns `(loss, ρ)`.
pub fn ppo_clip_loss(
    log_prob: &Tensor,
    old_log_prob: &Tensor,
    advantages: &Tensor,
    clip_range: f64,
) -> candle_core::Result<(Tensor, Tensor)> {
    let ratio = (log_prob - old_log_prob)?.exp()?;
    let surr1 = (&ratio * advantages)?;
    let surr2 = (ratio.clamp(1.0 - clip_range, 1.0 + clip_range)? * advantages)?;
    let loss = surr1.minimum(&surr2)?.mean_all()?.neg()?;
    Ok((loss, ratio))
}

/// The value loss: `mean((V − R)²)`, or with `clip = Some(c)`,
/// `mean(max((V − R)², (V_old + clip(V − V_old, −c, c) − R)²))`.
pub fn ppo_value_loss(
    values: &Tensor,
    old_values: &Tensor,
    returns: &Tensor,
    clip: Option<f64>,
) -> candle_core::Result<Tensor> {
    let unclipped = (values - returns)?.sqr()?;
    match clip {
        None => unclipped.mean_all(),
        Some(c) => {
            let v_clip = (old_values + (values - old_values)?.clamp(-c, c)?)?;
            let clipped = (v_clip - returns)?.sqr()?;
            unclipped.maximum(&clipped)?.mean_all()
        }
    }
}

/// A PPO agent: policy, critic, optimiser and the state of the run (random streams, counters,
/// the episodes in progress).
pub struct Ppo {
    cfg: PpoConfig,
    spec: EnvSpec,
    device: Device,
    varmap: VarMap,
    vars: Vec<Var>,
    actor: Mlp,
    critic: Mlp,
    log_std: Tensor,
    opt: Adam,
    noise_rng: ChaCha8Rng,
    shuffle_rng: ChaCha8Rng,
    env_steps: u64,
    updates: u64,
    tracker: Option<EpisodeTracker>,
}

impl std::fmt::Debug for Ppo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ppo")
            .field("cfg", &self.cfg)
            .field("spec", &self.spec)
            .field("env_steps", &self.env_steps)
            .field("updates", &self.updates)
            .finish()
    }
}

/// The rollout of one update, time-major (`t·num_envs + i`).
#[derive(Default)]
struct Rollout {
    obs: Vec<f32>,
    actions: Vec<f32>,
    log_probs: Vec<f32>,
    values: Vec<f32>,
    rewards: Vec<f32>,
    next_values: Vec<f32>,
    terminated: Vec<bool>,
    ended: Vec<bool>,
}

impl Ppo {
    /// A new agent for environments of `spec`, on `device` (f32).
    pub fn new(cfg: PpoConfig, spec: EnvSpec, device: &Device) -> Result<Self> {
        cfg.validate()?;
        spec.validate(ALGO)?;
        let varmap = VarMap::new();
        let f = ParamFactory {
            varmap: &varmap,
            seed: cfg.seed,
            device,
        };
        let (hidden, pi_out, vf_out) = if cfg.ortho_init {
            (
                WeightInit::Orthogonal {
                    gain: std::f64::consts::SQRT_2,
                },
                WeightInit::Orthogonal { gain: 0.01 },
                WeightInit::Orthogonal { gain: 1.0 },
            )
        } else {
            (
                WeightInit::TorchDefault,
                WeightInit::TorchDefault,
                WeightInit::TorchDefault,
            )
        };
        let sizes = |hidden: &[usize], out: usize| {
            let mut s = vec![spec.obs_dim];
            s.extend_from_slice(hidden);
            s.push(out);
            s
        };
        let actor = Mlp::new(
            &f,
            "actor",
            &sizes(&cfg.pi_hidden, spec.act_dim),
            cfg.activation,
            hidden,
            pi_out,
        )?;
        let critic = Mlp::new(
            &f,
            "critic",
            &sizes(&cfg.vf_hidden, 1),
            cfg.activation,
            hidden,
            vf_out,
        )?;
        let log_std = f.var(
            "log_std",
            spec.act_dim,
            vec![cfg.log_std_init; spec.act_dim],
        )?;
        let vars = sorted_vars(&varmap)?.into_iter().map(|(_, v)| v).collect();
        let opt = Adam::new(&varmap, Self::adam_config(&cfg))?;
        Ok(Ppo {
            noise_rng: rng(cfg.seed, 1),
            shuffle_rng: rng(cfg.seed, 2),
            cfg,
            spec,
            device: device.clone(),
            varmap,
            vars,
            actor,
            critic,
            log_std,
            opt,
            env_steps: 0,
            updates: 0,
            tracker: None,
        })
    }

    fn adam_config(cfg: &PpoConfig) -> AdamConfig {
        AdamConfig {
            lr: cfg.learning_rate,
            beta1: 0.9,
            beta2: 0.999,
            eps: cfg.adam_eps,
        }
    }

    pub fn config(&self) -> &PpoConfig {
        &self.cfg
    }

    /// Transitions collected over the agent's life.
    pub fn env_steps(&self) -> u64 {
        self.env_steps
    }

    /// Gradient steps taken over the agent's life.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// The current state-independent standard deviations.
    pub fn std(&self) -> Result<Vec<f32>> {
        Ok(host(&self.log_std.exp()?)?)
    }

    /// Every parameter by name (sorted), as host floats: for tests and inspection.
    pub fn named_parameters(&self) -> Result<Vec<(String, Vec<f32>)>> {
        sorted_vars(&self.varmap)?
            .into_iter()
            .map(|(k, v)| Ok((k, host(v.as_tensor())?)))
            .collect()
    }

    /// Gaussian mean `[B, A]` of observations `[B, obs_dim]`.
    fn mean(&self, obs: &Tensor) -> candle_core::Result<Tensor> {
        let m = self.actor.forward(obs)?;
        if self.cfg.squash_mean {
            let (lo, hi) = (
                f64::from(self.spec.action_low),
                f64::from(self.spec.action_high),
            );
            (m.tanh()? + 1.0)?.affine(0.5 * (hi - lo), lo)
        } else {
            Ok(m)
        }
    }

    /// `V(s)` `[B]`.
    fn value(&self, obs: &Tensor) -> candle_core::Result<Tensor> {
        self.critic.forward(obs)?.squeeze(D::Minus1)
    }

    fn obs_tensor(&self, obs: &[f32]) -> Result<(Tensor, usize)> {
        let d = self.spec.obs_dim;
        if obs.is_empty() || obs.len() % d != 0 {
            return Err(RlError::Shape(format!(
                "{} observation floats is not a multiple of obs_dim {d}",
                obs.len()
            )));
        }
        let n = obs.len() / d;
        Ok((rows(obs, n, d, &self.device)?, n))
    }

    /// `V(s)` of each row of `obs`.
    pub fn predict_values(&self, obs: &[f32]) -> Result<Vec<f32>> {
        let (t, _) = self.obs_tensor(obs)?;
        Ok(host(&self.value(&t)?)?)
    }

    fn clip_action(&self, a: f32) -> f32 {
        a.clamp(self.spec.action_low, self.spec.action_high)
    }

    /// Trains for at least `total_env_steps` transitions (whole rollouts of `n_steps × num_envs`)
    /// on `r_env + hook`, returning one [`LogPoint`] per update. Episodes in progress carry over
    /// to the next call when the same environment is passed again.
    pub fn learn<E, H>(
        &mut self,
        env: &mut E,
        hook: &mut H,
        total_env_steps: u64,
    ) -> Result<TrainLog>
    where
        E: Env + ?Sized,
        H: RewardHook + ?Sized,
    {
        self.learn_with_callback(env, hook, total_env_steps, |_, _| Ok(()))
    }

    /// [`Ppo::learn`], calling `callback(agent, point)` after every update (e.g. to evaluate the
    /// deterministic policy on another environment with [`crate::evaluate`]); an error from the
    /// callback stops training.
    pub fn learn_with_callback<E, H, C>(
        &mut self,
        env: &mut E,
        hook: &mut H,
        total_env_steps: u64,
        mut callback: C,
    ) -> Result<TrainLog>
    where
        E: Env + ?Sized,
        H: RewardHook + ?Sized,
        C: FnMut(&Ppo, &LogPoint) -> std::result::Result<(), crate::EnvError>,
    {
        self.spec.check_env(ALGO, env)?;
        let n = env.num_envs();
        EpisodeTracker::keep_or_new(&mut self.tracker, n);
        let per_rollout = (self.cfg.n_steps * n) as u64;
        let mut log = TrainLog {
            algo: ALGO.into(),
            points: Vec::new(),
        };
        let mut done_steps = 0u64;
        while done_steps < total_env_steps {
            let rollout = self.collect(env, hook)?;
            done_steps += per_rollout;
            let losses = self.update(&rollout, n)?;
            let point = close_point(
                self.tracker.as_mut(),
                self.env_steps,
                self.updates,
                losses,
                "ppo update",
            );
            run_callback(&mut callback, self, &point, self.env_steps)?;
            log.points.push(point);
        }
        Ok(log)
    }

    /// One rollout of `n_steps` vector steps.
    fn collect<E, H>(&mut self, env: &mut E, hook: &mut H) -> Result<Rollout>
    where
        E: Env + ?Sized,
        H: RewardHook + ?Sized,
    {
        let n = env.num_envs();
        let (od, ad) = (self.spec.obs_dim, self.spec.act_dim);
        let t_max = self.cfg.n_steps;
        let mut r = Rollout::default();
        let std = self.std()?;
        for _ in 0..t_max {
            let obs = current_obs(env, od, self.env_steps)?;
            let obs_t = rows(&obs, n, od, &self.device)?;
            let mean = self.mean(&obs_t)?.detach();
            let values = host(&self.value(&obs_t)?)?;
            let mean_h = host(&mean)?;
            let eps = standard_normal(&mut self.noise_rng, n * ad);
            let u: Vec<f32> = (0..n * ad)
                .map(|k| mean_h[k] + std[k % ad] * eps[k])
                .collect();
            let u_t = rows(&u, n, ad, &self.device)?;
            let logp = host(&gaussian_log_prob(&u_t, &mean, &self.log_std.detach())?)?;
            let clipped: Vec<f32> = u.iter().map(|&a| self.clip_action(a)).collect();
            let (step, shaped) = step_shaped(env, hook, &obs, &clipped, od, self.env_steps)?;
            if let Some(t) = self.tracker.as_mut() {
                t.record(&step, &shaped);
            }
            self.env_steps += n as u64;
            // Bootstrap values of truncated slots: V(terminal observation).
            let trunc: Vec<usize> = (0..n)
                .filter(|&i| step.truncated[i] && !step.dones[i])
                .collect();
            let mut next_values = vec![0.0f32; n];
            if !trunc.is_empty() {
                let term_obs: Vec<f32> = trunc
                    .iter()
                    .flat_map(|&i| step.next_obs[i * od..(i + 1) * od].iter().copied())
                    .collect();
                let v = self.predict_values(&term_obs)?;
                for (k, &i) in trunc.iter().enumerate() {
                    next_values[i] = v[k];
                }
            }
            r.obs.extend_from_slice(&obs);
            r.actions.extend_from_slice(&u);
            r.log_probs.extend_from_slice(&logp);
            r.values.extend_from_slice(&values);
            r.rewards.extend_from_slice(&shaped);
            r.next_values.extend_from_slice(&next_values);
            for i in 0..n {
                r.terminated.push(step.dones[i]);
                r.ended.push(step.dones[i] || step.truncated[i]);
            }
        }
        // Inside an episode the next value is V(s_{t+1}); after the last step, V(s_T).
        let last = self.predict_values(env.obs())?;
        if last.len() != n {
            return Err(RlError::EnvContract {
                env_steps: self.env_steps,
                message: format!("obs() holds {} rows for {n} slots", last.len()),
            });
        }
        for k in 0..t_max * n {
            if !r.ended[k] {
                r.next_values[k] = if k + n < t_max * n {
                    r.values[k + n]
                } else {
                    last[k % n]
                };
            }
        }
        Ok(r)
    }

    fn non_finite(&self, what: &str, value: f64) -> RlError {
        RlError::NonFinite {
            algo: ALGO,
            what: what.into(),
            value,
            update: self.updates + 1,
            env_steps: self.env_steps,
        }
    }

    /// `n_epochs` passes of minibatch updates over a rollout; returns the mean losses.
    fn update(
        &mut self,
        r: &Rollout,
        n_envs: usize,
    ) -> Result<std::collections::BTreeMap<String, f64>> {
        let (adv, returns) = compute_gae(
            &r.rewards,
            &r.values,
            &r.next_values,
            &r.terminated,
            &r.ended,
            n_envs,
            self.cfg.gamma,
            self.cfg.gae_lambda,
        )?;
        let total = r.rewards.len();
        let (od, ad) = (self.spec.obs_dim, self.spec.act_dim);
        let mut losses = LossMeans::default();
        let mut idx: Vec<usize> = (0..total).collect();
        let mut stop = false;
        for _ in 0..self.cfg.n_epochs {
            shuffle(&mut idx, &mut self.shuffle_rng);
            for chunk in idx.chunks(self.cfg.batch_size) {
                let b = chunk.len();
                let gather = |src: &[f32], d: usize| -> Vec<f32> {
                    chunk
                        .iter()
                        .flat_map(|&k| src[k * d..(k + 1) * d].iter().copied())
                        .collect()
                };
                let obs_t = rows(&gather(&r.obs, od), b, od, &self.device)?;
                let act_t = rows(&gather(&r.actions, ad), b, ad, &self.device)?;
                let one = |src: &[f32]| -> candle_core::Result<Tensor> {
                    Tensor::from_vec(chunk.iter().map(|&k| src[k]).collect(), b, &Device::Cpu)?
                        .to_device(&self.device)
                };
                let old_logp = one(&r.log_probs)?;
                let old_v = one(&r.values)?;
                let ret = one(&returns)?;
                let mut a: Vec<f32> = chunk.iter().map(|&k| adv[k]).collect();
                if self.cfg.normalize_advantage && b > 1 {
                    normalize(&mut a);
                }
                let adv_t = Tensor::from_vec(a, b, &Device::Cpu)?.to_device(&self.device)?;

                let mean = self.mean(&obs_t)?;
                let logp = gaussian_log_prob(&act_t, &mean, &self.log_std)?;
                let (pg_loss, ratio) =
                    ppo_clip_loss(&logp, &old_logp, &adv_t, self.cfg.clip_range)?;
                let v = self.value(&obs_t)?;
                let v_loss = ppo_value_loss(&v, &old_v, &ret, self.cfg.clip_range_vf)?;
                let ent_loss = gaussian_entropy(&self.log_std)?.neg()?;
                let loss = ((&pg_loss + (&ent_loss * self.cfg.ent_coef)?)?
                    + (&v_loss * self.cfg.vf_coef)?)?;

                let loss_v = scalar(&loss)?;
                if !loss_v.is_finite() {
                    return Err(self.non_finite("PPO loss", loss_v));
                }
                let ratio_h = host(&ratio)?;
                let log_ratio = (&logp - &old_logp)?;
                let approx_kl = scalar(&((ratio.clone() - 1.0)? - &log_ratio)?.mean_all()?)?;
                let clip_frac = ratio_h
                    .iter()
                    .filter(|&&x| (f64::from(x) - 1.0).abs() > self.cfg.clip_range)
                    .count() as f64
                    / b as f64;
                losses.add("policy_gradient_loss", scalar(&pg_loss)?);
                losses.add("value_loss", scalar(&v_loss)?);
                losses.add("entropy_loss", scalar(&ent_loss)?);
                losses.add("loss", loss_v);
                losses.add("approx_kl", approx_kl);
                losses.add("clip_fraction", clip_frac);
                if let Some(t) = self.cfg.target_kl {
                    if approx_kl > 1.5 * t {
                        stop = true;
                        break;
                    }
                }
                let mut grads = loss.backward()?;
                if let Some(m) = self.cfg.max_grad_norm {
                    let norm = clip_grad_norm(&mut grads, &self.vars, m)?;
                    if !norm.is_finite() {
                        return Err(self.non_finite("gradient norm", norm));
                    }
                    losses.add("grad_norm", norm);
                }
                self.opt.step(&grads)?;
                self.updates += 1;
            }
            if stop {
                break;
            }
        }
        losses.set(
            "explained_variance",
            explained_variance(&r.values, &returns),
        );
        let std = self.std()?;
        losses.set(
            "std",
            std.iter().map(|&s| f64::from(s)).sum::<f64>() / std.len() as f64,
        );
        Ok(losses.take())
    }

    /// Writes every weight (policy, log std and critic) to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.varmap.save(path).map_err(|e| RlError::Weights {
            path: path.to_owned(),
            message: mtrec_train::candle_message(&e),
        })
    }

    /// Reads weights written by [`Ppo::save`] for the same architecture. The optimiser restarts
    /// (fresh Adam moments): the file holds weights, not a training state.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let mut vm = self.varmap.clone();
        vm.load(path).map_err(|e| RlError::Weights {
            path: path.to_owned(),
            message: mtrec_train::candle_message(&e),
        })?;
        self.opt = Adam::new(&self.varmap, Self::adam_config(&self.cfg))?;
        Ok(())
    }
}

impl Policy for Ppo {
    fn spec(&self) -> EnvSpec {
        self.spec
    }

    /// The Gaussian mean, clipped to the action box.
    fn act_deterministic(&self, obs: &[f32]) -> Result<Vec<f32>> {
        let (t, _) = self.obs_tensor(obs)?;
        let m = host(&self.mean(&t)?)?;
        Ok(m.into_iter().map(|a| self.clip_action(a)).collect())
    }
}

/// `x > 0` and finite (false for NaN).
pub(crate) fn positive(x: f64) -> bool {
    x > 0.0 && x.is_finite()
}

/// A scalar tensor's value in f64.
pub(crate) fn scalar(t: &Tensor) -> candle_core::Result<f64> {
    t.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()
}

/// Fisher–Yates shuffle from our own generator (stable across `rand` versions).
pub(crate) fn shuffle(idx: &mut [usize], rng: &mut ChaCha8Rng) {
    for i in (1..idx.len()).rev() {
        let j = rng.random_range(0..=i);
        idx.swap(i, j);
    }
}

/// `(a − mean) / (std + 1e-8)` with the sample (n − 1) standard deviation, as SB3 (torch `std`).
fn normalize(a: &mut [f32]) {
    let n = a.len() as f64;
    let mean = a.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = a
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / (n - 1.0).max(1.0);
    let sd = var.sqrt() + 1e-8;
    for x in a.iter_mut() {
        *x = ((f64::from(*x) - mean) / sd) as f32;
    }
}

/// `1 − Var(R − V) / Var(R)` (NaN-free: 0 when the returns are constant).
fn explained_variance(values: &[f32], returns: &[f32]) -> f64 {
    let n = returns.len() as f64;
    if n == 0.0 {
        return 0.0;
    }
    let var = |x: &mut dyn Iterator<Item = f64>| {
        let v: Vec<f64> = x.collect();
        let m = v.iter().sum::<f64>() / n;
        v.iter().map(|y| (y - m).powi(2)).sum::<f64>() / n
    };
    let vr = var(&mut returns.iter().map(|&r| f64::from(r)));
    if vr == 0.0 {
        return 0.0;
    }
    let vd = var(&mut returns
        .iter()
        .zip(values)
        .map(|(&r, &v)| f64::from(r) - f64::from(v)));
    1.0 - vd / vr
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand computation: ρ = exp(Δ) for Δ = (0.5, −0.5, 0.1, 0), A = (1, 1, −2, 3), ε = 0.2.
    #[test]
    fn clipped_objective_matches_hand_computation() {
        let dev = Device::Cpu;
        let d = [0.5f64, -0.5, 0.1, 0.0];
        let adv = [1.0f64, 1.0, -2.0, 3.0];
        let logp = Tensor::new(&d, &dev).unwrap();
        let old = Tensor::zeros(4, candle_core::DType::F64, &dev).unwrap();
        let a = Tensor::new(&adv, &dev).unwrap();
        let (loss, ratio) = ppo_clip_loss(&logp, &old, &a, 0.2).unwrap();
        // Terms: min(1.6487·1, 1.2·1) = 1.2; min(0.6065, 0.8) = 0.6065;
        // min(1.1052·(−2), 1.1052·(−2)) = −2.2103; min(3, 3) = 3.
        let r: Vec<f64> = d.iter().map(|x| x.exp()).collect();
        let terms = [1.2f64, r[1], r[2] * -2.0, 3.0];
        let want = -terms.iter().sum::<f64>() / 4.0;
        let got: f64 = loss.to_scalar().unwrap();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        assert_eq!(ratio.to_vec1::<f64>().unwrap(), r);
        // The negative advantage below 1−ε takes the clipped (more pessimistic) term.
        let (l2, _) = ppo_clip_loss(
            &Tensor::new(&[-0.5f64], &dev).unwrap(),
            &Tensor::new(&[0.0f64], &dev).unwrap(),
            &Tensor::new(&[-1.0f64], &dev).unwrap(),
            0.2,
        )
        .unwrap();
        assert!((l2.to_scalar::<f64>().unwrap() - 0.8).abs() < 1e-12);
        // Gradient is zero where the clipped term is active (first element) and ρ·A elsewhere.
        let lv = candle_core::Var::new(&d, &dev).unwrap();
        let (l, _) = ppo_clip_loss(lv.as_tensor(), &old, &a, 0.2).unwrap();
        let g: Vec<f64> = l
            .backward()
            .unwrap()
            .get(lv.as_tensor())
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(g[0], 0.0);
        assert!((g[1] - (-r[1] / 4.0)).abs() < 1e-12);
        assert!((g[3] - (-3.0 / 4.0)).abs() < 1e-12);
    }

    #[test]
    fn every_parameter_gets_a_gradient_and_squash_mean_stays_in_the_box() {
        let spec = EnvSpec {
            obs_dim: 3,
            act_dim: 2,
            action_low: 0.0,
            action_high: 4.0,
        };
        let cfg = PpoConfig {
            pi_hidden: vec![5, 4],
            vf_hidden: vec![6],
            squash_mean: true,
            ..PpoConfig::default()
        };
        let ppo = Ppo::new(cfg, spec, &Device::Cpu).unwrap();
        let obs = rows(&[0.1, -0.2, 0.3, 1.0, 0.5, -1.0], 2, 3, &Device::Cpu).unwrap();
        let act = rows(&[0.5, 3.0, 2.0, 1.0], 2, 2, &Device::Cpu).unwrap();
        let mean = ppo.mean(&obs).unwrap();
        let logp = gaussian_log_prob(&act, &mean, &ppo.log_std).unwrap();
        let loss = (logp.mean_all().unwrap().neg().unwrap()
            + ppo.value(&obs).unwrap().sqr().unwrap().mean_all().unwrap())
        .unwrap();
        mtrec_nn::testing::assert_every_var_has_gradient(&ppo.varmap, &loss);
        // Policy output gain 0.01: tanh(≈0) maps to the middle of [0, 4].
        let a = ppo
            .act_deterministic(&[0.1, -0.2, 0.3, 1.0, 0.5, -1.0])
            .unwrap();
        assert!(a.iter().all(|x| (x - 2.0).abs() < 0.1), "{a:?}");
        assert_eq!(ppo.std().unwrap(), vec![1.0, 1.0]);
        assert!(ppo.act_deterministic(&[0.0; 4]).is_err());
    }

    #[test]
    fn value_loss_hand_values() {
        let dev = Device::Cpu;
        let v = Tensor::new(&[1.0f64, 0.0], &dev).unwrap();
        let v_old = Tensor::new(&[0.0f64, 0.0], &dev).unwrap();
        let r = Tensor::new(&[2.0f64, 1.0], &dev).unwrap();
        let plain: f64 = ppo_value_loss(&v, &v_old, &r, None)
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!((plain - 1.0).abs() < 1e-12); // (1 + 1) / 2
                                              // Clipped at 0.5: V_clip = (0.5, 0); max((1−2)², (0.5−2)²) = 2.25; second 1.
        let clipped: f64 = ppo_value_loss(&v, &v_old, &r, Some(0.5))
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!((clipped - 1.625).abs() < 1e-12, "{clipped}");
    }

    #[test]
    fn advantage_normalisation_and_explained_variance() {
        let mut a = [1.0f32, 2.0, 3.0];
        normalize(&mut a);
        assert!((a[0] + 1.0).abs() < 1e-6 && a[1].abs() < 1e-6 && (a[2] - 1.0).abs() < 1e-6);
        assert_eq!(explained_variance(&[1.0, 2.0], &[1.0, 2.0]), 1.0);
        assert_eq!(explained_variance(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
    }

    #[test]
    fn config_round_trips_and_rejects_unknown_keys_and_bad_values() {
        let cfg = PpoConfig::default();
        let s = serde_json::to_string(&cfg).unwrap();
        assert_eq!(serde_json::from_str::<PpoConfig>(&s).unwrap(), cfg);
        let partial: PpoConfig =
            serde_json::from_str(r#"{"n_steps": 64, "gamma": 0.997}"#).unwrap();
        assert_eq!(partial.n_steps, 64);
        assert_eq!(partial.batch_size, 64);
        assert!(serde_json::from_str::<PpoConfig>(r#"{"nsteps": 64}"#).is_err());
        for bad in [
            PpoConfig {
                batch_size: 0,
                ..PpoConfig::default()
            },
            PpoConfig {
                gamma: 1.5,
                ..PpoConfig::default()
            },
            PpoConfig {
                max_grad_norm: Some(0.0),
                ..PpoConfig::default()
            },
            PpoConfig {
                pi_hidden: vec![0],
                ..PpoConfig::default()
            },
        ] {
            let e = bad.validate().unwrap_err().to_string();
            assert!(e.contains("invalid ppo settings"), "{e}");
        }
    }
}
