//! Slower learning checks (`cargo test -p mtrec-rl -- --ignored`): a multi-step task where
//! credit assignment over time and bootstrapping at time-limit truncations matter.

use candle_core::Device;
use mtrec_rl::{
    evaluate, EntCoef, Env, EnvError, EnvSpec, EnvStep, EpisodeInfo, NoHook, Policy, Ppo,
    PpoConfig, Sac, SacConfig,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A point on `[−1, 1]` starts at a random place and moves by `0.2·a` per step; each step pays
/// `−|x − 0.5|`. Episodes are cut after 20 steps (truncation; the time is not observed, so the
/// cut is not part of the state and must be bootstrapped through).
struct Reach {
    n: usize,
    rng: ChaCha8Rng,
    x: Vec<f32>,
    t: Vec<usize>,
    ret: Vec<f64>,
}

const HORIZON: usize = 20;

impl Reach {
    fn new(n: usize, seed: u64) -> Self {
        let mut r = Reach {
            n,
            rng: ChaCha8Rng::seed_from_u64(seed),
            x: vec![0.0; n],
            t: vec![0; n],
            ret: vec![0.0; n],
        };
        r.reset().ok();
        r
    }
}

impl Env for Reach {
    fn num_envs(&self) -> usize {
        self.n
    }
    fn obs_dim(&self) -> usize {
        1
    }
    fn act_dim(&self) -> usize {
        1
    }
    fn obs(&self) -> &[f32] {
        &self.x
    }
    fn reset(&mut self) -> Result<(), EnvError> {
        for i in 0..self.n {
            self.x[i] = self.rng.random_range(-1.0f32..=1.0);
            self.t[i] = 0;
            self.ret[i] = 0.0;
        }
        Ok(())
    }
    fn step(&mut self, actions: &[f32]) -> Result<EnvStep, EnvError> {
        let mut s = EnvStep::default();
        if actions.len() != self.n {
            return Err(format!("{} actions for {} slots", actions.len(), self.n).into());
        }
        for (i, &a) in actions.iter().enumerate() {
            self.x[i] = (self.x[i] + 0.2 * a).clamp(-1.0, 1.0);
            let r = -(self.x[i] - 0.5).abs();
            self.ret[i] += f64::from(r);
            self.t[i] += 1;
            s.rewards.push(r);
            s.dones.push(false);
            s.next_obs.push(self.x[i]);
            let cut = self.t[i] == HORIZON;
            s.truncated.push(cut);
            if cut {
                s.episodes.push(Some(EpisodeInfo {
                    ret: self.ret[i],
                    len: HORIZON,
                    score: None,
                }));
                self.x[i] = self.rng.random_range(-1.0f32..=1.0);
                self.t[i] = 0;
                self.ret[i] = 0.0;
            } else {
                s.episodes.push(None);
            }
        }
        Ok(s)
    }
}

fn spec() -> EnvSpec {
    EnvSpec {
        obs_dim: 1,
        act_dim: 1,
        action_low: -1.0,
        action_high: 1.0,
    }
}

fn det<P: Policy>(p: &P) -> f64 {
    evaluate(p, &mut Reach::new(8, 77), &mut NoHook, 64, 100_000)
        .unwrap()
        .mean_raw_return
}

/// A policy that heads straight for 0.5 loses about 1.7 per episode from a uniform start; one
/// that stays put loses about 20·E|x − 0.5| ≈ 12.5.
#[test]
#[ignore = "slow learning check (~1 min)"]
fn ppo_and_sac_learn_a_multi_step_task_with_truncation() {
    let t0 = std::time::Instant::now();
    let mut env = Reach::new(8, 1);
    let cfg = PpoConfig {
        seed: 1,
        n_steps: 128,
        gamma: 0.95,
        learning_rate: 1e-3,
        ..PpoConfig::default()
    };
    let mut ppo = Ppo::new(cfg, spec(), &Device::Cpu).unwrap();
    let d0 = det(&ppo);
    ppo.learn(&mut env, &mut NoHook, 40 * 1024).unwrap();
    let d1 = det(&ppo);
    eprintln!(
        "ppo reach: deterministic return {d0:.2} -> {d1:.2} ({:.0}s)",
        t0.elapsed().as_secs_f64()
    );
    assert!(d1 > -3.5, "{d0} -> {d1}");

    let t0 = std::time::Instant::now();
    let mut env = Reach::new(4, 2);
    let cfg = SacConfig {
        seed: 2,
        gamma: 0.95,
        batch_size: 128,
        pi_hidden: vec![64, 64],
        qf_hidden: vec![64, 64],
        learning_rate: 1e-3,
        ent_coef: EntCoef::Auto { init: 0.1 },
        ..SacConfig::default()
    };
    let mut sac = Sac::new(cfg, spec(), &Device::Cpu).unwrap();
    let s0 = det(&sac);
    sac.learn(&mut env, &mut NoHook, 6000).unwrap();
    let s1 = det(&sac);
    eprintln!(
        "sac reach: deterministic return {s0:.2} -> {s1:.2} ({:.0}s)",
        t0.elapsed().as_secs_f64()
    );
    assert!(s1 > -3.5, "{s0} -> {s1}");
}
