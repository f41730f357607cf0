//! Expert trajectories for the mental reward (paper §5.2: "expert" episodes with eCTR > 0.5).
//!
//! The paper does not say where its expert episodes came from. Ours come from a good recommender
//! found without any RL: the cross-entropy method searches for the constant 27-dim action with the
//! highest eCTR ([`search_constant_action`]); the expert policy then plays that action with
//! Gaussian noise whose scale is drawn per episode (so the data covers a neighbourhood, not one
//! point), and [`collect_expert`] keeps the episodes whose eCTR exceeds the threshold.

use mtrec_rl::{Env, EnvStep};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use crate::error::{Result, Rq2Error};
use crate::mental::Transitions;

fn env_err(e: impl std::fmt::Display) -> Rq2Error {
    Rq2Error::Env(e.to_string())
}

/// Settings of [`search_constant_action`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CemConfig {
    pub iterations: usize,
    pub population: usize,
    /// Candidates kept to refit the sampling distribution.
    pub elites: usize,
    /// Vector-env steps spent scoring one candidate.
    pub steps_per_candidate: usize,
    /// Initial standard deviation of the sampling distribution (actions live in [-1, 1]).
    pub init_std: f64,
    /// Independent restarts (good actions are rare and one run can settle on a poor one)...
    pub restarts: usize,
    /// ...until one finds an action scoring at least this.
    pub target_ectr: f64,
}

impl Default for CemConfig {
    fn default() -> Self {
        // Measured on VirtualTB (16 users per candidate): reaches the 9-clicks-per-page action
        // (eCTR 0.900) by the 8th iteration; 8 × 24 candidates with std 0.6 stalled at 0.42.
        CemConfig {
            iterations: 12,
            population: 48,
            elites: 8,
            steps_per_candidate: 20,
            init_std: 1.0,
            restarts: 10,
            target_ectr: 0.8,
        }
    }
}

/// What [`search_constant_action`] found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConstantAction {
    pub action: Vec<f32>,
    /// Clicks per page / 10 of the best candidate while it was scored.
    pub ectr: f64,
    /// The best score of each iteration.
    pub history: Vec<f64>,
}

/// Mean reward / 10 of `action` played in every slot for `steps` vector steps.
fn score_constant<E: Env>(env: &mut E, action: &[f32], steps: usize) -> Result<f64> {
    let n = env.num_envs();
    let actions: Vec<f32> = (0..n).flat_map(|_| action.iter().copied()).collect();
    let mut sum = 0.0;
    for _ in 0..steps {
        let s = env.step(&actions).map_err(env_err)?;
        sum += s.rewards.iter().map(|&r| f64::from(r)).sum::<f64>();
    }
    Ok(sum / (10.0 * (steps * n).max(1) as f64))
}

/// The cross-entropy method over constant actions in the env's action box, restarted with new
/// seeds until an action reaches `cfg.target_ectr` (or `cfg.restarts` runs are spent; the best
/// one found is returned either way, and `history` holds every iteration of every run).
pub fn search_constant_action<E: Env>(
    env: &mut E,
    cfg: CemConfig,
    seed: u64,
) -> Result<ConstantAction> {
    let mut best: Option<ConstantAction> = None;
    let mut history = Vec::new();
    for r in 0..cfg.restarts.max(1) {
        let found = cem_run(env, cfg, seed.wrapping_add(r as u64 * 0x9E37))?;
        history.extend_from_slice(&found.history);
        let done = found.ectr >= cfg.target_ectr;
        if best.as_ref().is_none_or(|b| found.ectr > b.ectr) {
            best = Some(found);
        }
        if done {
            break;
        }
    }
    let mut best =
        best.ok_or_else(|| Rq2Error::Config("constant-action search ran no restart".into()))?;
    best.history = history;
    Ok(best)
}

/// One cross-entropy run.
fn cem_run<E: Env>(env: &mut E, cfg: CemConfig, seed: u64) -> Result<ConstantAction> {
    if cfg.population == 0
        || cfg.elites == 0
        || cfg.elites > cfg.population
        || cfg.steps_per_candidate == 0
    {
        return Err(Rq2Error::Config(
            "constant-action search: need 1 <= elites <= population and steps_per_candidate >= 1"
                .into(),
        ));
    }
    let d = env.act_dim();
    let (lo, hi) = env.action_bounds();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut mean = vec![0f64; d];
    let mut std = vec![cfg.init_std; d];
    let mut best = (f64::NEG_INFINITY, vec![0f32; d]);
    let mut history = Vec::with_capacity(cfg.iterations);
    for _ in 0..cfg.iterations {
        let mut scored = Vec::with_capacity(cfg.population);
        for _ in 0..cfg.population {
            let a: Vec<f32> = (0..d)
                .map(|j| {
                    let z: f64 = rng.sample(rand_distr::StandardNormal);
                    (mean[j] + std[j] * z).clamp(f64::from(lo), f64::from(hi)) as f32
                })
                .collect();
            let s = score_constant(env, &a, cfg.steps_per_candidate)?;
            scored.push((s, a));
        }
        scored.sort_by(|x, y| y.0.total_cmp(&x.0));
        if scored[0].0 > best.0 {
            best = scored[0].clone();
        }
        history.push(scored[0].0);
        let elites = &scored[..cfg.elites];
        for j in 0..d {
            let m = elites.iter().map(|e| f64::from(e.1[j])).sum::<f64>() / cfg.elites as f64;
            let v = elites
                .iter()
                .map(|e| (f64::from(e.1[j]) - m).powi(2))
                .sum::<f64>()
                / cfg.elites as f64;
            mean[j] = m;
            std[j] = v.sqrt().max(0.02);
        }
    }
    Ok(ConstantAction {
        action: best.1,
        ectr: best.0,
        history,
    })
}

/// Settings of [`collect_expert`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExpertConfig {
    /// Expert episodes to keep (the paper: 100,000).
    pub episodes: usize,
    /// Keep an episode when its eCTR (clicks / (10 · pages)) exceeds this (the paper: 0.5).
    pub min_ectr: f64,
    /// Largest noise scale; each episode draws its scale uniformly in `[0, max_noise]`.
    pub max_noise: f64,
    /// Give up after this many episodes in all (an error says how many were kept).
    pub max_episodes: usize,
    pub cem: CemConfig,
}

impl Default for ExpertConfig {
    fn default() -> Self {
        ExpertConfig {
            episodes: 2_000,
            min_ectr: 0.5,
            max_noise: 0.6,
            max_episodes: 1_000_000,
            cem: CemConfig::default(),
        }
    }
}

/// What the expert data looks like.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpertStats {
    pub constant: ConstantAction,
    pub episodes_kept: usize,
    pub episodes_seen: usize,
    pub transitions: usize,
    /// Mean eCTR of the kept episodes.
    pub mean_ectr: f64,
    pub mean_pages: f64,
}

/// One slot's episode in progress.
#[derive(Default)]
struct Episode {
    obs: Vec<f32>,
    act: Vec<f32>,
    clicks: Vec<u32>,
    next_obs: Vec<f32>,
    noise: f64,
}

/// Plays the noisy constant expert in `env` until `cfg.episodes` episodes with eCTR above
/// `cfg.min_ectr` are kept, and returns their transitions (the next recommender action of a
/// transition is the one played on the next page; on an episode's last page it is the same
/// action, with `done = 1`).
pub fn collect_expert<E: Env>(
    env: &mut E,
    cfg: ExpertConfig,
    seed: u64,
) -> Result<(Transitions, ExpertStats)> {
    if cfg.episodes == 0 {
        return Err(Rq2Error::Config(
            "expert: episodes must be at least 1".into(),
        ));
    }
    let constant = search_constant_action(env, cfg.cem, seed)?;
    env.reset().map_err(env_err)?;
    let n = env.num_envs();
    let (od, ad) = (env.obs_dim(), env.act_dim());
    let (lo, hi) = env.action_bounds();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6578_7065_7274);
    let mut slots: Vec<Episode> = (0..n)
        .map(|_| Episode {
            noise: rng.random_range(0.0..=cfg.max_noise),
            ..Episode::default()
        })
        .collect();
    let mut data = Transitions::default();
    let (mut kept, mut seen, mut ectr_sum, mut pages_sum) = (0usize, 0usize, 0.0, 0usize);
    while kept < cfg.episodes {
        if seen >= cfg.max_episodes {
            return Err(Rq2Error::Data(format!(
                "expert: only {kept} of {seen} episodes had eCTR > {} (wanted {}); the constant \
                 action found scores {:.3}",
                cfg.min_ectr, cfg.episodes, constant.ectr
            )));
        }
        let obs = env.obs().to_vec();
        let mut actions = Vec::with_capacity(n * ad);
        for slot in &slots {
            let normal = Normal::new(0.0, slot.noise.max(1e-9))
                .map_err(|e| Rq2Error::Config(e.to_string()))?;
            actions.extend(constant.action.iter().map(|&a| {
                (f64::from(a) + normal.sample(&mut rng)).clamp(f64::from(lo), f64::from(hi)) as f32
            }));
        }
        let EnvStep {
            rewards,
            dones,
            truncated,
            next_obs,
            ..
        } = env.step(&actions).map_err(env_err)?;
        for i in 0..n {
            let slot = &mut slots[i];
            slot.obs.extend_from_slice(&obs[i * od..(i + 1) * od]);
            slot.act.extend_from_slice(&actions[i * ad..(i + 1) * ad]);
            slot.clicks
                .push(crate::hook::clicks_of(rewards[i]).map_err(env_err)?);
            slot.next_obs
                .extend_from_slice(&next_obs[i * od..(i + 1) * od]);
            if !(dones[i] || truncated[i]) {
                continue;
            }
            let ep = std::mem::replace(
                slot,
                Episode {
                    noise: rng.random_range(0.0..=cfg.max_noise),
                    ..Episode::default()
                },
            );
            seen += 1;
            let pages = ep.clicks.len();
            let ectr = ep.clicks.iter().map(|&c| f64::from(c)).sum::<f64>() / (10.0 * pages as f64);
            if ectr <= cfg.min_ectr || kept >= cfg.episodes {
                continue;
            }
            kept += 1;
            ectr_sum += ectr;
            pages_sum += pages;
            for t in 0..pages {
                let next_t = (t + 1).min(pages - 1);
                data.next_act
                    .extend_from_slice(&ep.act[next_t * ad..(next_t + 1) * ad]);
                data.done
                    .push(if t + 1 == pages && dones[i] { 1.0 } else { 0.0 });
            }
            data.obs.extend_from_slice(&ep.obs);
            data.act.extend_from_slice(&ep.act);
            data.clicks.extend_from_slice(&ep.clicks);
            data.next_obs.extend_from_slice(&ep.next_obs);
        }
    }
    let stats = ExpertStats {
        constant,
        episodes_kept: kept,
        episodes_seen: seen,
        transitions: data.len(),
        mean_ectr: ectr_sum / kept.max(1) as f64,
        mean_pages: pages_sum as f64 / kept.max(1) as f64,
    };
    Ok((data, stats))
}
