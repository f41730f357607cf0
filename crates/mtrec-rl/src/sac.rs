//! Soft Actor-Critic (Haarnoja et al. 2018, with the learned temperature of the "SAC algorithms
//! and applications" version), following Stable-Baselines3's `SAC` with `MlpPolicy`.
//!
//! * Actor: an MLP trunk (2×256 ReLU) with a linear output of `2·act_dim` = (mean, log σ), log σ
//!   clamped to `[log_std_min, log_std_max]` = [−20, 2]; actions `a = tanh(u)`, `u ~ N(mean, σ²)`,
//!   with the log-density corrected by the tanh Jacobian ([`crate::squashed_log_prob`]).
//!   Actions live in `[−1, 1]` inside the agent (replay, critics, entropy target) and are mapped
//!   affinely onto the environment's box before `step`.
//! * Twin critics `Q₁, Q₂` on `[s, a]`, each with a target copy updated by Polyak averaging
//!   ([`crate::soft_update`], τ) every `target_update_interval` gradient steps.
//! * Per gradient step (SB3's order): temperature loss `−log α · (log π + H̄)` with the α of
//!   before its step; target `y = r + γ(1 − done)(min Q̄(s', a') − α log π(a'|s'))`; critic loss
//!   `½ Σᵢ mean (Qᵢ − y)²`; actor loss `mean(α log π − min Qᵢ(s, ã))` with the updated critics.
//! * `done` masks true terminations only; a truncated transition bootstraps from its terminal
//!   observation (the environment's `next_obs`).
//! * Uniform random actions until `learning_starts` transitions, then the stochastic actor;
//!   `gradient_steps` updates every `train_freq` vector steps.

use std::path::Path;

use candle_core::{Device, Tensor, Var, D};
use candle_nn::VarMap;
use mtrec_train::{Adam, AdamConfig};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::buffer::ReplayBuffer;
use crate::dist::squashed_log_prob;
use crate::env::{Env, EnvSpec};
use crate::error::{Result, RlError};
use crate::eval::Policy;
use crate::hook::{current_obs, step_shaped, RewardHook};
use crate::log::{close_point, run_callback, EpisodeTracker, LogPoint, LossMeans, TrainLog};
use crate::nets::{
    clip_grad_norm, host, rng, rows, soft_update, sorted_vars, standard_normal, Activation, Mlp,
    ParamFactory, WeightInit,
};
use crate::ppo::{positive, scalar};

const ALGO: &str = "sac";

/// The entropy weight α.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntCoef {
    /// Learned (`log α` by Adam) towards the target entropy, starting at `init` (SB3's
    /// `"auto"`, init 1.0).
    Auto { init: f64 },
    /// Fixed α (the third-party Virtual Taobao runs of spec §5 used 1/16, 1/32, 1/64).
    Fixed(f64),
}

/// SAC's settings. Defaults are SB3's `SAC` defaults (SB3 2.x) unless noted; unknown keys are
/// rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SacConfig {
    /// Seeds the initial weights, the exploration and the replay sampling.
    pub seed: u64,
    /// Adam learning rate of actor, critics and temperature. SB3: 3e-4.
    pub learning_rate: f64,
    /// Replay capacity (transitions). SB3: 1e6 (the Virtual Taobao SB3 runs: 1e5).
    pub buffer_size: usize,
    /// Transitions collected with uniform random actions before training starts. SB3: 100.
    pub learning_starts: u64,
    /// Minibatch size. SB3: 256.
    pub batch_size: usize,
    /// Polyak coefficient of the target critics. SB3: 0.005.
    pub tau: f64,
    /// Discount. SB3: 0.99.
    pub gamma: f64,
    /// Vector steps between training phases. SB3: 1.
    pub train_freq: u64,
    /// Gradient steps per training phase. SB3: 1.
    pub gradient_steps: usize,
    /// α, learned or fixed. SB3: auto, init 1.0.
    pub ent_coef: EntCoef,
    /// Target entropy of the learned α; `None` = `−act_dim` (SB3).
    pub target_entropy: Option<f64>,
    /// Gradient steps between target updates. SB3: 1.
    pub target_update_interval: u64,
    /// Hidden sizes of the actor trunk. SB3: [256, 256].
    pub pi_hidden: Vec<usize>,
    /// Hidden sizes of each critic. SB3: [256, 256].
    pub qf_hidden: Vec<usize>,
    /// Hidden activation. SB3: ReLU.
    pub activation: Activation,
    /// Clamp of the actor's log σ. SB3: [−20, 2].
    pub log_std_min: f64,
    pub log_std_max: f64,
    /// Global grad-norm clip of each network's step; `None` (SB3: no clipping for SAC).
    pub max_grad_norm: Option<f64>,
    /// Transitions between two training-curve points (ours; SB3 logs per episode count).
    pub log_interval: u64,
}

impl Default for SacConfig {
    fn default() -> Self {
        SacConfig {
            seed: 0,
            learning_rate: 3e-4,
            buffer_size: 1_000_000,
            learning_starts: 100,
            batch_size: 256,
            tau: 0.005,
            gamma: 0.99,
            train_freq: 1,
            gradient_steps: 1,
            ent_coef: EntCoef::Auto { init: 1.0 },
            target_entropy: None,
            target_update_interval: 1,
            pi_hidden: vec![256, 256],
            qf_hidden: vec![256, 256],
            activation: Activation::Relu,
            log_std_min: -20.0,
            log_std_max: 2.0,
            max_grad_norm: None,
            log_interval: 1000,
        }
    }
}

impl SacConfig {
    /// Checks every setting's domain.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(RlError::config(ALGO, m));
        if self.buffer_size == 0
            || self.batch_size == 0
            || self.train_freq == 0
            || self.target_update_interval == 0
            || self.log_interval == 0
        {
            return bad(format!(
                "buffer_size ({}), batch_size ({}), train_freq ({}), target_update_interval ({}) \
                 and log_interval ({}) must be positive",
                self.buffer_size,
                self.batch_size,
                self.train_freq,
                self.target_update_interval,
                self.log_interval
            ));
        }
        if !positive(self.learning_rate) {
            return bad(format!(
                "learning_rate ({}) must be positive",
                self.learning_rate
            ));
        }
        let tau_ok = positive(self.tau) && self.tau <= 1.0;
        if !(0.0..=1.0).contains(&self.gamma) || !tau_ok {
            return bad(format!(
                "gamma ({}) must be in [0, 1] and tau ({}) in (0, 1]",
                self.gamma, self.tau
            ));
        }
        match self.ent_coef {
            EntCoef::Auto { init } | EntCoef::Fixed(init) if !positive(init) => {
                return bad(format!("ent_coef ({init}) must be positive"));
            }
            _ => {}
        }
        if let Some(h) = self.target_entropy {
            if !h.is_finite() {
                return bad(format!("target_entropy ({h}) must be finite"));
            }
        }
        if self.log_std_min.partial_cmp(&self.log_std_max) != Some(std::cmp::Ordering::Less) {
            return bad(format!(
                "log_std_min ({}) must be below log_std_max ({})",
                self.log_std_min, self.log_std_max
            ));
        }
        if let Some(m) = self.max_grad_norm {
            if !positive(m) {
                return bad(format!("max_grad_norm ({m}) must be positive"));
            }
        }
        if self.pi_hidden.contains(&0) || self.qf_hidden.contains(&0) {
            return bad("hidden sizes must be positive".into());
        }
        Ok(())
    }
}

/// Two critics (one set of weights: online or target).
struct Critics {
    q1: Mlp,
    q2: Mlp,
}

impl Critics {
    fn new(f: &ParamFactory<'_>, sizes: &[usize], act: Activation) -> candle_core::Result<Self> {
        let i = WeightInit::TorchDefault;
        Ok(Critics {
            q1: Mlp::new(f, "qf0", sizes, act, i, i)?,
            q2: Mlp::new(f, "qf1", sizes, act, i, i)?,
        })
    }

    /// `(Q₁, Q₂)`, each `[B]`; `frozen`: no weight gradients (see `Mlp::forward_frozen`).
    fn forward(
        &self,
        obs: &Tensor,
        act: &Tensor,
        frozen: bool,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let x = Tensor::cat(&[obs, act], D::Minus1)?;
        let q = |m: &Mlp| -> candle_core::Result<Tensor> {
            let y = if frozen {
                m.forward_frozen(&x)?
            } else {
                m.forward(&x)?
            };
            y.squeeze(D::Minus1)
        };
        Ok((q(&self.q1)?, q(&self.q2)?))
    }
}

/// A SAC agent: actor, critics and their targets, temperature, optimisers, replay and the state
/// of the run.
pub struct Sac {
    cfg: SacConfig,
    spec: EnvSpec,
    device: Device,
    actor_vm: VarMap,
    critic_vm: VarMap,
    alpha_vm: VarMap,
    /// Every variable above under a prefixed name, sharing their storage: for save/load.
    all_vm: VarMap,
    actor: Mlp,
    critics: Critics,
    targets: Critics,
    actor_vars: Vec<Var>,
    critic_vars: Vec<Var>,
    target_vars: Vec<Var>,
    log_alpha: Tensor,
    target_entropy: f64,
    actor_opt: Adam,
    critic_opt: Adam,
    alpha_opt: Option<Adam>,
    replay: ReplayBuffer,
    explore_rng: ChaCha8Rng,
    replay_rng: ChaCha8Rng,
    train_rng: ChaCha8Rng,
    env_steps: u64,
    vector_steps: u64,
    updates: u64,
    tracker: Option<EpisodeTracker>,
    losses: LossMeans,
    last_log: u64,
}

impl std::fmt::Debug for Sac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sac")
            .field("cfg", &self.cfg)
            .field("spec", &self.spec)
            .field("env_steps", &self.env_steps)
            .field("updates", &self.updates)
            .field("replay", &self.replay.len())
            .finish()
    }
}

impl Sac {
    /// A new agent for environments of `spec`, on `device` (f32).
    pub fn new(cfg: SacConfig, spec: EnvSpec, device: &Device) -> Result<Self> {
        cfg.validate()?;
        spec.validate(ALGO)?;
        let (od, ad) = (spec.obs_dim, spec.act_dim);
        let sizes = |hidden: &[usize], inp: usize, out: usize| {
            let mut s = vec![inp];
            s.extend_from_slice(hidden);
            s.push(out);
            s
        };
        let init = WeightInit::TorchDefault;
        let actor_vm = VarMap::new();
        let actor = Mlp::new(
            &ParamFactory {
                varmap: &actor_vm,
                seed: cfg.seed,
                device,
            },
            "actor",
            &sizes(&cfg.pi_hidden, od, 2 * ad),
            cfg.activation,
            init,
            init,
        )?;
        let q_sizes = sizes(&cfg.qf_hidden, od + ad, 1);
        let critic_vm = VarMap::new();
        let critics = Critics::new(
            &ParamFactory {
                varmap: &critic_vm,
                seed: cfg.seed,
                device,
            },
            &q_sizes,
            cfg.activation,
        )?;
        // Targets start as copies of the critics (same names, same seed ⇒ same draws; then
        // copied anyway so the invariant does not rest on the init).
        let target_vm = VarMap::new();
        let targets = Critics::new(
            &ParamFactory {
                varmap: &target_vm,
                seed: cfg.seed,
                device,
            },
            &q_sizes,
            cfg.activation,
        )?;
        let alpha_vm = VarMap::new();
        let init_alpha = match cfg.ent_coef {
            EntCoef::Auto { init } | EntCoef::Fixed(init) => init,
        };
        let log_alpha = ParamFactory {
            varmap: &alpha_vm,
            seed: cfg.seed,
            device,
        }
        .var("log_alpha", 1, vec![init_alpha.ln()])?;
        let vars = |vm: &VarMap| -> Result<Vec<Var>> {
            Ok(sorted_vars(vm)?.into_iter().map(|(_, v)| v).collect())
        };
        let (actor_vars, critic_vars, target_vars) =
            (vars(&actor_vm)?, vars(&critic_vm)?, vars(&target_vm)?);
        soft_update(&target_vars, &critic_vars, 1.0)?;
        let all_vm = VarMap::new();
        {
            let mut all = all_vm
                .data()
                .lock()
                .map_err(|_| RlError::Shape("the VarMap's lock is poisoned".into()))?;
            for (prefix, vm) in [
                ("actor", &actor_vm),
                ("critic", &critic_vm),
                ("critic_target", &target_vm),
                ("ent_coef", &alpha_vm),
            ] {
                for (k, v) in sorted_vars(vm)? {
                    all.insert(format!("{prefix}/{k}"), v);
                }
            }
        }
        let adam = AdamConfig {
            lr: cfg.learning_rate,
            ..AdamConfig::default()
        };
        let alpha_opt = match cfg.ent_coef {
            EntCoef::Auto { .. } => Some(Adam::new(&alpha_vm, adam)?),
            EntCoef::Fixed(_) => None,
        };
        Ok(Sac {
            target_entropy: cfg.target_entropy.unwrap_or(-(ad as f64)),
            actor_opt: Adam::new(&actor_vm, adam)?,
            critic_opt: Adam::new(&critic_vm, adam)?,
            alpha_opt,
            replay: ReplayBuffer::new(cfg.buffer_size, od, ad)?,
            explore_rng: rng(cfg.seed, 1),
            replay_rng: rng(cfg.seed, 2),
            train_rng: rng(cfg.seed, 3),
            cfg,
            spec,
            device: device.clone(),
            actor_vm,
            critic_vm,
            alpha_vm,
            all_vm,
            actor,
            critics,
            targets,
            actor_vars,
            critic_vars,
            target_vars,
            log_alpha,
            env_steps: 0,
            vector_steps: 0,
            updates: 0,
            tracker: None,
            losses: LossMeans::default(),
            last_log: 0,
        })
    }

    pub fn config(&self) -> &SacConfig {
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

    /// The current entropy weight α.
    pub fn alpha(&self) -> Result<f64> {
        Ok(scalar(&self.log_alpha.exp()?.sum_all()?)?)
    }

    /// The replay buffer.
    pub fn replay(&self) -> &ReplayBuffer {
        &self.replay
    }

    /// Every parameter by name (sorted; prefixes `actor/`, `critic/`, `critic_target/`,
    /// `ent_coef/`), as host floats.
    pub fn named_parameters(&self) -> Result<Vec<(String, Vec<f32>)>> {
        sorted_vars(&self.all_vm)?
            .into_iter()
            .map(|(k, v)| Ok((k, host(v.as_tensor())?)))
            .collect()
    }

    /// `(mean, log σ)` `[B, A]` each, log σ clamped.
    fn actor_dist(&self, obs: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let ad = self.spec.act_dim;
        let out = self.actor.forward(obs)?;
        let mean = out.narrow(D::Minus1, 0, ad)?;
        let log_std = out
            .narrow(D::Minus1, ad, ad)?
            .clamp(self.cfg.log_std_min, self.cfg.log_std_max)?;
        Ok((mean, log_std))
    }

    /// Reparameterised sample `tanh(mean + σ·ε)` and its log-density, `([B, A], [B])`.
    fn sample_action(&mut self, obs: &Tensor, b: usize) -> candle_core::Result<(Tensor, Tensor)> {
        let ad = self.spec.act_dim;
        let (mean, log_std) = self.actor_dist(obs)?;
        let eps = standard_normal(&mut self.train_rng, b * ad);
        let eps = rows(&eps, b, ad, &self.device)?;
        let u = (&mean + (log_std.exp()? * eps)?)?;
        let logp = squashed_log_prob(&u, &mean, &log_std)?;
        Ok((u.tanh()?, logp))
    }

    /// `[−1, 1]` → the environment's box.
    fn to_env(&self, a: f32) -> f32 {
        let (lo, hi) = (self.spec.action_low, self.spec.action_high);
        (lo + (a + 1.0) * 0.5 * (hi - lo)).clamp(lo, hi)
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

    /// Trains for `total_env_steps` transitions (rounded up to whole vector steps) on
    /// `r_env + hook`, returning a point every `log_interval` transitions and one at the end.
    /// Episodes in progress carry over to the next call when the same environment is passed.
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

    /// [`Sac::learn`], calling `callback(agent, point)` at every point; an error from the
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
        C: FnMut(&Sac, &LogPoint) -> std::result::Result<(), crate::EnvError>,
    {
        self.spec.check_env(ALGO, env)?;
        let n = env.num_envs();
        EpisodeTracker::keep_or_new(&mut self.tracker, n);
        let mut log = TrainLog {
            algo: ALGO.into(),
            points: Vec::new(),
        };
        let end = self.env_steps + total_env_steps;
        while self.env_steps < end {
            self.vector_step(env, hook)?;
            let train = self.env_steps > self.cfg.learning_starts
                && self.vector_steps % self.cfg.train_freq == 0;
            if train {
                for _ in 0..self.cfg.gradient_steps {
                    self.train_step()?;
                }
            }
            let at_end = self.env_steps >= end;
            if self.env_steps - self.last_log >= self.cfg.log_interval || at_end {
                self.last_log = self.env_steps;
                let mut losses = self.losses.take();
                losses.insert("ent_coef".into(), self.alpha()?);
                let point = close_point(
                    self.tracker.as_mut(),
                    self.env_steps,
                    self.updates,
                    losses,
                    "sac",
                );
                run_callback(&mut callback, self, &point, self.env_steps)?;
                log.points.push(point);
            }
        }
        Ok(log)
    }

    /// One vector step: act, step, shape the reward, store the transitions.
    fn vector_step<E, H>(&mut self, env: &mut E, hook: &mut H) -> Result<()>
    where
        E: Env + ?Sized,
        H: RewardHook + ?Sized,
    {
        let n = env.num_envs();
        let (od, ad) = (self.spec.obs_dim, self.spec.act_dim);
        let obs = current_obs(env, od, self.env_steps)?;
        // Actions in [−1, 1] (the agent's space).
        let squashed: Vec<f32> = if self.env_steps < self.cfg.learning_starts {
            (0..n * ad)
                .map(|_| self.explore_rng.random_range(-1.0f32..=1.0))
                .collect()
        } else {
            let obs_t = rows(&obs, n, od, &self.device)?;
            let (mean, log_std) = self.actor_dist(&obs_t)?;
            let (mean, std) = (host(&mean)?, host(&log_std.exp()?)?);
            let eps = standard_normal(&mut self.explore_rng, n * ad);
            (0..n * ad)
                .map(|k| (mean[k] + std[k] * eps[k]).tanh())
                .collect()
        };
        let actions: Vec<f32> = squashed.iter().map(|&a| self.to_env(a)).collect();
        let (step, shaped) = step_shaped(env, hook, &obs, &actions, od, self.env_steps)?;
        if let Some(t) = self.tracker.as_mut() {
            t.record(&step, &shaped);
        }
        for i in 0..n {
            self.replay.push(
                &obs[i * od..(i + 1) * od],
                &squashed[i * ad..(i + 1) * ad],
                shaped[i],
                &step.next_obs[i * od..(i + 1) * od],
                step.dones[i],
            )?;
        }
        self.env_steps += n as u64;
        self.vector_steps += 1;
        Ok(())
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

    fn finite(&self, what: &str, t: &Tensor) -> Result<f64> {
        let v = scalar(t)?;
        if v.is_finite() {
            Ok(v)
        } else {
            Err(self.non_finite(what, v))
        }
    }

    /// One gradient step of temperature, critics and actor, then the target update.
    fn train_step(&mut self) -> Result<()> {
        let b = self.cfg.batch_size;
        let (od, ad) = (self.spec.obs_dim, self.spec.act_dim);
        let batch = self.replay.sample(b, &mut self.replay_rng)?;
        let obs = rows(&batch.obs, b, od, &self.device)?;
        let act = rows(&batch.actions, b, ad, &self.device)?;
        let next_obs = rows(&batch.next_obs, b, od, &self.device)?;
        let vec1 = |v: Vec<f32>| -> candle_core::Result<Tensor> {
            Tensor::from_vec(v, b, &Device::Cpu)?.to_device(&self.device)
        };
        let rew = vec1(batch.rewards)?;
        let not_done = vec1(batch.dones.iter().map(|d| 1.0 - d).collect())?;

        let (a_pi, logp_pi) = self.sample_action(&obs, b)?;
        // α used in this step: the value before its own update (SB3).
        let alpha = self.alpha()?;
        if let Some(opt) = self.alpha_opt.as_mut() {
            let alpha_loss = (self.log_alpha.broadcast_as(b)?
                * (logp_pi.detach() + self.target_entropy)?)?
                .mean_all()?
                .neg()?;
            let v = scalar(&alpha_loss)?;
            if !v.is_finite() {
                return Err(self.non_finite("entropy-coefficient loss", v));
            }
            opt.backward_step(&alpha_loss)?;
            self.losses.add("ent_coef_loss", v);
        }

        // Target.
        let (a_next, logp_next) = self.sample_action(&next_obs, b)?;
        let (tq1, tq2) = self.targets.forward(&next_obs, &a_next, true)?;
        let next_q = (tq1.minimum(&tq2)? - (logp_next * alpha)?)?;
        let target = (rew + ((not_done * next_q)? * self.cfg.gamma)?)?.detach();

        // Critics.
        let (q1, q2) = self.critics.forward(&obs, &act, false)?;
        let critic_loss =
            (((&q1 - &target)?.sqr()?.mean_all()? + (&q2 - &target)?.sqr()?.mean_all()?)? * 0.5)?;
        let cl = self.finite("critic loss", &critic_loss)?;
        let mut grads = critic_loss.backward()?;
        if let Some(m) = self.cfg.max_grad_norm {
            clip_grad_norm(&mut grads, &self.critic_vars, m)?;
        }
        self.critic_opt.step(&grads)?;

        // Actor, against the updated critics.
        let (q1_pi, q2_pi) = self.critics.forward(&obs, &a_pi, true)?;
        let actor_loss = ((&logp_pi * alpha)? - q1_pi.minimum(&q2_pi)?)?.mean_all()?;
        let al = self.finite("actor loss", &actor_loss)?;
        let mut grads = actor_loss.backward()?;
        if let Some(m) = self.cfg.max_grad_norm {
            clip_grad_norm(&mut grads, &self.actor_vars, m)?;
        }
        self.actor_opt.step(&grads)?;

        self.updates += 1;
        if self.updates % self.cfg.target_update_interval == 0 {
            soft_update(&self.target_vars, &self.critic_vars, self.cfg.tau)?;
        }
        self.losses.add("critic_loss", cl);
        self.losses.add("actor_loss", al);
        self.losses.add("q_mean", scalar(&q1.mean_all()?)?);
        self.losses.add("entropy", -scalar(&logp_pi.mean_all()?)?);
        Ok(())
    }

    /// Writes every weight (actor, critics, targets, `log α`) to one safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.all_vm.save(path).map_err(|e| RlError::Weights {
            path: path.to_owned(),
            message: mtrec_train::candle_message(&e),
        })
    }

    /// Reads weights written by [`Sac::save`] for the same architecture. The optimisers restart
    /// and the replay buffer is kept as it is: the file holds weights, not a training state.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let mut vm = self.all_vm.clone();
        vm.load(path).map_err(|e| RlError::Weights {
            path: path.to_owned(),
            message: mtrec_train::candle_message(&e),
        })?;
        let adam = AdamConfig {
            lr: self.cfg.learning_rate,
            ..AdamConfig::default()
        };
        self.actor_opt = Adam::new(&self.actor_vm, adam)?;
        self.critic_opt = Adam::new(&self.critic_vm, adam)?;
        if self.alpha_opt.is_some() {
            self.alpha_opt = Some(Adam::new(&self.alpha_vm, adam)?);
        }
        Ok(())
    }
}

impl Policy for Sac {
    fn spec(&self) -> EnvSpec {
        self.spec
    }

    /// `tanh(mean)` mapped onto the action box.
    fn act_deterministic(&self, obs: &[f32]) -> Result<Vec<f32>> {
        let (t, _) = self.obs_tensor(obs)?;
        let (mean, _) = self.actor_dist(&t)?;
        Ok(host(&mean.tanh()?)?
            .into_iter()
            .map(|a| self.to_env(a))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_and_rejects_unknown_keys_and_bad_values() {
        let cfg = SacConfig::default();
        let s = serde_json::to_string(&cfg).unwrap();
        assert_eq!(serde_json::from_str::<SacConfig>(&s).unwrap(), cfg);
        let fixed: SacConfig = serde_json::from_str(
            r#"{"ent_coef": {"fixed": 0.0625}, "gamma": 0.995, "buffer_size": 100000}"#,
        )
        .unwrap();
        assert_eq!(fixed.ent_coef, EntCoef::Fixed(0.0625));
        assert!(serde_json::from_str::<SacConfig>(r#"{"batchsize": 3}"#).is_err());
        for bad in [
            SacConfig {
                tau: 0.0,
                ..SacConfig::default()
            },
            SacConfig {
                ent_coef: EntCoef::Fixed(-1.0),
                ..SacConfig::default()
            },
            SacConfig {
                log_std_min: 3.0,
                ..SacConfig::default()
            },
        ] {
            assert!(bad.validate().is_err());
        }
    }

    /// The critic loss reaches every critic weight; the actor loss reaches every actor weight
    /// and, through the frozen critics, none of the critics'.
    #[test]
    fn losses_reach_exactly_their_own_networks() {
        let spec = EnvSpec {
            obs_dim: 3,
            act_dim: 2,
            action_low: -1.0,
            action_high: 1.0,
        };
        let cfg = SacConfig {
            pi_hidden: vec![6, 5],
            qf_hidden: vec![7],
            ..SacConfig::default()
        };
        let mut sac = Sac::new(cfg, spec, &Device::Cpu).unwrap();
        let obs = rows(&[0.1, -0.2, 0.3, 1.0, 0.5, -1.0], 2, 3, &Device::Cpu).unwrap();
        let act = rows(&[0.5, -0.3, 0.2, 0.9], 2, 2, &Device::Cpu).unwrap();
        let (q1, q2) = sac.critics.forward(&obs, &act, false).unwrap();
        let critic_loss = (q1.sqr().unwrap() + q2.sqr().unwrap())
            .unwrap()
            .mean_all()
            .unwrap();
        mtrec_nn::testing::assert_every_var_has_gradient(&sac.critic_vm, &critic_loss);
        let (a_pi, logp) = sac.sample_action(&obs, 2).unwrap();
        let (q1, q2) = sac.critics.forward(&obs, &a_pi, true).unwrap();
        let actor_loss = ((logp * 0.3).unwrap() - q1.minimum(&q2).unwrap())
            .unwrap()
            .mean_all()
            .unwrap();
        mtrec_nn::testing::assert_every_var_has_gradient(&sac.actor_vm, &actor_loss);
        let grads = actor_loss.backward().unwrap();
        assert!(sac
            .critic_vars
            .iter()
            .all(|v| grads.get(v.as_tensor()).is_none()));
    }

    #[test]
    fn targets_start_equal_to_critics_and_alpha_starts_at_init() {
        let spec = EnvSpec {
            obs_dim: 3,
            act_dim: 2,
            action_low: -2.0,
            action_high: 2.0,
        };
        let cfg = SacConfig {
            pi_hidden: vec![8],
            qf_hidden: vec![8],
            ent_coef: EntCoef::Auto { init: 0.5 },
            ..SacConfig::default()
        };
        let sac = Sac::new(cfg, spec, &Device::Cpu).unwrap();
        let p = sac.named_parameters().unwrap();
        let get = |k: &str| p.iter().find(|(n, _)| n == k).unwrap().1.clone();
        for k in ["qf0.0.weight", "qf1.1.bias"] {
            assert_eq!(
                get(&format!("critic/{k}")),
                get(&format!("critic_target/{k}"))
            );
        }
        assert_ne!(get("critic/qf0.0.weight"), get("critic/qf1.0.weight"));
        assert!((sac.alpha().unwrap() - 0.5).abs() < 1e-6);
        assert_eq!(sac.target_entropy, -2.0);
        // Deterministic actions lie in the box [−2, 2].
        let a = sac
            .act_deterministic(&[0.1, 5.0, -3.0, 0.0, 0.0, 0.0])
            .unwrap();
        assert_eq!(a.len(), 4);
        assert!(a.iter().all(|x| (-2.0..=2.0).contains(x)));
        assert!(sac.act_deterministic(&[0.0; 4]).is_err());
    }
}
