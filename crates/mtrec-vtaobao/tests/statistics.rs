//! Seeded statistical checks of the sampled simulator against the Python env (`stats.json`), and
//! the exact behaviour of two constant policies.
//!
//! Every tolerance is `K` standard errors of the difference (ours and the reference's, each
//! estimated from the data), so a real discrepancy fails while sampling noise does not; the seeds
//! are fixed, so a run is reproducible.

use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use mtrec_vtaobao::{
    evaluate_policy, softmax_f64, EnvConfig, VecEnv, VirtualTb, ACT_DIM, LEAVE_CLASSES, OBS_DIM,
    USER_DIM, USER_GROUPS,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

/// Standard errors allowed between our estimate and the reference.
const K: f64 = 4.0;

fn model() -> Option<Arc<VirtualTb>> {
    let p = mtrec_data::testing::shared_path("data/virtualtaobao/virtualtb_v0.safetensors")?;
    Some(Arc::new(
        VirtualTb::load(&p, &Device::Cpu).expect("load the simulator"),
    ))
}

fn stats() -> Option<Value> {
    let p = mtrec_data::testing::shared_path("data/virtualtaobao/stats.json")?;
    Some(serde_json::from_str(&std::fs::read_to_string(p).unwrap()).expect("stats.json"))
}

fn num(v: &Value, path: &[&str]) -> f64 {
    let mut x = v;
    for k in path {
        x = &x[*k];
    }
    x.as_f64()
        .unwrap_or_else(|| panic!("stats.json: {path:?} is not a number"))
}

fn zeros(obs: &[f32]) -> Vec<f32> {
    vec![0.0; obs.len() / OBS_DIM * ACT_DIM]
}

/// Users drawn by the generator with their leave distributions: the leave statistics are
/// Rao-Blackwellised (the mean of each user's expected leave, not of sampled leaves), as the
/// reference's `leave_expected_mean_rb_200k`.
#[test]
fn users_and_leave_match_the_python_env() {
    let (Some(model), Some(st)) = (model(), stats()) else {
        return;
    };
    let n = 50_000;
    let mut rng = ChaCha8Rng::seed_from_u64(2019);
    let users = model.sample_users(n, &mut rng).unwrap();
    let logits = model.leave_logits_flat(&users).unwrap();

    // E[leave] and P(leave = 1), P(leave = 2).
    let (mut e, mut e2) = (0.0, 0.0);
    let mut pmf = vec![0.0; LEAVE_CLASSES];
    let (mut p1sq, mut p2sq) = (0.0, 0.0);
    for row in logits.chunks_exact(LEAVE_CLASSES) {
        let p = softmax_f64(row);
        let m: f64 = p.iter().enumerate().map(|(k, pk)| k as f64 * pk).sum();
        e += m;
        e2 += m * m;
        for (acc, pk) in pmf.iter_mut().zip(&p) {
            *acc += pk;
        }
        p1sq += p[1] * p[1];
        p2sq += p[2] * p[2];
    }
    let nf = n as f64;
    let mean = e / nf;
    let se = ((e2 / nf - mean * mean) / nf).sqrt();
    let ref_mean = num(&st, &["leave_expected_mean_rb_200k"]);
    let ref_se = num(&st, &["leave_expected_mean_se"]);
    let tol = K * (se * se + ref_se * ref_se).sqrt();
    eprintln!("E[leave] {mean:.4} ± {se:.4} (s.e.), reference {ref_mean:.4} ± {ref_se:.4}, tolerance {tol:.3}");
    assert!((mean - ref_mean).abs() <= tol);

    let ref_pmf = st["leave_marginal_pmf"]
        .as_array()
        .expect("leave_marginal_pmf");
    assert_eq!(ref_pmf.len(), LEAVE_CLASSES);
    for (k, sq) in [(1usize, p1sq), (2, p2sq)] {
        let p = pmf[k] / nf;
        let want = ref_pmf[k].as_f64().unwrap();
        let se = ((sq / nf - p * p) / nf).sqrt();
        // The reference's own error: at most that of a binomial frequency over 200k users.
        let ref_se = (want * (1.0 - want) / 200_000.0).sqrt();
        let tol = K * (se * se + ref_se * ref_se).sqrt();
        eprintln!("P(leave = {k}) {p:.4}, reference {want:.4}, tolerance {tol:.4}");
        assert!((p - want).abs() <= tol);
    }
    assert!(pmf[0] / nf < 1e-6, "the leave model (almost) never draws 0");

    // Sampled user-attribute frequencies against the reference's over 200k users.
    let marg = st["user_group_marginals_200k"]
        .as_array()
        .expect("user_group_marginals_200k");
    assert_eq!(marg.len(), USER_GROUPS.len());
    let mut counts = vec![0usize; USER_DIM];
    for u in users.chunks_exact(USER_DIM) {
        assert_eq!(u.iter().sum::<f32>(), 11.0, "one category per attribute");
        for (c, &x) in counts.iter_mut().zip(u) {
            *c += usize::from(x == 1.0);
        }
    }
    let mut off = 0;
    let mut worst = 0f64;
    for (g, (size, want)) in USER_GROUPS.iter().zip(marg).enumerate() {
        let want = want.as_array().expect("a group's marginals");
        assert_eq!(want.len(), *size);
        for (j, w) in want.iter().enumerate() {
            let w = w.as_f64().unwrap();
            let f = counts[off + j] as f64 / nf;
            // Binomial s.e. of both frequencies (the floor covers categories of probability 0).
            let se = (w.max(1e-4) * (1.0 - w) * (1.0 / nf + 1.0 / 200_000.0)).sqrt();
            worst = worst.max((f - w).abs() / se);
            assert!(
                (f - w).abs() <= 4.5 * se,
                "group {g} category {j}: {f:.4} vs {w:.4} (s.e. {se:.4})"
            );
        }
        off += size;
    }
    eprintln!(
        "user attribute frequencies: worst |difference| = {worst:.2} s.e. over 88 categories"
    );
}

/// The all-zero action against the torch env's 3000 episodes (`policy_zeros`).
#[test]
fn zero_action_ectr_matches_the_python_env() {
    let (Some(model), Some(st)) = (model(), stats()) else {
        return;
    };
    let episodes = 12_000;
    let r = evaluate_policy(model, 256, episodes, 7, EnvConfig::default(), zeros).unwrap();
    let ref_episodes = 3000.0;
    // The reference's s.e., scaled from ours by the episode counts (same population).
    let scale = (episodes as f64 / ref_episodes).sqrt();
    let checks = [
        (
            "ratio of sums",
            r.ratio_of_sums,
            r.ratio_ci95_half_width / 1.96,
            num(&st, &["policy_zeros", "ctr_ratio_of_sums"]),
        ),
        (
            "per-episode mean",
            r.per_episode_mean,
            r.ci95_half_width / 1.96,
            num(&st, &["policy_zeros", "ctr_mean_per_ep"]),
        ),
    ];
    for (what, got, se, want) in checks {
        let tol = K * se * (1.0 + scale * scale).sqrt();
        eprintln!(
            "zeros, eCTR {what}: {got:.4} ± {se:.4} (s.e.) over {episodes} episodes, reference {want:.4}, tolerance {tol:.4}"
        );
        assert!((got - want).abs() <= tol, "{what}: {got} vs {want}");
    }
    // Episode length does not depend on the policy: compare with the leave model's mean.
    let want = num(&st, &["leave_expected_mean_rb_200k"]);
    eprintln!(
        "zeros: mean episode length {:.3} (E[leave] {want:.3})",
        r.mean_pages
    );
    // The length's sd is about 13 pages.
    assert!((r.mean_pages - want).abs() <= K * 13.0 / (episodes as f64).sqrt());
}

/// `best_const_action.json` yields 9 clicks on every page, whatever the user and page.
#[test]
fn best_constant_action_gives_nine_clicks_on_every_page() {
    let Some(model) = model() else { return };
    let path = mtrec_data::testing::shared_path("data/virtualtaobao/best_const_action.json")
        .expect("best_const_action.json beside the weights");
    let a: Vec<f32> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(a.len(), ACT_DIM);
    let n = 64;
    let actions: Vec<f32> = a.iter().copied().cycle().take(n * ACT_DIM).collect();
    let mut env = VecEnv::new(model.clone(), n, EnvConfig::default(), 3).unwrap();
    for _ in 0..200 {
        let out = env.step(&actions).unwrap();
        assert!(out.rewards.iter().all(|&r| r == 9.0), "{:?}", out.rewards);
        for ep in out.episodes.into_iter().flatten() {
            assert_eq!(ep.clicks, 9 * ep.pages);
        }
    }
    let r = evaluate_policy(model, 64, 1000, 4, EnvConfig::default(), |obs| {
        a.iter()
            .copied()
            .cycle()
            .take(obs.len() / OBS_DIM * ACT_DIM)
            .collect()
    })
    .unwrap();
    eprintln!(
        "best constant: eCTR {} (per episode), {} (ratio)",
        r.per_episode_mean, r.ratio_of_sums
    );
    assert!((r.per_episode_mean - 0.9).abs() < 1e-12 && (r.ratio_of_sums - 0.9).abs() < 1e-12);
}

/// The all +1 action never gets a click.
#[test]
fn all_ones_action_gets_no_clicks() {
    let Some(model) = model() else { return };
    let r = evaluate_policy(model, 64, 1000, 5, EnvConfig::default(), |obs| {
        vec![1.0; obs.len() / OBS_DIM * ACT_DIM]
    })
    .unwrap();
    eprintln!("all +1: eCTR {} / {}", r.per_episode_mean, r.ratio_of_sums);
    assert_eq!(r.per_episode_mean, 0.0);
    assert_eq!(r.ratio_of_sums, 0.0);
}

/// Steps per second of a 64-user environment (prints the figure; run with
/// `cargo test -p mtrec-vtaobao --release --test statistics -- --ignored --nocapture`).
#[test]
#[ignore = "timing, not a check"]
fn step_throughput() {
    let Some(model) = model() else { return };
    for n in [1usize, 64, 256] {
        let mut env = VecEnv::new(model.clone(), n, EnvConfig::default(), 1).unwrap();
        let actions = vec![0.0; n * ACT_DIM];
        for _ in 0..50 {
            env.step(&actions).unwrap();
        }
        let steps = 20_000 / n.max(8) * 8;
        let t = Instant::now();
        for _ in 0..steps {
            env.step(&actions).unwrap();
        }
        let s = t.elapsed().as_secs_f64();
        eprintln!(
            "N = {n}: {:.0} vector steps/s ({:.1} µs per step), {:.0} user-steps/s",
            steps as f64 / s,
            1e6 * s / steps as f64,
            (steps * n) as f64 / s
        );
    }
}
