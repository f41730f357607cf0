//! Fitting, resuming and patching on a tiny synthetic dataset with a tiny backbone.

use candle_core::{Device, Tensor, Var};
use mtrec_mdp::{samples, transition_of, Batcher, Split};
use mtrec_train::testing::{tiny_builder, tiny_dataset};
use mtrec_train::Rewards;

use crate::config::{Profile, RewardConfig, RewardKind};
use crate::fit::{build_q_model, files, fit_reward, read_metrics, FitOptions};
use crate::losses::expected_rewards;

fn cfg(kind: RewardKind, steps: u64) -> RewardConfig {
    RewardConfig {
        kind,
        steps,
        batch_size: 64,
        quantiles: 4,
        checkpoint_every: 7,
        eval_batch_size: 100,
        ..RewardConfig::profile(Profile::Smoke)
    }
}

#[test]
fn qr_iql_fit_learns_patches_every_training_sample_and_the_file_feeds_the_trainer() {
    let ds = tiny_dataset(300);
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let build = tiny_builder(8);
    let c = cfg(RewardKind::QrIql, 120);
    let out = fit_reward(
        &run,
        "tiny",
        serde_norway::Value::Null,
        &build,
        &ds,
        dir.path(),
        &c,
        &FitOptions::default(),
    )
    .unwrap();
    let m = out.metrics.unwrap();
    assert_eq!(m.steps, 120);
    let first = m.loss_curve.first().unwrap().1;
    assert!(m.final_loss < first, "loss {first} -> {}", m.final_loss);
    // The learned policy prefers the logged behaviour on unseen users.
    assert!(m.q_test_auc > 0.6, "Q-net test AUC {}", m.q_test_auc);
    assert_eq!(read_metrics(&run).unwrap(), m);
    // The rewards file covers every training sample and is what `mtrec train --rewards` reads.
    let rewards = Rewards::load(&run.join(files::REWARDS), &ds).unwrap();
    let train = samples(&ds, Split::Train);
    rewards.check_covers(&train).unwrap();
    assert_eq!(rewards.rows(), train.len());
    for f in [files::CONFIG, files::METRICS_MD, files::CHECKPOINT] {
        assert!(run.join(f).exists(), "{f}");
    }
    // Figure 3 from the file.
    let fig = dir.path().join("fig");
    let f = crate::inspect_rewards(&run.join(files::REWARDS), &fig).unwrap();
    // Every sample appears once as expected and once as counterfactual reward.
    assert_eq!(
        f.histograms.iter().map(|h| h.samples).sum::<usize>(),
        2 * train.len()
    );
    for name in &f.files {
        let bytes = std::fs::read(fig.join(name)).unwrap();
        assert!(!bytes.is_empty(), "{name}");
    }
    let svg = std::fs::read_to_string(fig.join("fig3a_reward_by_step.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("step"),
        "{}",
        &svg[..100.min(svg.len())]
    );
    // A second fit into the same folder is refused without --resume/--force.
    let again = fit_reward(
        &run,
        "tiny",
        serde_norway::Value::Null,
        &build,
        &ds,
        dir.path(),
        &c,
        &FitOptions::default(),
    );
    assert!(again.unwrap_err().to_string().contains("--resume"));
}

#[test]
fn resume_gives_the_same_rewards_as_an_uninterrupted_fit() {
    let ds = tiny_dataset(120);
    let dir = tempfile::tempdir().unwrap();
    let build = tiny_builder(6);
    let c = cfg(RewardKind::IqLearn, 30);
    let whole = dir.path().join("whole");
    fit_reward(
        &whole,
        "tiny",
        serde_norway::Value::Null,
        &build,
        &ds,
        dir.path(),
        &c,
        &FitOptions::default(),
    )
    .unwrap();
    let split = dir.path().join("split");
    let first = fit_reward(
        &split,
        "tiny",
        serde_norway::Value::Null,
        &build,
        &ds,
        dir.path(),
        &c,
        &FitOptions {
            stop_after: Some(11),
            ..FitOptions::default()
        },
    )
    .unwrap();
    assert!(first.metrics.is_none());
    assert_eq!(first.state.step, 11);
    fit_reward(
        &split,
        "tiny",
        serde_norway::Value::Null,
        &build,
        &ds,
        dir.path(),
        &c,
        &FitOptions {
            resume: true,
            ..FitOptions::default()
        },
    )
    .unwrap();
    let a = std::fs::read(whole.join(files::CHECKPOINT).join(files::MODEL)).unwrap();
    let b = std::fs::read(split.join(files::CHECKPOINT).join(files::MODEL)).unwrap();
    assert!(a == b, "resumed weights differ from the uninterrupted fit");
    let ra = Rewards::load(&whole.join(files::REWARDS), &ds).unwrap();
    let rb = Rewards::load(&split.join(files::REWARDS), &ds).unwrap();
    for s in samples(&ds, Split::Train) {
        assert_eq!(ra.get(s), rb.get(s));
    }
}

#[test]
fn non_finite_loss_stops_with_a_clear_error() {
    let ds = tiny_dataset(60);
    let dir = tempfile::tempdir().unwrap();
    let build = tiny_builder(4);
    let c = RewardConfig {
        lr: 1e30,
        ..cfg(RewardKind::QrIql, 40)
    };
    let err = fit_reward(
        &dir.path().join("run"),
        "tiny",
        serde_norway::Value::Null,
        &build,
        &ds,
        dir.path(),
        &c,
        &FitOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("non-finite qr-iql loss at step"), "{err}");
}

/// Method §4: with a shared `s'`, `∂L_Align/∂F = −(r*(s,P) − r*(s,N)) = −(Q(s,P) − Q(s,N))`.
#[test]
fn alignment_gradient_is_minus_the_q_difference() {
    let ds = tiny_dataset(40);
    let build = tiny_builder(4);
    let c = cfg(RewardKind::QrIql, 1);
    let (_vm, q) = build_q_model("tiny", &build, &ds, &c, &Device::Cpu).unwrap();
    let states: Vec<_> = samples(&ds, Split::Train).into_iter().take(16).collect();
    let ts: Vec<_> = states.iter().map(|&s| transition_of(&ds, s)).collect();
    let tb = Batcher::new(&ds).transitions(&ts, &Device::Cpu).unwrap();
    let q_s = q.forward(&tb.state, false).unwrap().logits;
    let q_n = q.forward(&tb.next, false).unwrap().logits;
    let r = expected_rewards(&q_s, &q_n, &tb.done, 0.99).unwrap();
    let r_pos = r.narrow(1, 1, 1).unwrap().squeeze(1).unwrap();
    let r_neg = r.narrow(1, 0, 1).unwrap().squeeze(1).unwrap();
    // d/dF of −mean[r_P·F + r_N·(1−F)] per sample (times B) with F a free variable.
    let f = Var::from_tensor(&Tensor::full(0.3f32, states.len(), &Device::Cpu).unwrap()).unwrap();
    let one_minus = f.as_tensor().affine(-1.0, 1.0).unwrap();
    let l = ((&r_pos * f.as_tensor()).unwrap() + (&r_neg * one_minus).unwrap())
        .unwrap()
        .sum_all()
        .unwrap()
        .neg()
        .unwrap();
    let g: Vec<f32> = l
        .backward()
        .unwrap()
        .get(f.as_tensor())
        .unwrap()
        .to_vec1()
        .unwrap();
    let qm: Vec<Vec<f32>> = crate::losses::mean_q(&q_s).unwrap().to_vec2().unwrap();
    for (gi, qi) in g.iter().zip(&qm) {
        let want = -(qi[1] - qi[0]);
        assert!((gi - want).abs() < 1e-5, "{gi} vs {want}");
    }
}

/// `patch_states` is Alg. 2 on any states: the training split gives `patch_rewards`' patch, and a
/// test user's state gets the rewards of its own logged transition, whatever batch it is in.
#[test]
fn patch_states_scores_any_split_like_the_training_patch() {
    let ds = tiny_dataset(60);
    let build = tiny_builder(4);
    let c = RewardConfig {
        eval_batch_size: 7,
        ..cfg(RewardKind::QrIql, 1)
    };
    let dev = Device::Cpu;
    let (_vm, q) = build_q_model("tiny", &build, &ds, &c, &dev).unwrap();
    let train = crate::patch_rewards(&q, &ds, &c, &dev, false).unwrap();
    let same = crate::patch_states(&q, &ds, &samples(&ds, Split::Train), &c, &dev, false).unwrap();
    assert_eq!(train.states, same.states);
    assert_eq!(train.r_pos, same.r_pos);
    assert_eq!(train.q_pos, same.q_pos);

    let test: Vec<_> = samples(&ds, Split::Test).into_iter().rev().collect();
    assert!(!test.is_empty());
    let p = crate::patch_states(&q, &ds, &test, &c, &dev, false).unwrap();
    assert_eq!(p.states, test);
    assert_eq!(p.r_pos.len(), test.len());
    assert_eq!(p.q_pos.len(), test.len());
    for (k, s) in test.iter().enumerate().step_by(5) {
        let one = crate::patch_states(&q, &ds, &[*s], &c, &dev, false).unwrap();
        assert!((one.r_pos[0] - p.r_pos[k]).abs() < 1e-5, "{s:?}");
        assert!((one.r_neg[0] - p.r_neg[k]).abs() < 1e-5, "{s:?}");
        assert_eq!(one.done[0], transition_of(&ds, *s).done);
        assert!(p.r_pos[k].is_finite());
    }
}

/// The patch scores each distinct state once; it must equal Alg. 2 computed the direct way, with
/// `s` and `s'` scored separately, for both kinds of head.
#[test]
fn deduplicated_patch_equals_separate_forwards_of_s_and_next() {
    let ds = tiny_dataset(60);
    let build = tiny_builder(8);
    let dev = Device::Cpu;
    for kind in [RewardKind::QrIql, RewardKind::IqLearn] {
        let c = RewardConfig {
            eval_batch_size: 37, // chunks that end inside users are extended to their boundary
            ..cfg(kind, 1)
        };
        let (_vm, q) = build_q_model("tiny", &build, &ds, &c, &dev).unwrap();
        let states = samples(&ds, Split::All);
        let p = crate::patch_states(&q, &ds, &states, &c, &dev, false).unwrap();
        assert_eq!(p.r_pos.len(), states.len());
        let batcher = Batcher::new(&ds);
        let ts: Vec<_> = states.iter().map(|&s| transition_of(&ds, s)).collect();
        let tb = batcher.transitions(&ts, &dev).unwrap();
        let q_s = q.forward(&tb.state, false).unwrap().logits;
        let q_n = q.forward(&tb.next, false).unwrap().logits;
        let r: Vec<Vec<f32>> = expected_rewards(&q_s, &q_n, &tb.done, c.gamma)
            .unwrap()
            .to_vec2()
            .unwrap();
        for (k, row) in r.iter().enumerate() {
            assert!(
                (row[1] - p.r_pos[k]).abs() < 1e-5,
                "{k}: {} vs {}",
                row[1],
                p.r_pos[k]
            );
            assert!((row[0] - p.r_neg[k]).abs() < 1e-5, "{k}");
            assert_eq!(p.done[k], ts[k].done);
        }
        if kind == RewardKind::QrIql {
            let qr: Vec<Vec<Vec<f32>>> =
                crate::losses::quantile_rewards(&q_s, &q_n, &tb.done, c.gamma)
                    .unwrap()
                    .to_vec3()
                    .unwrap();
            for (k, row) in qr.iter().enumerate() {
                for (i, (pos, neg)) in row[1].iter().zip(&row[0]).enumerate() {
                    assert!((pos - p.q_pos[k][i]).abs() < 1e-5);
                    assert!((neg - p.q_neg[k][i]).abs() < 1e-5);
                }
            }
        }
    }
}
