//! `mtrec train`, `mtrec evaluate` and `mtrec models` as a user runs them, on the simulator's
//! `tiny` world.

mod common;
use common::{mtrec, text, tiny_prepared as tiny};
use std::path::Path;

use mtrec_data::PreparedDataset;
use mtrec_mdp::{samples, Split};

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn train_then_evaluate_on_the_tiny_world() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny(tmp.path());
    let run = tmp.path().join("runs/din");
    let args = [
        "train",
        "--model",
        "din",
        "--data",
        data.to_str().unwrap(),
        "--seed",
        "7",
        "--max-steps",
        "12",
        "--batch-size",
        "64",
        "--out",
        run.to_str().unwrap(),
    ];
    let o = mtrec(&args);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("AUC") && out.contains("ΔNCIS") && out.contains("metrics.json"),
        "{out}"
    );
    let m = json(&run.join("metrics.json"));
    assert_eq!(m["model"], "din");
    assert_eq!(m["seed"], 7);
    assert_eq!(m["training"]["steps"], 12);
    assert_eq!(m["training"]["stopped"], "max_steps");
    assert_eq!(m["training"]["partial_epoch"]["steps"], 12);
    for key in [
        "auc",
        "auc_all_steps",
        "gauc",
        "logloss",
        "ncis",
        "ncis_init",
        "delta_ncis",
        "ess",
        "ess_init",
    ] {
        let v = m["test"][key].as_f64().unwrap_or(f64::NAN);
        assert!(v.is_finite(), "test.{key} = {}", m["test"][key]);
    }
    let auc = m["test"]["auc"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&auc));
    assert_eq!(
        m["test"]["last_pair"]["counts"]["samples"],
        2 * m["test"]["users"].as_u64().unwrap()
    );
    for f in [
        "config.yaml",
        "metrics.md",
        "checkpoint/model.safetensors",
        "checkpoint/trainer.json",
    ] {
        assert!(run.join(f).is_file(), "{f}");
    }
    let cfg = std::fs::read_to_string(run.join("config.yaml")).unwrap();
    assert!(
        cfg.contains("model: din") && cfg.contains("embedding_dim: 18"),
        "{cfg}"
    );

    // `evaluate` reloads config and weights and recomputes the same test metrics.
    std::fs::remove_file(run.join("metrics.json")).unwrap();
    let o = mtrec(&["evaluate", "--run", run.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let again = json(&run.join("metrics.json"));
    assert_eq!(again["test"], m["test"]);
    assert_eq!(again["training"]["steps"], 12);

    // The same command again: the folder holds this run. `--resume` alone continues it from its
    // checkpoint, here to a new limit of 16 steps.
    let o = mtrec(&args);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("--resume") && text(&o).contains("--force"),
        "{}",
        text(&o)
    );
    let o = mtrec(&[
        "train",
        "--out",
        run.to_str().unwrap(),
        "--resume",
        "--max-steps",
        "16",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(json(&run.join("metrics.json"))["training"]["steps"], 16);

    // Another seed into the same folder: a different run, named as such.
    let mut other = args.to_vec();
    other[6] = "8";
    let o = mtrec(&other);
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o);
    assert!(
        t.contains("holds a different run") && t.contains("train.seed: 7 → 8"),
        "{t}"
    );
    assert!(t.contains("--resume") && t.contains("--force"), "{t}");
}

#[test]
fn models_lists_the_registry_and_prints_defaults() {
    let o = mtrec(&["models"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for name in ["widedeep", "pnn", "deepfm", "din", "dien"] {
        assert!(out.lines().any(|l| l == name), "{name} missing in:\n{out}");
    }
    let o = mtrec(&["models", "--defaults", "din"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("embedding_dim: 18"));
    let o = mtrec(&["models", "--defaults", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("unknown model 'nope' (known models: widedeep,"),
        "{}",
        text(&o)
    );
}

#[test]
fn train_errors_name_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny(tmp.path());
    let d = data.to_str().unwrap();
    let out = tmp.path().join("run");
    let o_ = out.to_str().unwrap();

    let o = mtrec(&["train", "--model", "dinn", "--data", d, "--out", o_]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("unknown model 'dinn' (known models:"),
        "{}",
        text(&o)
    );

    let yaml = tmp.path().join("din.yaml");
    std::fs::write(&yaml, "embedding_dim: 8\nattention: [4]\n").unwrap();
    let o = mtrec(&[
        "train",
        "--model",
        "din",
        "--data",
        d,
        "--out",
        o_,
        "--model-config",
        yaml.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o);
    assert!(
        t.contains("din.yaml") && t.contains("unknown field `attention`"),
        "{t}"
    );

    let train_yaml = tmp.path().join("train.yaml");
    std::fs::write(&train_yaml, "epochs: 1\nlearning_rate: 0.1\n").unwrap();
    let o = mtrec(&[
        "train",
        "--model",
        "din",
        "--data",
        d,
        "--out",
        o_,
        "--config",
        train_yaml.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o);
    assert!(
        t.contains("train.yaml") && t.contains("unknown field `learning_rate`"),
        "{t}"
    );

    let o = mtrec(&[
        "train",
        "--model",
        "din",
        "--data",
        "/no/such/prepared",
        "--out",
        o_,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("/no/such/prepared: no such folder"),
        "{}",
        text(&o)
    );

    // A rewards file that misses one training sample.
    let ds = PreparedDataset::load(&data).unwrap();
    let mut rows: Vec<_> = samples(&ds, Split::Train)
        .into_iter()
        .map(|s| (s, 0.5f32, -0.5f32))
        .collect();
    let gone = rows.remove(5).0;
    let rewards = tmp.path().join("rewards.csv");
    mtrec_train::write_rewards(&rewards, &rows).unwrap();
    let o = mtrec(&[
        "train",
        "--model",
        "pnn",
        "--data",
        d,
        "--out",
        o_,
        "--rewards",
        rewards.to_str().unwrap(),
        "--kappa",
        "0.2",
        "--max-steps",
        "2",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o);
    let want = format!(
        "no reward for training sample (user {}, step {}, positive {})",
        gone.user, gone.step, gone.positive
    );
    assert!(t.contains(&want) && t.contains("rewards.csv"), "{t}");

    // κ > 0 without rewards.
    let o = mtrec(&[
        "train", "--model", "pnn", "--data", d, "--out", o_, "--kappa", "0.2",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("needs a rewards file"), "{}", text(&o));

    // With every sample, κ > 0 trains and records the rewards file.
    rows.insert(5, (gone, 0.5, -0.5));
    mtrec_train::write_rewards(&rewards, &rows).unwrap();
    let o = mtrec(&[
        "train",
        "--model",
        "pnn",
        "--data",
        d,
        "--out",
        o_,
        "--rewards",
        rewards.to_str().unwrap(),
        "--kappa",
        "0.2",
        "--max-steps",
        "3",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let m = json(&out.join("metrics.json"));
    assert_eq!(m["kappa"], 0.2);
    assert!(m["rewards"].as_str().unwrap().ends_with("rewards.csv"));
}
