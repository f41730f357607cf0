//! The RQ2 protocol (paper §5.2): expert data → mental reward → PPO and SAC, each trained with and
//! without `κ·r_mental` at equal budgets and seeds, evaluated along the way with the deterministic
//! policy → Figure 2.
//!
//! Pairing: within a seed, both variants of an algorithm start from the same weights, see the same
//! simulator draws and the same evaluation users; only the reward they train on differs. Every run
//! is saved as it finishes (`runs/<algo>-<variant>-s<seed>.json`, keyed by a fingerprint of its
//! settings), so an interrupted experiment picks up where it stopped.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use mtrec_rl::{evaluate, Env, NoHook, Policy, Ppo, PpoConfig, RewardHook, Sac, SacConfig};
use mtrec_vtaobao::{EctrReport, EpisodeStats};
use serde::{Deserialize, Serialize};

use crate::error::{Result, Rq2Error};
use crate::expert::{collect_expert, ExpertConfig, ExpertStats};
use crate::hook::MentalHook;
use crate::mental::{fit_mental_with_progress, MentalConfig, MentalFit, MentalReward};
use crate::report::{Curve, EvalPoint};

/// One profile of `experiments/fig2.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fig2Config {
    /// Weight of the mental reward (paper: 0.2).
    pub kappa: f32,
    pub seeds: Vec<u64>,
    /// `ppo`, `sac` or both.
    pub algorithms: Vec<String>,
    /// Environment steps (pages) of each training run.
    pub env_steps: u64,
    /// Evaluate every this many environment steps (and at the start).
    pub eval_every: u64,
    /// Episodes of each evaluation.
    pub eval_episodes: usize,
    /// Parallel users while training.
    pub train_envs: usize,
    /// Seed of the expert data and of the mental reward.
    pub expert_seed: u64,
    #[serde(default)]
    pub expert: ExpertConfig,
    #[serde(default)]
    pub mental: MentalConfig,
    #[serde(default)]
    pub ppo: PpoConfig,
    #[serde(default)]
    pub sac: SacConfig,
}

impl Fig2Config {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Rq2Error::Config(format!("fig2: {m}")));
        if self.seeds.is_empty() {
            return bad("seeds is empty".into());
        }
        if let Some(a) = self
            .algorithms
            .iter()
            .find(|a| !matches!(a.as_str(), "ppo" | "sac"))
        {
            return bad(format!("unknown algorithm '{a}' (known: ppo, sac)"));
        }
        if self.algorithms.is_empty() || self.env_steps == 0 || self.eval_every == 0 {
            return bad("need an algorithm, env_steps >= 1 and eval_every >= 1".into());
        }
        if self.eval_episodes == 0 || self.train_envs == 0 {
            return bad("eval_episodes and train_envs must be at least 1".into());
        }
        if !self.kappa.is_finite() || self.kappa < 0.0 {
            return bad(format!("kappa must be >= 0, got {}", self.kappa));
        }
        self.mental.validate()?;
        self.ppo
            .validate()
            .map_err(|e| Rq2Error::Config(format!("fig2 ppo: {e}")))?;
        self.sac
            .validate()
            .map_err(|e| Rq2Error::Config(format!("fig2 sac: {e}")))?;
        Ok(())
    }
}

/// A finished run as saved in `runs/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub fingerprint: String,
    pub curve: Curve,
    pub seconds: f64,
    /// Mean `κ·r_mental` added per transition (0 for `plain`).
    pub mean_extra_reward: f64,
}

/// What [`run_fig2`] produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fig2Outcome {
    pub expert: ExpertStats,
    pub mental: MentalFit,
    pub runs: Vec<RunRecord>,
}

/// Progress callbacks (the xtask draws a bar with them).
pub trait Progress {
    fn stage(&mut self, what: &str);
    /// A long stage (a training run, the mental-reward fit) advanced to `done` of `total` steps.
    fn run_step(&mut self, run: &str, done: u64, total: u64);
}

/// A progress sink that says nothing.
pub struct Quiet;

impl Progress for Quiet {
    fn stage(&mut self, _: &str) {}
    fn run_step(&mut self, _: &str, _: u64, _: u64) {}
}

/// Either agent.
enum Agent {
    Ppo(Box<Ppo>),
    Sac(Box<Sac>),
}

impl Agent {
    fn env_steps(&self) -> u64 {
        match self {
            Agent::Ppo(a) => a.env_steps(),
            Agent::Sac(a) => a.env_steps(),
        }
    }

    fn learn<E: Env, H: RewardHook>(
        &mut self,
        env: &mut E,
        hook: &mut H,
        steps: u64,
    ) -> Result<()> {
        let r = match self {
            Agent::Ppo(a) => a.learn(env, hook, steps).map(|_| ()),
            Agent::Sac(a) => a.learn(env, hook, steps).map(|_| ()),
        };
        r.map_err(|e| Rq2Error::Rl(e.to_string()))
    }

    fn policy(&self) -> &dyn Policy {
        match self {
            Agent::Ppo(a) => a.as_ref(),
            Agent::Sac(a) => a.as_ref(),
        }
    }
}

/// eCTR of the deterministic policy over `episodes` fresh episodes of `env`: the per-episode mean
/// of clicks / (10 · pages) and the ratio of sums ([`EctrReport`]; an episode's return is its
/// clicks).
pub fn ectr_of<E: Env>(policy: &dyn Policy, env: &mut E, episodes: usize) -> Result<(f64, f64)> {
    let r = evaluate(policy, env, &mut NoHook, episodes, 10_000_000)
        .map_err(|e| Rq2Error::Rl(e.to_string()))?;
    let stats: Vec<EpisodeStats> = r
        .episodes
        .iter()
        .map(|e| EpisodeStats {
            clicks: e.raw_return.round() as u32,
            pages: e.len as u32,
        })
        .collect();
    let report = EctrReport::from_episodes(&stats)
        .ok_or_else(|| Rq2Error::Rl("the evaluation finished no episode".into()))?;
    Ok((report.per_episode_mean, report.ratio_of_sums))
}

/// The first 16 hex digits of the SHA-256 of `key` as JSON: the name under which a run or the
/// mental reward is saved.
fn fingerprint(key: &impl Serialize) -> Result<String> {
    use sha2::{Digest, Sha256};
    let json = serde_json::to_string(key).map_err(|e| Rq2Error::Data(e.to_string()))?;
    Ok(hex::encode(Sha256::digest(json.as_bytes()))[..16].to_owned())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    mtrec_data::io::write_atomic(path, bytes).map_err(|e| Rq2Error::Data(e.to_string()))
}

/// Runs the whole protocol. `make_env(n, seed)` builds a simulator with `n` parallel users whose
/// draws are seeded by `seed`; `runs_dir` keeps the finished runs (resumable).
pub fn run_fig2<E, F>(
    cfg: &Fig2Config,
    make_env: F,
    runs_dir: &Path,
    device: &Device,
    progress: &mut dyn Progress,
) -> Result<Fig2Outcome>
where
    E: Env,
    F: Fn(usize, u64) -> Result<E>,
{
    cfg.validate()?;
    let (mental_model, expert, mental) = mental_reward(cfg, &make_env, runs_dir, device, progress)?;
    // The runs depend on the expert data and the mental reward through their settings and seed.
    let upstream = format!("{:?}", (&expert.constant.action, mental.last_loss));
    let mut runs = Vec::new();
    for algo in &cfg.algorithms {
        for &seed in &cfg.seeds {
            for variant in ["plain", "mtrec"] {
                let name = format!("{algo}-{variant}-s{seed}");
                let path: PathBuf = runs_dir.join(format!("{name}.json"));
                let fp = fingerprint(&(cfg, algo, variant, seed, &upstream))?;
                if let Ok(text) = std::fs::read_to_string(&path) {
                    if let Ok(r) = serde_json::from_str::<RunRecord>(&text) {
                        if r.fingerprint == fp {
                            progress.stage(&format!("{name}: done before, reused"));
                            runs.push(r);
                            continue;
                        }
                    }
                }
                progress.stage(&format!("training {name}"));
                let hook =
                    (variant == "mtrec").then(|| MentalHook::new(mental_model.clone(), cfg.kappa));
                let record = train_one(
                    cfg, algo, variant, seed, &make_env, hook, device, &name, progress,
                )?;
                let record = RunRecord {
                    fingerprint: fp,
                    ..record
                };
                let json = serde_json::to_vec_pretty(&record)
                    .map_err(|e| Rq2Error::Data(e.to_string()))?;
                write_atomic(&path, &json)?;
                runs.push(record);
            }
        }
    }
    Ok(Fig2Outcome {
        expert,
        mental,
        runs,
    })
}

/// The expert data's summary and the fitted mental reward, from `runs_dir` when an earlier call
/// with the same expert and mental-reward settings saved them, else collected and fitted (and
/// saved: `mental-<fingerprint>.{safetensors,json}`).
fn mental_reward<E, F>(
    cfg: &Fig2Config,
    make_env: &F,
    runs_dir: &Path,
    device: &Device,
    progress: &mut dyn Progress,
) -> Result<(MentalReward, ExpertStats, MentalFit)>
where
    E: Env,
    F: Fn(usize, u64) -> Result<E>,
{
    let fp = fingerprint(&(&cfg.expert, &cfg.mental, cfg.expert_seed))?;
    let weights = runs_dir.join(format!("mental-{fp}.safetensors"));
    let meta = runs_dir.join(format!("mental-{fp}.json"));
    if weights.exists() && meta.exists() {
        let text = std::fs::read_to_string(&meta).map_err(|source| Rq2Error::Io {
            path: meta.clone(),
            source,
        })?;
        let (expert, fit): (ExpertStats, MentalFit) = serde_json::from_str(&text)
            .map_err(|e| Rq2Error::Data(format!("{}: {e}", meta.display())))?;
        let mut varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let model = MentalReward::new(cfg.mental, vb)?;
        varmap
            .load(&weights)
            .map_err(|e| Rq2Error::Data(format!("{}: {e}", weights.display())))?;
        progress.stage("expert data and mental reward: done before, reused");
        return Ok((model, expert, fit));
    }
    progress.stage("collecting expert episodes");
    let mut expert_env = make_env(16, cfg.expert_seed)?;
    let (data, expert) = collect_expert(&mut expert_env, cfg.expert, cfg.expert_seed)?;
    progress.stage("fitting the mental reward (QR-IQL)");
    let (varmap, model, fit) = fit_mental_with_progress(
        &data,
        cfg.mental,
        cfg.expert_seed,
        device,
        &mut |done, all| progress.run_step("mental reward", done as u64, all as u64),
    )?;
    std::fs::create_dir_all(runs_dir).map_err(|source| Rq2Error::Io {
        path: runs_dir.to_path_buf(),
        source,
    })?;
    let tmp = weights.with_extension("safetensors.tmp");
    varmap
        .save(&tmp)
        .map_err(|e| Rq2Error::Data(format!("{}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, &weights).map_err(|source| Rq2Error::Io {
        path: weights.clone(),
        source,
    })?;
    let json =
        serde_json::to_vec_pretty(&(&expert, &fit)).map_err(|e| Rq2Error::Data(e.to_string()))?;
    write_atomic(&meta, &json)?;
    Ok((model, expert, fit))
}

#[allow(clippy::too_many_arguments)]
fn train_one<E, F>(
    cfg: &Fig2Config,
    algo: &str,
    variant: &str,
    seed: u64,
    make_env: &F,
    hook: Option<MentalHook>,
    device: &Device,
    name: &str,
    progress: &mut dyn Progress,
) -> Result<RunRecord>
where
    E: Env,
    F: Fn(usize, u64) -> Result<E>,
{
    let started = Instant::now();
    // Same simulator draws for both variants of a seed; evaluation users apart from training ones.
    let mut env = make_env(cfg.train_envs, seed)?;
    let spec = mtrec_rl::EnvSpec::of(&env);
    let rl = |e: mtrec_rl::RlError| Rq2Error::Rl(e.to_string());
    let mut agent = match algo {
        "ppo" => Agent::Ppo(Box::new(
            Ppo::new(
                PpoConfig {
                    seed,
                    ..cfg.ppo.clone()
                },
                spec,
                device,
            )
            .map_err(rl)?,
        )),
        _ => Agent::Sac(Box::new(
            Sac::new(
                SacConfig {
                    seed,
                    ..cfg.sac.clone()
                },
                spec,
                device,
            )
            .map_err(rl)?,
        )),
    };
    let eval_seed = seed.wrapping_mul(1_000_003).wrapping_add(0x0e7a1);
    let eval_at = |agent: &Agent| -> Result<EvalPoint> {
        let mut eval_env = make_env(cfg.eval_episodes.min(64), eval_seed)?;
        let (ectr, ectr_ratio) = ectr_of(agent.policy(), &mut eval_env, cfg.eval_episodes)?;
        Ok(EvalPoint {
            env_steps: agent.env_steps(),
            ectr,
            ectr_ratio,
        })
    };
    let mut points = vec![eval_at(&agent)?];
    let mut hook = hook;
    while agent.env_steps() < cfg.env_steps {
        let chunk = cfg.eval_every.min(cfg.env_steps - agent.env_steps());
        match hook.as_mut() {
            Some(h) => agent.learn(&mut env, h, chunk)?,
            None => agent.learn(&mut env, &mut NoHook, chunk)?,
        }
        points.push(eval_at(&agent)?);
        progress.run_step(name, agent.env_steps(), cfg.env_steps);
    }
    Ok(RunRecord {
        fingerprint: String::new(),
        curve: Curve {
            algo: algo.to_owned(),
            variant: variant.to_owned(),
            seed,
            points,
        },
        seconds: started.elapsed().as_secs_f64(),
        mean_extra_reward: hook.map(|h| h.mean_extra()).unwrap_or(0.0),
    })
}
