//! End-to-end checks of PPO and SAC on toy environments: they learn, the reward hook steers what
//! is learned, runs are bit-identical per seed, weights round-trip, errors are reported.

use candle_core::Device;
use mtrec_rl::{
    evaluate, hook_fn, Activation, EntCoef, Env, EnvError, EnvSpec, EnvStep, EpisodeInfo, NoHook,
    Policy, Ppo, PpoConfig, RlError, Sac, SacConfig,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A contextual continuous bandit with episodes: each step shows a fresh context `o ∈ [−1, 1]²`
/// and pays `−‖a − f(o)‖²` with `f(o) = (0.5·o₀ + 0.2, −0.6·o₁)`. Episodes last 1..=5 steps
/// (drawn at reset); those that reach 5 are *truncated* (a time limit), shorter ones terminate.
/// With `zero_reward` the environment pays 0 everywhere (the hook test).
struct Bandit {
    n: usize,
    rng: ChaCha8Rng,
    obs: Vec<f32>,
    left: Vec<usize>,
    len: Vec<usize>,
    ret: Vec<f64>,
    zero_reward: bool,
    nan_obs: bool,
}

const OBS: usize = 2;
const ACT: usize = 2;

fn target(o: &[f32]) -> [f32; 2] {
    [0.5 * o[0] + 0.2, -0.6 * o[1]]
}

impl Bandit {
    fn new(n: usize, seed: u64) -> Self {
        let mut b = Bandit {
            n,
            rng: ChaCha8Rng::seed_from_u64(seed),
            obs: vec![0.0; n * OBS],
            left: vec![0; n],
            len: vec![0; n],
            ret: vec![0.0; n],
            zero_reward: false,
            nan_obs: false,
        };
        for i in 0..n {
            b.start(i);
        }
        b
    }

    fn start(&mut self, i: usize) {
        self.left[i] = self.rng.random_range(1..=5);
        self.len[i] = 0;
        self.ret[i] = 0.0;
        self.context(i);
    }

    fn context(&mut self, i: usize) {
        for k in 0..OBS {
            self.obs[i * OBS + k] = if self.nan_obs {
                f32::NAN
            } else {
                self.rng.random_range(-1.0f32..=1.0)
            };
        }
    }
}

impl Env for Bandit {
    fn num_envs(&self) -> usize {
        self.n
    }
    fn obs_dim(&self) -> usize {
        OBS
    }
    fn act_dim(&self) -> usize {
        ACT
    }
    fn obs(&self) -> &[f32] {
        &self.obs
    }
    fn reset(&mut self) -> Result<(), EnvError> {
        for i in 0..self.n {
            self.start(i);
        }
        Ok(())
    }
    fn step(&mut self, actions: &[f32]) -> Result<EnvStep, EnvError> {
        if actions.len() != self.n * ACT {
            return Err(format!("{} actions", actions.len()).into());
        }
        let mut s = EnvStep::default();
        for i in 0..self.n {
            let o = &self.obs[i * OBS..(i + 1) * OBS];
            let f = target(o);
            let a = &actions[i * ACT..(i + 1) * ACT];
            let r = if self.zero_reward || self.nan_obs {
                0.0
            } else {
                -((a[0] - f[0]).powi(2) + (a[1] - f[1]).powi(2))
            };
            s.rewards.push(r);
            self.ret[i] += f64::from(r);
            self.len[i] += 1;
            self.left[i] -= 1;
            let ended = self.left[i] == 0;
            let truncated = ended && self.len[i] == 5;
            s.dones.push(ended && !truncated);
            s.truncated.push(truncated);
            self.context(i);
            s.next_obs
                .extend_from_slice(&self.obs[i * OBS..(i + 1) * OBS]);
            if ended {
                s.episodes.push(Some(EpisodeInfo {
                    ret: self.ret[i],
                    len: self.len[i],
                    score: Some(self.ret[i] / self.len[i] as f64),
                }));
                self.start(i);
            } else {
                s.episodes.push(None);
            }
        }
        Ok(s)
    }
}

fn spec() -> EnvSpec {
    EnvSpec {
        obs_dim: OBS,
        act_dim: ACT,
        action_low: -1.0,
        action_high: 1.0,
    }
}

fn small_ppo(seed: u64) -> PpoConfig {
    PpoConfig {
        seed,
        n_steps: 32,
        batch_size: 64,
        n_epochs: 10,
        learning_rate: 1e-3,
        pi_hidden: vec![32, 32],
        vf_hidden: vec![32, 32],
        ..PpoConfig::default()
    }
}

fn small_sac(seed: u64) -> SacConfig {
    SacConfig {
        seed,
        batch_size: 64,
        learning_starts: 256,
        learning_rate: 1e-3,
        pi_hidden: vec![64, 64],
        qf_hidden: vec![64, 64],
        log_interval: 512,
        // SB3's α starts at 1.0, slow to decay in a short run whose rewards are O(1).
        ent_coef: EntCoef::Auto { init: 0.1 },
        ..SacConfig::default()
    }
}

/// Mean return of the deterministic policy over 200 episodes on a fresh environment.
fn det_return<P: Policy>(p: &P) -> f64 {
    let mut env = Bandit::new(8, 999);
    evaluate(p, &mut env, &mut NoHook, 200, 10_000)
        .unwrap()
        .mean_raw_return
}

#[test]
fn ppo_learns_the_contextual_bandit() {
    let t0 = std::time::Instant::now();
    let mut env = Bandit::new(8, 1);
    let mut ppo = Ppo::new(small_ppo(1), spec(), &Device::Cpu).unwrap();
    let det0 = det_return(&ppo);
    let log = ppo.learn(&mut env, &mut NoHook, 30 * 256).unwrap();
    let det1 = det_return(&ppo);
    let first = log.points[0].mean_raw_return.unwrap();
    let last = log.points.last().unwrap().mean_raw_return.unwrap();
    eprintln!(
        "ppo: train return {first:.3} -> {last:.3}; deterministic {det0:.3} -> {det1:.3}; std {:?}; {:.1}s",
        ppo.std().unwrap(),
        t0.elapsed().as_secs_f64()
    );
    // Mean episode length is 3, so the untrained stochastic policy loses ≈ 3·(0.24 + 2·0.58).
    assert!(first < -2.5, "{first}");
    assert!(last > 0.5 * first, "training return {first} -> {last}");
    assert!(
        det1 > 0.5 * det0 && det1 > -0.3,
        "deterministic {det0} -> {det1}"
    );
    // The score (mean per-step reward) is logged beside the returns.
    assert!(log.points.iter().all(|p| p.mean_score.is_some()));
    assert_eq!(log.points.last().unwrap().env_steps, 30 * 256);
}

#[test]
fn sac_learns_the_contextual_bandit() {
    let t0 = std::time::Instant::now();
    let mut env = Bandit::new(4, 2);
    let mut sac = Sac::new(small_sac(2), spec(), &Device::Cpu).unwrap();
    let det0 = det_return(&sac);
    let log = sac.learn(&mut env, &mut NoHook, 3072).unwrap();
    let det1 = det_return(&sac);
    let first = log.points[0].mean_raw_return.unwrap();
    let last = log.points.last().unwrap().mean_raw_return.unwrap();
    eprintln!(
        "sac: train return {first:.3} -> {last:.3}; deterministic {det0:.3} -> {det1:.3}; alpha {:.4}; updates {}; {:.1}s",
        sac.alpha().unwrap(),
        sac.updates(),
        t0.elapsed().as_secs_f64()
    );
    assert!(last > 0.5 * first, "training return {first} -> {last}");
    assert!(
        det1 > 0.5 * det0 && det1 > -0.3,
        "deterministic {det0} -> {det1}"
    );
}

/// The environment pays nothing; the hook pays `−‖a − (0.5, −0.3)‖²`. The learned deterministic
/// action moves to the hook's target, and the log shows raw return 0 beside the shaped one.
#[test]
fn reward_hook_changes_what_is_learned() {
    let goal = [0.5f32, -0.3];
    let hook = || {
        hook_fn(move |_obs, actions, env_r, _next, _dones| {
            Ok((0..env_r.len())
                .map(|i| {
                    -((actions[2 * i] - goal[0]).powi(2) + (actions[2 * i + 1] - goal[1]).powi(2))
                })
                .collect())
        })
    };
    let probe = [0.3f32, -0.7, -0.9, 0.1];
    let dist = |a: &[f32]| -> f32 {
        a.chunks(2)
            .map(|r| ((r[0] - goal[0]).powi(2) + (r[1] - goal[1]).powi(2)).sqrt())
            .fold(0.0, f32::max)
    };

    let mut env = Bandit::new(8, 3);
    env.zero_reward = true;
    let mut ppo = Ppo::new(small_ppo(3), spec(), &Device::Cpu).unwrap();
    let d0 = dist(&ppo.act_deterministic(&probe).unwrap());
    let mut h = hook();
    let log = ppo.learn(&mut env, &mut h, 40 * 256).unwrap();
    let d1 = dist(&ppo.act_deterministic(&probe).unwrap());
    eprintln!("ppo hook: distance to the hook's target {d0:.3} -> {d1:.3}");
    assert!(d0 > 0.5 && d1 < 0.15, "{d0} -> {d1}");
    for p in &log.points {
        assert_eq!(p.mean_raw_return, Some(0.0));
        assert!(p.mean_shaped_return.unwrap() < 0.0);
    }
    // Without the hook the advantages are noise (value errors) and the mean drifts elsewhere.
    let mut env = Bandit::new(8, 3);
    env.zero_reward = true;
    let mut plain = Ppo::new(small_ppo(3), spec(), &Device::Cpu).unwrap();
    plain.learn(&mut env, &mut NoHook, 10 * 256).unwrap();
    let d_plain = dist(&plain.act_deterministic(&probe).unwrap());
    eprintln!("ppo no hook: distance {d_plain:.3}");
    assert!(d_plain > 0.4, "{d_plain}");

    let mut env = Bandit::new(4, 4);
    env.zero_reward = true;
    let mut sac = Sac::new(small_sac(4), spec(), &Device::Cpu).unwrap();
    let s0 = dist(&sac.act_deterministic(&probe).unwrap());
    let mut h = hook();
    sac.learn(&mut env, &mut h, 2048).unwrap();
    let s1 = dist(&sac.act_deterministic(&probe).unwrap());
    eprintln!("sac hook: distance to the hook's target {s0:.3} -> {s1:.3}");
    assert!(s1 < 0.15 && s1 < 0.5 * s0, "{s0} -> {s1}");
}

#[test]
fn same_seed_gives_identical_runs() {
    let ppo_run = |seed: u64| {
        let mut env = Bandit::new(4, 5);
        let mut cfg = small_ppo(seed);
        cfg.n_steps = 16;
        let mut ppo = Ppo::new(cfg, spec(), &Device::Cpu).unwrap();
        let log = ppo.learn(&mut env, &mut NoHook, 3 * 64).unwrap();
        (log, ppo.named_parameters().unwrap())
    };
    let (a, b) = (ppo_run(7), ppo_run(7));
    assert_eq!(a, b);
    assert_eq!(a.0.points.len(), 3);
    assert_ne!(a.1, ppo_run(8).1);

    let sac_run = |seed: u64| {
        let mut env = Bandit::new(4, 5);
        let mut cfg = small_sac(seed);
        cfg.learning_starts = 32;
        cfg.log_interval = 40;
        let mut sac = Sac::new(cfg, spec(), &Device::Cpu).unwrap();
        let log = sac.learn(&mut env, &mut NoHook, 128).unwrap();
        (log, sac.named_parameters().unwrap())
    };
    let (a, b) = (sac_run(7), sac_run(7));
    assert_eq!(a, b);
    assert!(a
        .0
        .points
        .iter()
        .any(|p| p.losses.contains_key("critic_loss")));
    assert_ne!(a.1, sac_run(8).1);
}

#[test]
fn weights_round_trip_through_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let probe = [0.3f32, -0.7, -0.9, 0.1];

    let mut env = Bandit::new(4, 6);
    let mut ppo = Ppo::new(small_ppo(1), spec(), &Device::Cpu).unwrap();
    ppo.learn(&mut env, &mut NoHook, 128).unwrap();
    let path = dir.path().join("ppo.safetensors");
    ppo.save(&path).unwrap();
    let mut other = Ppo::new(small_ppo(2), spec(), &Device::Cpu).unwrap();
    assert_ne!(
        other.act_deterministic(&probe).unwrap(),
        ppo.act_deterministic(&probe).unwrap()
    );
    other.load(&path).unwrap();
    assert_eq!(
        other.named_parameters().unwrap(),
        ppo.named_parameters().unwrap()
    );

    let mut sac = Sac::new(small_sac(1), spec(), &Device::Cpu).unwrap();
    let mut cfg = small_sac(1);
    cfg.learning_starts = 16;
    let mut sac_trained = Sac::new(cfg, spec(), &Device::Cpu).unwrap();
    sac_trained.learn(&mut env, &mut NoHook, 64).unwrap();
    let path = dir.path().join("sac.safetensors");
    sac_trained.save(&path).unwrap();
    sac.load(&path).unwrap();
    assert_eq!(
        sac.named_parameters().unwrap(),
        sac_trained.named_parameters().unwrap()
    );
    assert_eq!(
        sac.act_deterministic(&probe).unwrap(),
        sac_trained.act_deterministic(&probe).unwrap()
    );
    // A file of the other algorithm is refused with its path in the message.
    let e = ppo.load(&path).unwrap_err().to_string();
    assert!(e.contains("sac.safetensors"), "{e}");
}

#[test]
fn errors_name_their_cause() {
    // NaN observations make the loss NaN: the first update fails.
    let mut env = Bandit::new(2, 7);
    env.nan_obs = true;
    env.reset().unwrap();
    let mut cfg = small_ppo(1);
    cfg.n_steps = 8;
    let mut ppo = Ppo::new(cfg, spec(), &Device::Cpu).unwrap();
    let e = ppo.learn(&mut env, &mut NoHook, 16).unwrap_err();
    assert!(matches!(e, RlError::NonFinite { update: 1, .. }), "{e}");
    assert!(e.to_string().contains("update 1"), "{e}");

    let mut env = Bandit::new(2, 7);
    let mut sac_cfg = small_sac(1);
    sac_cfg.learning_starts = 4;
    // ReLU maps NaN to 0 in candle, so NaN observations only reach SAC's loss through tanh.
    sac_cfg.activation = Activation::Tanh;
    let mut sac = Sac::new(sac_cfg, spec(), &Device::Cpu).unwrap();
    env.nan_obs = true;
    env.reset().unwrap();
    let e = sac.learn(&mut env, &mut NoHook, 16).unwrap_err();
    assert!(matches!(e, RlError::NonFinite { .. }), "{e}");

    // A hook with the wrong number of rewards.
    let mut env = Bandit::new(2, 7);
    let mut bad = hook_fn(|_, _, _, _, _| Ok(vec![0.0]));
    let mut ppo = Ppo::new(small_ppo(1), spec(), &Device::Cpu).unwrap();
    let e = ppo.learn(&mut env, &mut bad, 16).unwrap_err();
    assert!(matches!(e, RlError::Hook { .. }), "{e}");
    // A hook error passes through.
    let mut failing = hook_fn(|_, _, _, _, _| Err("reward model exploded".into()));
    let e = ppo.learn(&mut env, &mut failing, 16).unwrap_err();
    assert!(e.to_string().contains("reward model exploded"), "{e}");

    // An environment of other shapes.
    let wrong = EnvSpec {
        obs_dim: 3,
        ..spec()
    };
    let mut p3 = Ppo::new(small_ppo(1), wrong, &Device::Cpu).unwrap();
    assert!(matches!(
        p3.learn(&mut env, &mut NoHook, 16).unwrap_err(),
        RlError::Config { .. }
    ));
}

#[test]
fn evaluation_counts_episodes_per_slot() {
    let ppo = Ppo::new(small_ppo(1), spec(), &Device::Cpu).unwrap();
    let mut env = Bandit::new(4, 8);
    let r = evaluate(&ppo, &mut env, &mut NoHook, 10, 1000).unwrap();
    assert_eq!(r.episodes.len(), 10);
    assert!(r.mean_raw_return < 0.0);
    assert_eq!(r.mean_raw_return, r.mean_shaped_return);
    let (lo, hi) = r.raw_return_ci95;
    assert!(lo <= r.mean_raw_return && r.mean_raw_return <= hi);
    assert!(r.score_ci95.is_some());
    // The same evaluation twice (env reset each time, same env seed stream aside) is finite.
    assert!(r.mean_len >= 1.0 && r.mean_len <= 5.0);
    let e = evaluate(&ppo, &mut env, &mut NoHook, 10, 1).unwrap_err();
    assert!(e.to_string().contains("within 1 vector steps"), "{e}");
}
