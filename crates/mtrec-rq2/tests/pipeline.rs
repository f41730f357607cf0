//! The whole RQ2 protocol on the real simulator at a tiny budget (skips without ../shared).

use std::sync::Arc;

use candle_core::Device;
use mtrec_rl::{Env, PpoConfig, SacConfig};
use mtrec_rq2::{report, run_fig2, ExpertConfig, Fig2Config, MentalConfig, Quiet, VtbEnv};
use mtrec_vtaobao::VirtualTb;

fn tiny() -> Fig2Config {
    Fig2Config {
        kappa: 0.2,
        seeds: vec![1, 2],
        algorithms: vec!["ppo".into(), "sac".into()],
        env_steps: 192,
        eval_every: 96,
        eval_episodes: 6,
        train_envs: 4,
        expert_seed: 7,
        expert: ExpertConfig {
            episodes: 20,
            ..ExpertConfig::default()
        },
        mental: MentalConfig {
            hidden: [32, 32],
            steps: 40,
            batch_size: 64,
            ..MentalConfig::default()
        },
        ppo: PpoConfig {
            n_steps: 16,
            batch_size: 32,
            n_epochs: 2,
            ..PpoConfig::default()
        },
        sac: SacConfig {
            learning_starts: 32,
            batch_size: 32,
            pi_hidden: vec![32, 32],
            qf_hidden: vec![32, 32],
            ..SacConfig::default()
        },
    }
}

#[test]
fn tiny_protocol_runs_pairs_and_resumes() {
    let Some(path) =
        mtrec_data::testing::shared_path("data/virtualtaobao/virtualtb_v0.safetensors")
    else {
        return;
    };
    let model = Arc::new(VirtualTb::load(&path, &Device::Cpu).unwrap());
    let make = |n: usize, seed: u64| VtbEnv::new(model.clone(), n, seed);
    let env = make(2, 1).unwrap();
    assert_eq!((env.obs_dim(), env.act_dim()), (91, 27));

    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny();
    let out = run_fig2(&cfg, make, dir.path(), &Device::Cpu, &mut Quiet).unwrap();
    // The constant action the expert plays around is good: the paper's threshold is 0.5.
    assert!(out.expert.constant.ectr > 0.5, "{:?}", out.expert.constant);
    assert_eq!(out.expert.episodes_kept, 20);
    assert!(out.expert.mean_ectr > 0.5);
    assert!(out.mental.last_loss.is_finite());
    // 2 algorithms × 2 seeds × 2 variants, each evaluated at 0, 96 and 192 steps (PPO rounds up
    // to whole rollouts of 16 × 4).
    assert_eq!(out.runs.len(), 8);
    for r in &out.runs {
        assert_eq!(r.curve.points.len(), 3, "{:?}", r.curve);
        assert_eq!(r.curve.points[0].env_steps, 0);
        for p in &r.curve.points {
            assert!(
                (0.0..=1.0).contains(&p.ectr) && (0.0..=1.0).contains(&p.ectr_ratio),
                "{p:?}"
            );
        }
        if r.curve.variant == "plain" {
            assert_eq!(r.mean_extra_reward, 0.0);
        } else {
            assert!(r.mean_extra_reward != 0.0 && r.mean_extra_reward.is_finite());
        }
    }
    // Paired by seed: both variants start from the same weights and evaluation users.
    for algo in ["ppo", "sac"] {
        for seed in [1, 2] {
            let start = |v: &str| {
                out.runs
                    .iter()
                    .find(|r| r.curve.algo == algo && r.curve.seed == seed && r.curve.variant == v)
                    .unwrap()
                    .curve
                    .points[0]
            };
            assert_eq!(start("plain"), start("mtrec"), "{algo} seed {seed}");
        }
    }
    let curves: Vec<_> = out.runs.iter().map(|r| r.curve.clone()).collect();
    let md = report::markdown(&curves, "");
    assert!(
        md.contains("| PPO | without") && md.contains("| SAC | with"),
        "{md}"
    );

    // A second call finds the expert data, the mental reward and every run done, and returns
    // the same outcome.
    let saved: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("mental-"))
        .collect();
    assert_eq!(saved.len(), 2, "{saved:?}");
    let again = run_fig2(&cfg, make, dir.path(), &Device::Cpu, &mut Quiet).unwrap();
    assert_eq!(again, out);
    // Another κ is another experiment: its runs are not reused.
    let mut other = cfg.clone();
    other.kappa = 0.5;
    other.algorithms = vec!["ppo".into()];
    other.seeds = vec![1];
    let fresh = run_fig2(&other, make, dir.path(), &Device::Cpu, &mut Quiet).unwrap();
    assert_ne!(fresh.runs[0].fingerprint, out.runs[0].fingerprint);
}

#[test]
fn bad_settings_are_named() {
    let mut c = tiny();
    c.algorithms = vec!["dqn".into()];
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("unknown algorithm 'dqn'"), "{e}");
    let mut c = tiny();
    c.seeds.clear();
    assert!(c.validate().is_err());
    let mut c = tiny();
    c.kappa = f32::NAN;
    assert!(c.validate().is_err());
}
