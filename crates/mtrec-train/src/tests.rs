//! Trainer tests on the tiny synthetic dataset with the tiny backbone.

use std::path::Path;

use mtrec_data::PreparedDataset;
use mtrec_mdp::{samples, Split, State};

use crate::testing::{tiny_builder, tiny_dataset};
use crate::*;

fn quick() -> TrainConfig {
    TrainConfig {
        seed: 3,
        epochs: 3,
        batch_size: 32,
        lr: 1e-2,
        validation_fraction: 0.1,
        ..TrainConfig::default()
    }
}

fn run_cfg(train: TrainConfig, rewards: Option<&Path>) -> RunConfig {
    RunConfig {
        model: "tiny".into(),
        model_config: serde_norway::from_str("dim: 8").unwrap(),
        data: "memory".into(),
        rewards: rewards.map(Path::to_path_buf),
        train,
    }
}

fn opts() -> RunOptions {
    RunOptions {
        progress: Progress::Hidden,
        ..RunOptions::default()
    }
}

fn train(out: &Path, ds: &PreparedDataset, cfg: &RunConfig, o: &RunOptions) -> Result<RunMetrics> {
    train_run(out, cfg, ds, &tiny_builder(8), o)
}

/// Rewards that prefer engaging with positives: r_P − r_N = +1 for a positive, −1 for a negative.
fn rewards_rows(ds: &PreparedDataset) -> Vec<(State, f32, f32)> {
    samples(ds, Split::All)
        .into_iter()
        .map(|s| {
            let r = if s.positive { 0.5 } else { -0.5 };
            (s, r, -r)
        })
        .collect()
}

/// The metrics without timings, for equality checks.
fn without_timings(m: &RunMetrics) -> serde_json::Value {
    let mut v = serde_json::to_value(m).unwrap();
    v["eval_seconds"] = 0.into();
    v["training"]["seconds"] = 0.into();
    v["training"]["samples_per_s"] = 0.into();
    for e in v["training"]["epochs"].as_array_mut().unwrap() {
        e["seconds"] = 0.into();
        e["samples_per_s"] = 0.into();
    }
    v
}

#[test]
fn loss_decreases_and_the_model_learns_the_signal() {
    let ds = tiny_dataset(150);
    let dir = tempfile::tempdir().unwrap();
    let m = train(
        &dir.path().join("run"),
        &ds,
        &run_cfg(quick(), None),
        &opts(),
    )
    .unwrap();
    let e = &m.training.epochs;
    assert_eq!(e.len(), 3);
    assert!(
        e[2].train_loss < e[0].train_loss && e[0].train_loss < 0.69,
        "{e:?}"
    );
    assert!(e[1].lr == 5e-3 && e[2].lr == 2.5e-3);
    assert!(e[2].val_auc.unwrap() > 0.8, "{e:?}");
    assert!(
        m.test.auc > 0.8 && m.test.auc_all_steps > 0.8,
        "{:?}",
        m.test
    );
    assert_eq!(m.training.stopped, Some(StopReason::Completed));
    // The init model scores ~0.5 everywhere: NCIS(init) near the shortest trajectory, and the
    // trained model follows long trajectories better.
    assert!(m.test.delta_ncis > 0.0, "{:?}", m.test);
    assert_eq!(m.test.ncis - m.test.ncis_init, m.test.delta_ncis);
    assert!(m.test.ess >= 1.0 && m.test.ess <= m.test.users as f64);
    // Counts add up: test users' samples, last pairs = 2 per user.
    assert_eq!(
        m.test.all_steps.counts.samples,
        samples(&ds, Split::Test).len()
    );
    assert_eq!(m.test.last_pair.counts.samples, 2 * m.test.users);
    assert_eq!(
        m.training.train_samples + m.training.validation_samples,
        samples(&ds, Split::Train).len()
    );
    // The files are there and agree.
    let run = dir.path().join("run");
    assert_eq!(read_metrics(&run).unwrap(), m);
    let md = std::fs::read_to_string(run.join("metrics.md")).unwrap();
    assert!(
        md.contains("AUC, last pair") && md.contains("ΔNCIS"),
        "{md}"
    );
    assert_eq!(RunConfig::read(&run).unwrap(), run_cfg(quick(), None));
    for f in ["model.safetensors", "optimizer.safetensors", "trainer.json"] {
        assert!(run.join("checkpoint").join(f).is_file(), "{f}");
    }
    // Re-evaluating the run from its checkpoint gives the same test metrics.
    let again = evaluate_run(&run, &ds, &tiny_builder(8), &opts()).unwrap();
    assert_eq!(again.test, m.test);
    assert_eq!(again.training, m.training);
}

#[test]
fn same_seed_gives_bit_identical_metrics() {
    let ds = tiny_dataset(100);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = quick();
    cfg.epochs = 2;
    let a = train(
        &dir.path().join("a"),
        &ds,
        &run_cfg(cfg.clone(), None),
        &opts(),
    )
    .unwrap();
    let b = train(
        &dir.path().join("b"),
        &ds,
        &run_cfg(cfg.clone(), None),
        &opts(),
    )
    .unwrap();
    assert_eq!(without_timings(&a), without_timings(&b));
    let wa = std::fs::read(dir.path().join("a/checkpoint/model.safetensors")).unwrap();
    let wb = std::fs::read(dir.path().join("b/checkpoint/model.safetensors")).unwrap();
    assert_eq!(wa, wb, "weights differ");
    cfg.seed += 1;
    let c = train(&dir.path().join("c"), &ds, &run_cfg(cfg, None), &opts()).unwrap();
    assert_ne!(a.test.auc_all_steps, c.test.auc_all_steps);
}

#[test]
fn resume_after_max_steps_matches_the_uninterrupted_run() {
    let ds = tiny_dataset(100);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = quick();
    cfg.epochs = 2;
    cfg.patience = Some(5); // exercises the best-weights snapshot too
    let straight = train(
        &dir.path().join("straight"),
        &ds,
        &run_cfg(cfg.clone(), None),
        &opts(),
    )
    .unwrap();
    let steps_per_epoch = straight.training.epochs[0].steps as u64;
    // Interrupt in the middle of the second epoch, with an extra checkpoint before.
    let out = dir.path().join("resumed");
    let mut limited = cfg.clone();
    limited.max_steps = Some(steps_per_epoch + 3);
    limited.checkpoint_every = Some(4);
    let part = train(&out, &ds, &run_cfg(limited, None), &opts()).unwrap();
    assert_eq!(part.training.stopped, Some(StopReason::MaxSteps));
    assert_eq!(part.training.steps, steps_per_epoch + 3);
    assert_eq!(part.training.partial_epoch.as_ref().unwrap().steps, 3);
    // Without --resume the folder is refused; with it, the run goes on to the end.
    let e = train(&out, &ds, &run_cfg(cfg.clone(), None), &opts())
        .unwrap_err()
        .to_string();
    assert!(e.contains("--resume") && e.contains("--force"), "{e}");
    let resume = RunOptions {
        resume: true,
        ..opts()
    };
    let full = train(&out, &ds, &run_cfg(cfg.clone(), None), &resume).unwrap();
    assert_eq!(without_timings(&full), without_timings(&straight));
    assert_eq!(
        std::fs::read(out.join("checkpoint/model.safetensors")).unwrap(),
        std::fs::read(dir.path().join("straight/checkpoint/model.safetensors")).unwrap()
    );
    // Resuming with other settings is refused and names the difference.
    let mut other = cfg.clone();
    other.lr = 0.5;
    let e = train(&out, &ds, &run_cfg(other.clone(), None), &resume)
        .unwrap_err()
        .to_string();
    assert!(e.contains("different run") && e.contains("train.lr"), "{e}");
    // --force replaces it.
    let force = RunOptions {
        force: true,
        ..opts()
    };
    train(&out, &ds, &run_cfg(other, None), &force).unwrap();
}

#[test]
fn alignment_loss_trains_with_rewards_and_a_nan_reward_stops_training() {
    let ds = tiny_dataset(80);
    let dir = tempfile::tempdir().unwrap();
    let rows = rewards_rows(&ds);
    let csv = dir.path().join("rewards.csv");
    write_rewards(&csv, &rows).unwrap();
    let mut cfg = quick();
    cfg.epochs = 1;
    cfg.kappa = 0.2;
    let m = train(
        &dir.path().join("k"),
        &ds,
        &run_cfg(cfg.clone(), Some(&csv)),
        &opts(),
    )
    .unwrap();
    let e = &m.training.epochs[0];
    let align = e.train_align.unwrap();
    assert!(
        (e.train_loss - (e.train_bce + 0.2 * align)).abs() < 1e-5,
        "{e:?}"
    );
    // r_P σ + r_N (1−σ) with |r| = 0.5 lies in [−0.5, 0.5].
    assert!(align.abs() <= 0.5);
    assert_eq!(m.rewards.as_deref(), Some(csv.as_path()));
    // κ = 0 with the same seed: a different training trajectory.
    let mut plain = cfg.clone();
    plain.kappa = 0.0;
    let p = train(&dir.path().join("p"), &ds, &run_cfg(plain, None), &opts()).unwrap();
    assert_ne!(p.training.epochs[0].train_bce, e.train_bce);

    // One NaN reward: the guard stops at its batch and names the sample and the terms.
    let mut bad = rows.clone();
    let victim = bad
        .iter()
        .position(|(s, _, _)| !ds.is_test(s.user as usize))
        .unwrap();
    bad[victim].1 = f32::NAN;
    let nan = dir.path().join("nan.parquet");
    write_rewards(&nan, &bad).unwrap();
    let mut c = cfg.clone();
    c.validation_fraction = 0.0;
    let err = train(
        &dir.path().join("nan"),
        &ds,
        &run_cfg(c, Some(&nan)),
        &opts(),
    )
    .unwrap_err();
    let msg = err.to_string();
    let s = bad[victim].0;
    assert!(matches!(err, TrainError::NonFinite { .. }), "{msg}");
    assert!(
        msg.contains("non-finite loss at epoch 0")
            && msg.contains("align NaN")
            && msg.contains("kappa 0.2")
            && msg.contains(&format!(
                "sample (user {}, step {}, positive {})",
                s.user, s.step, s.positive
            ))
            && msg.contains("nan.parquet"),
        "{msg}"
    );

    // A training sample missing from the file: named, with the file.
    let mut short = rows.clone();
    let gone = short.remove(victim).0;
    let miss = dir.path().join("missing.csv");
    write_rewards(&miss, &short).unwrap();
    let msg = train(
        &dir.path().join("m"),
        &ds,
        &run_cfg(cfg.clone(), Some(&miss)),
        &opts(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("missing.csv")
            && msg.contains(&format!(
                "(user {}, step {}, positive {})",
                gone.user, gone.step, gone.positive
            ))
            && msg.contains("1 training sample(s) missing"),
        "{msg}"
    );
    assert!(
        !dir.path().join("m").exists(),
        "a refused run leaves no folder"
    );
    // κ > 0 without a file.
    let msg = train(&dir.path().join("n"), &ds, &run_cfg(cfg, None), &opts())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("rewards"), "{msg}");
}

#[test]
fn rewards_files_read_back_in_both_formats_and_bad_rows_are_named() {
    let ds = tiny_dataset(30);
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<(State, f32, f32)> = samples(&ds, Split::All)
        .into_iter()
        .enumerate()
        .map(|(k, s)| (s, k as f32 * 0.25, -(k as f32)))
        .collect();
    for name in ["r.parquet", "r.csv"] {
        let p = dir.path().join(name);
        write_rewards(&p, &rows).unwrap();
        let r = Rewards::load(&p, &ds).unwrap();
        assert_eq!(r.rows(), rows.len());
        for (s, a, b) in &rows {
            assert_eq!(r.get(*s), Some((*a, *b)), "{name} {s:?}");
        }
        assert_eq!(
            r.get(State {
                user: 1,
                step: 0,
                positive: true
            }),
            None
        );
    }
    // Hand-written CSV: 0/1 positives, integer rewards, extra quantile columns ignored.
    let p = dir.path().join("hand.csv");
    std::fs::write(
        &p,
        "user,step,positive,r_pos,r_neg,q_pos_0\n1,1,1,2,-1,0.5\n1,1,0,0,1,0.1\n",
    )
    .unwrap();
    let r = Rewards::load(&p, &ds).unwrap();
    let s = State {
        user: 1,
        step: 1,
        positive: true,
    };
    assert_eq!(r.get(s), Some((2.0, -1.0)));
    for (text, want) in [
        (
            "user,step,positive,r_pos\n1,1,true,0.5\n",
            "missing column 'r_neg'",
        ),
        (
            "user,step,positive,r_pos,r_neg\n999,1,true,0,0\n",
            "row 1: user 999",
        ),
        (
            "user,step,positive,r_pos,r_neg\n1,50,true,0,0\n",
            "row 1: step 50 of user 1",
        ),
        (
            "user,step,positive,r_pos,r_neg\n1,1,true,0,0\n1,1,true,1,1\n",
            "row 2: second row",
        ),
        (
            "user,step,positive,r_pos,r_neg\n1,1,2,0,0\n",
            "neither 0 nor 1",
        ),
        (
            "user,step,positive,r_pos,r_neg\n-1,1,true,0,0\n",
            "not a u32",
        ),
    ] {
        std::fs::write(&p, text).unwrap();
        let e = Rewards::load(&p, &ds).unwrap_err().to_string();
        assert!(e.contains(want) && e.contains("hand.csv"), "{e}");
    }
    let e = Rewards::load(&dir.path().join("none.csv"), &ds)
        .unwrap_err()
        .to_string();
    assert!(e.contains("none.csv") && e.contains("no such file"), "{e}");
}

#[test]
fn run_folders_refuse_what_they_should() {
    let ds = tiny_dataset(40);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = quick();
    cfg.epochs = 1;
    cfg.max_steps = Some(2);
    // A folder that is not a run is never replaced.
    let stranger = dir.path().join("stranger");
    std::fs::create_dir_all(&stranger).unwrap();
    std::fs::write(stranger.join("notes.txt"), "mine").unwrap();
    let force = RunOptions {
        force: true,
        ..opts()
    };
    let e = train(&stranger, &ds, &run_cfg(cfg.clone(), None), &force)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not an mtrec run folder"), "{e}");
    assert!(stranger.join("notes.txt").is_file());
    // --resume with nothing there.
    let resume = RunOptions {
        resume: true,
        ..opts()
    };
    let e = train(
        &dir.path().join("empty"),
        &ds,
        &run_cfg(cfg.clone(), None),
        &resume,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("nothing to resume"), "{e}");
    // Evaluating with another dataset is refused.
    let run = dir.path().join("run");
    train(&run, &ds, &run_cfg(cfg, None), &opts()).unwrap();
    let other = tiny_dataset(41);
    let e = evaluate_run(&run, &other, &tiny_builder(8), &opts())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not the one this run was trained on"), "{e}");
}

#[test]
fn device_flags_parse_or_name_the_problem() {
    assert!(crate::parse_device("cpu").unwrap().is_cpu());
    let e = crate::parse_device("gpu").unwrap_err().to_string();
    assert!(e.contains("--device gpu") && e.contains("cuda:<N>"), "{e}");
    let e = crate::parse_device("cuda:x").unwrap_err().to_string();
    assert!(e.contains("cuda:<number>"), "{e}");
}
