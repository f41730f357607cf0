//! Numerical tests: hand-computed rankings and correlations, a calibration whose answer is known, and
//! the join with a `tiny` world generated here.

use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::Device;
use mtrec_data::{prepare_files, Format, PrepareConfig, PreparedDataset, ReadOptions};
use mtrec_mdp::{samples, Batcher, Split};
use mtrec_reward::{build_q_model, Profile, RewardConfig, RewardKind};
use mtrec_synth::{files, SynthConfig, World};
use mtrec_train::testing::tiny_builder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::*;

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn rank_step_by_hand_with_shifted_gains_and_ties() {
    // Scores: candidate 1 first, then 0 and 2 tied (candidate order: 0 before 2), then 3.
    let scores = [0.5, 0.9, 0.5, 0.1];
    let gains = [1.0, -1.0, 3.0, 0.0];
    let r = rank_step(&scores, &gains, 2);
    assert_eq!(r.reward_at_k, 0.0); // (−1 + 1) / 2
    assert_eq!(r.reward_at_1, -1.0);
    // Shifted gains (g + 1): [2, 0, 4, 1]. DCG@2 = 0/log2(2) + 2/log2(3); IDCG@2 = 4 + 2/log2(3).
    let l3 = 3f64.log2();
    let want = (2.0 / l3) / (4.0 + 2.0 / l3);
    assert!(close(r.ndcg_at_k, want, 1e-12), "{} vs {want}", r.ndcg_at_k);
    assert!(close(r.ndcg_at_k, 0.239_812, 1e-6));
    assert_eq!(r.oracle_at_k, 2.0); // (3 + 1) / 2
    assert_eq!(r.oracle_at_1, 3.0);
    assert_eq!(r.random, 0.75);
    // Breaking the tie the other way would give a different top-2.
    let swapped = rank_step(&[0.5, 0.9, 0.5 + 1e-9, 0.1], &gains, 2);
    assert_eq!(swapped.reward_at_k, 1.0);
    // A perfect ranking, k beyond the candidates, equal gains.
    let perfect = rank_step(&[3.0, 1.0, 2.0], &[5.0, -2.0, 0.5], 10);
    assert!(close(perfect.ndcg_at_k, 1.0, 1e-15));
    assert!(close(perfect.reward_at_k, 3.5 / 3.0, 1e-15));
    assert_eq!(rank_step(&[0.0, 1.0], &[0.3, 0.3], 1).ndcg_at_k, 1.0);
    // The worst ranking of two gets NDCG@1 = 0 (the shifted worst gain is 0).
    assert_eq!(rank_step(&[1.0, 0.0], &[-1.0, 2.0], 1).ndcg_at_k, 0.0);
}

#[test]
fn spearman_uses_midranks_for_ties() {
    let s = mtrec_reward::inspect::spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 2.0, 3.0, 4.0]);
    // Ranks [1, 2.5, 2.5, 4] vs [1, 2, 3, 4]: 4.5 / sqrt(4.5 · 5).
    assert!(close(s, 4.5 / (4.5f64 * 5.0).sqrt(), 1e-12), "{s}");
    assert!(close(s, 0.948_683, 1e-6));
    let anti = mtrec_reward::inspect::spearman(&[1.0, 2.0, 3.0], &[9.0, 4.0, 4.0]);
    // [1, 2, 3] vs [3, 1.5, 1.5]: cov −1.5, vx 2, vy 1.5.
    assert!(close(anti, -1.5 / (2.0f64 * 1.5).sqrt(), 1e-12), "{anti}");
    assert!(close(
        pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]),
        1.0,
        1e-12
    ));
}

/// A model whose quantile heads are the exact logistic quantiles of each engagement's reward, on a
/// scale `(y − 3)/2`: after the affine map, coverage is τ; heads that are too narrow are caught.
#[test]
fn calibration_recovers_a_known_distribution() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let n = 10;
    let taus = mtrec_reward::quantile_taus(n);
    let logit = |p: f64| (p / (1.0 - p)).ln();
    let mut draw = |count: usize, width: f64| {
        let mut means = Vec::new();
        let mut qs = Vec::new();
        let mut ys = Vec::new();
        for _ in 0..count {
            let mu: f64 = rng.random_range(-2.0..2.0);
            let u: f64 = rng.random_range(1e-9..1.0 - 1e-9);
            ys.push(3.0 + 2.0 * (mu + logit(u))); // true reward
            let q: Vec<f64> = taus.iter().map(|&t| mu + width * logit(t)).collect();
            means.push(q.iter().sum::<f64>() / n as f64);
            qs.push(q);
        }
        (means, qs, ys)
    };
    let (fit_mean, _, fit_true) = draw(20_000, 1.0);
    let (_, qs, ys) = draw(20_000, 1.0);
    let c = quantile_calibration(&fit_mean, &fit_true, &qs, &ys);
    assert!(
        close(c.affine.0, 3.0, 0.1) && close(c.affine.1, 2.0, 0.05),
        "{:?}",
        c.affine
    );
    assert_eq!(c.taus, taus);
    for (cov, t) in c.coverage.iter().zip(&taus) {
        assert!(close(*cov, *t, 0.015), "coverage {cov} at τ {t}");
    }
    assert!(c.mean_abs_error < 0.01, "{}", c.mean_abs_error);
    assert_eq!(c.fit_engagements, 20_000);
    // Heads a third as wide: the outer quantiles cover far too little / too much.
    let (_, narrow, ys2) = draw(20_000, 1.0 / 3.0);
    let bad = quantile_calibration(&fit_mean, &fit_true, &narrow, &ys2);
    assert!(bad.mean_abs_error > 0.1, "{}", bad.mean_abs_error);
    assert!(
        bad.coverage[0] > 0.2 && bad.coverage[n - 1] < 0.8,
        "{:?}",
        bad.coverage
    );
    // Least squares by hand.
    let (a, b) = affine_fit(&[0.0, 1.0, 2.0], &[1.0, 3.0, 5.0]);
    assert!(close(a, 1.0, 1e-12) && close(b, 2.0, 1e-12));
    assert_eq!(affine_fit(&[1.0, 1.0], &[2.0, 4.0]), (3.0, 0.0));
}

struct Tiny {
    _dir: tempfile::TempDir,
    world_dir: PathBuf,
    world: World,
    truth: GroundTruth,
    ds: PreparedDataset,
}

fn prepare(world_dir: &std::path::Path) -> PreparedDataset {
    prepare_files(
        Format::Csv,
        &[world_dir.join(files::INTERACTIONS)],
        &ReadOptions::default(),
        &PrepareConfig::default(),
    )
    .unwrap()
}

/// The `tiny` world (seed 1234) written and prepared once for all tests.
fn tiny() -> &'static Tiny {
    static T: OnceLock<Tiny> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let world_dir = dir.path().join("world");
        let world = World::generate(&SynthConfig::preset("tiny", 1234).unwrap()).unwrap();
        world.write(&world_dir, false).unwrap();
        let truth = GroundTruth::load(&world_dir).unwrap();
        let ds = prepare(&world_dir);
        Tiny {
            _dir: dir,
            world_dir,
            world,
            truth,
            ds,
        }
    })
}

#[test]
fn counterfactual_reproduces_the_logged_expected_rewards() {
    let t = tiny();
    assert!(t.truth.exact_tastes());
    assert_eq!(t.truth.n_users(), 200);
    assert_eq!(t.truth.n_items(), 120);
    let mut n = 0;
    for u in 1..=200u32 {
        for (step, e) in t.truth.engagements(u).iter().enumerate() {
            let g = t.truth.expected_reward(u, step as u32, e.item);
            assert_eq!(g as f32, e.expected_reward, "user {u} step {step}");
            n += 1;
        }
    }
    assert_eq!(n, 1_756);
    // The step matters (fatigue): the same item later is worth less.
    let e = t.truth.engagement(1, 0).unwrap();
    assert!(t.truth.expected_reward(1, 10, e.item) < t.truth.expected_reward(1, 0, e.item));
    // Unknown ids give NaN, not a panic.
    assert!(t.truth.expected_reward(1, 0, 0).is_nan());
    assert!(t.truth.expected_reward(1, 0, 121).is_nan());
    assert!(t.truth.expected_reward(201, 0, 1).is_nan());
}

#[test]
fn the_join_is_on_zero_based_steps() {
    let t = tiny();
    t.truth.check_dataset(&t.ds).unwrap();
    for u in 1..=200u32 {
        let seq = t.ds.sequence(u as usize);
        let log = t.world.engagements(u);
        assert_eq!(t.truth.engagements(u).len(), seq.len());
        for (step, &item) in seq.iter().enumerate() {
            let e = t.truth.engagement(u, step as u32).unwrap();
            assert_eq!(e.item, item, "user {u} step {step}");
            assert_eq!(e.true_reward, log[step].reward);
            assert_eq!(e.satisfied, log[step].satisfied);
            assert_eq!(e.onboarding, log[step].onboarding);
        }
        assert!(t.truth.engagement(u, seq.len() as u32).is_none());
    }
    // A sample state (0-based step t >= 1) shows the item whose truth is at the same step.
    for s in samples(&t.ds, Split::All).iter().filter(|s| s.positive) {
        assert_eq!(
            s.item(&t.ds),
            t.truth.engagement(s.user, s.step).unwrap().item
        );
    }
    // Onboarding engagements are step 0 only.
    let onboarded = (1..=200u32)
        .filter(|&u| t.truth.engagement(u, 0).unwrap().onboarding)
        .count();
    assert_eq!(onboarded, 120);
}

#[test]
fn another_worlds_log_is_refused() {
    let t = tiny();
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other");
    World::generate(&SynthConfig::preset("tiny", 99).unwrap())
        .unwrap()
        .write(&other, false)
        .unwrap();
    let ds = prepare(&other);
    let err = t.truth.check_dataset(&ds).unwrap_err();
    assert!(matches!(err, TruthError::Mismatch(_)), "{err}");
    assert!(err.to_string().contains("in the world"), "{err}");
    // A world folder without its rewards names the file.
    std::fs::remove_file(other.join(files::REWARDS)).unwrap();
    let err = GroundTruth::load(&other).unwrap_err();
    assert!(err.to_string().contains("rewards.parquet"), "{err}");
    let err = GroundTruth::load(&dir.path().join("nothing")).unwrap_err();
    assert!(err.to_string().contains("no such folder"), "{err}");
    let _ = &t.world_dir;
}

#[test]
fn candidates_are_seeded_unseen_and_stable() {
    let t = tiny();
    let cfg = RankingConfig::default();
    let sets = candidate_sets(&t.ds, &cfg);
    assert!(!sets.is_empty());
    for c in &sets {
        let u = c.state.user as usize;
        let seq = t.ds.sequence(u);
        assert!(t.ds.is_test(u));
        assert!(c.state.step >= 1);
        assert_eq!(c.items.len(), 20);
        assert_eq!(c.items[0], seq[c.state.step as usize]);
        assert_eq!(c.items[1], t.ds.negatives(u)[c.state.step as usize]);
        for &i in &c.items[1..] {
            assert!(!seq.contains(&i), "user {u} engaged candidate {i}");
        }
        let mut d = c.items.clone();
        d.sort_unstable();
        d.dedup();
        assert_eq!(d.len(), 20, "distinct candidates");
    }
    assert_eq!(candidate_sets(&t.ds, &cfg), sets);
    // The last step only: the same candidates as before for those steps.
    let last = candidate_sets(
        &t.ds,
        &RankingConfig {
            max_steps_per_user: Some(1),
            ..cfg.clone()
        },
    );
    let users = sets
        .iter()
        .map(|c| c.state.user)
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(last.len(), users.len());
    for c in &last {
        assert_eq!(
            c.state.step as usize,
            t.ds.sequence(c.state.user as usize).len() - 1
        );
        assert!(sets.contains(c));
    }
    // Another seed, other candidates.
    let other = candidate_sets(
        &t.ds,
        &RankingConfig {
            seed: 7,
            ..cfg.clone()
        },
    );
    assert_ne!(other, sets);
}

#[test]
fn an_oracle_scorer_gets_ndcg_one_and_the_oracle_value() {
    let t = tiny();
    let cfg = RankingConfig::default();
    let truth = &t.truth;
    let oracle = ranking_metrics_with(truth, &t.ds, &cfg, "oracle", |rows| {
        Ok(rows
            .iter()
            .map(|(s, i)| truth.expected_reward(s.user, s.step, *i))
            .collect())
    })
    .unwrap();
    assert!(close(oracle.ndcg_at_k, 1.0, 1e-12), "{oracle:?}");
    assert!(close(
        oracle.mean_reward_at_k,
        oracle.oracle_mean_reward_at_k,
        1e-12
    ));
    assert!(close(
        oracle.mean_reward_at_1,
        oracle.oracle_mean_reward_at_1,
        1e-12
    ));
    assert!(close(oracle.gain_captured_at_k, 1.0, 1e-12));
    assert!(oracle.oracle_mean_reward_at_k > oracle.random_mean_reward);
    assert_eq!(oracle.mean_candidates, 20.0);
    assert_eq!(oracle.score, "oracle");
    // The anti-oracle is below random.
    let anti = ranking_metrics_with(truth, &t.ds, &cfg, "anti", |rows| {
        Ok(rows
            .iter()
            .map(|(s, i)| -truth.expected_reward(s.user, s.step, *i))
            .collect())
    })
    .unwrap();
    assert!(
        anti.ndcg_at_k < 0.5 && anti.gain_captured_at_k < 0.0,
        "{anti:?}"
    );
    // All scores tied: candidate order decides, so the top item is the logged positive.
    let flat =
        ranking_metrics_with(truth, &t.ds, &cfg, "flat", |rows| Ok(vec![0.0; rows.len()])).unwrap();
    assert!(close(
        flat.mean_reward_at_1,
        flat.logged_positive_reward,
        1e-12
    ));
    assert_eq!(flat.positive_hit_at_k, 1.0);
    assert_eq!(flat.steps, oracle.steps);
    // A non-finite score is an error naming the row.
    let err = ranking_metrics_with(truth, &t.ds, &cfg, "nan", |rows| {
        Ok(vec![f64::NAN; rows.len()])
    })
    .unwrap_err();
    assert!(err.to_string().contains("diverged"), "{err}");
}

#[test]
fn models_are_scored_on_arbitrary_candidates() {
    let t = tiny();
    let dev = Device::Cpu;
    let build = tiny_builder(4);
    let (_vm, ctr) = mtrec_train::build_model("tiny", &build, &t.ds, 3, &dev).unwrap();
    // Scoring the logged pair through batch_items gives the trainer's click logits.
    let states: Vec<_> = samples(&t.ds, Split::Test).into_iter().take(30).collect();
    let batcher = Batcher::new(&t.ds).with_layout(ctr.layout());
    let want = mtrec_train::score(&ctr, &batcher, &states, 8, &dev).unwrap();
    let rows: Vec<_> = states.iter().map(|s| (*s, s.item(&t.ds))).collect();
    let got = score_items(&ctr, &t.ds, &rows, 8, &dev).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!(close(*g, *w as f64, 1e-5), "{g} vs {w}");
    }
    let cfg = RankingConfig {
        candidates: 6,
        k: 3,
        ..RankingConfig::default()
    };
    let m = ranking_metrics(&t.truth, &t.ds, &ctr, 64, &dev, &cfg).unwrap();
    assert_eq!(m.score, "ctr-logit");
    assert!((0.0..=1.0).contains(&m.ndcg_at_k), "{m:?}");
    assert!(m.mean_reward_at_k <= m.oracle_mean_reward_at_k + 1e-12);
    assert!(m.mean_reward_at_k.is_finite() && m.random_mean_reward.is_finite());

    // A QR-IQL Q-network: ranked by its policy logit, and its rewards recovered.
    let rc = RewardConfig {
        kind: RewardKind::QrIql,
        quantiles: 4,
        ..RewardConfig::profile(Profile::Smoke)
    };
    let (_qvm, q) = build_q_model("tiny", &build, &t.ds, &rc, &dev).unwrap();
    let mq = ranking_metrics(&t.truth, &t.ds, &q, 64, &dev, &cfg).unwrap();
    assert_eq!(mq.score, "q-logit");
    let rec = reward_recovery(&t.truth, &t.ds, &q, &rc, &dev).unwrap();
    let test_pos = samples(&t.ds, Split::Test)
        .iter()
        .filter(|s| s.positive)
        .count();
    assert_eq!(rec.engagements, test_pos);
    assert_eq!(rec.kind, "qr-iql");
    for v in [
        rec.spearman_true,
        rec.spearman_expected,
        rec.pearson_true,
        rec.mean_r_satisfied,
        rec.mean_r_disappointed,
    ] {
        assert!(v.is_finite() && v.abs() < 1e6, "{rec:?}");
    }
    assert!((0.0..=1.0).contains(&rec.satisfied_auc), "{rec:?}");
    let c = rec.calibration.as_ref().unwrap();
    assert_eq!(c.coverage.len(), 4);
    assert!(c.coverage.iter().all(|x| (0.0..=1.0).contains(x)));
    // The fit's rewards file, written and read back, stands in for scoring the training
    // engagements again, with the same result; a file of another width is not used.
    let patch = mtrec_reward::patch_rewards(&q, &t.ds, &rc, &dev, false).unwrap();
    let pdir = tempfile::tempdir().unwrap();
    let pfile = pdir.path().join("rewards.parquet");
    mtrec_reward::write_patch(&pfile, &patch, &rc).unwrap();
    let read = mtrec_reward::read_patch(&pfile, rc.quantiles).unwrap();
    assert_eq!(read.states, patch.states);
    assert_eq!((&read.r_pos, &read.q_neg), (&patch.r_pos, &patch.q_neg));
    let with = reward_recovery_with(&t.truth, &t.ds, &q, &rc, &dev, Some(&read)).unwrap();
    assert_eq!(with.calibration, rec.calibration);
    let narrow = mtrec_reward::read_patch(&pfile, 2).unwrap();
    let with = reward_recovery_with(&t.truth, &t.ds, &q, &rc, &dev, Some(&narrow)).unwrap();
    assert_eq!(with.calibration, rec.calibration);
    // IQ-Learn: no calibration; a CTR model is refused.
    let rc_iq = RewardConfig {
        kind: RewardKind::IqLearn,
        ..rc.clone()
    };
    let (_v, iq) = build_q_model("tiny", &build, &t.ds, &rc_iq, &dev).unwrap();
    assert!(reward_recovery(&t.truth, &t.ds, &iq, &rc_iq, &dev)
        .unwrap()
        .calibration
        .is_none());
    assert!(reward_recovery(&t.truth, &t.ds, &ctr, &rc, &dev).is_err());

    // The report round-trips and names its parts.
    let dir = tempfile::tempdir().unwrap();
    let report = TruthReport::new(&t.truth, dir.path(), "tiny", Some(m), Some(rec));
    write_truth_metrics(dir.path(), &report).unwrap();
    let md = std::fs::read_to_string(dir.path().join("truth_metrics.md")).unwrap();
    assert!(
        md.contains("Aligned ranking") && md.contains("Reward recovery"),
        "{md}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("truth_metrics.json")).unwrap())
            .unwrap();
    assert_eq!(json["preset"], "tiny");
    assert!(json["ranking"]["ndcg_at_k"].as_f64().is_some());
}
