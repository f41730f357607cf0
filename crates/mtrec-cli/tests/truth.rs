//! `mtrec evaluate --ground-truth` as a user runs it on the simulator's `tiny` world: a reward run
//! gets reward-recovery metrics, a train run aligned-ranking metrics, both in truth_metrics.json.

mod common;
use common::{mtrec, text, tiny_prepared as tiny};
use std::path::Path;

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn finite(v: &serde_json::Value, key: &str) -> f64 {
    let x = v[key].as_f64().unwrap_or(f64::NAN);
    assert!(x.is_finite(), "{key} = {}", v[key]);
    x
}

#[test]
fn ground_truth_metrics_of_a_reward_run_and_a_train_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny(tmp.path());
    let world = tmp.path().join("world");
    let reward = tmp.path().join("reward");
    let o = mtrec(&[
        "fit-reward",
        "--model",
        "din",
        "--kind",
        "qr-iql",
        "--data",
        data.to_str().unwrap(),
        "--profile",
        "smoke",
        "--steps",
        "6",
        "--out",
        reward.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));

    // Without --ground-truth a reward run is refused, with the remedy named.
    let o = mtrec(&["evaluate", "--run", reward.to_str().unwrap()]);
    assert!(
        !o.status.success() && text(&o).contains("--ground-truth"),
        "{}",
        text(&o)
    );

    let o = mtrec(&[
        "evaluate",
        "--run",
        reward.to_str().unwrap(),
        "--ground-truth",
        world.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("reward recovery") && out.contains("truth_metrics.json"),
        "{out}"
    );
    let m = json(&reward.join("truth_metrics.json"));
    assert_eq!(m["run_kind"], "reward");
    assert_eq!(m["preset"], "tiny");
    assert_eq!(m["exact_tastes"], true);
    assert!(m["ranking"].is_null());
    let r = &m["recovery"];
    assert_eq!(r["kind"], "qr-iql");
    assert!(r["engagements"].as_u64().unwrap() > 0);
    for key in ["spearman_true", "spearman_expected", "pearson_true"] {
        let x = finite(r, key);
        assert!((-1.0..=1.0).contains(&x), "{key} = {x}");
    }
    let auc = finite(r, "satisfied_auc");
    assert!((0.0..=1.0).contains(&auc));
    finite(r, "mean_r_satisfied");
    finite(r, "mean_r_disappointed");
    let c = &r["calibration"];
    let cov = c["coverage"].as_array().unwrap();
    assert_eq!(cov.len(), c["taus"].as_array().unwrap().len());
    assert!(cov
        .iter()
        .all(|x| (0.0..=1.0).contains(&x.as_f64().unwrap())));
    let mae = finite(c, "mean_abs_error");
    assert!((0.0..=1.0).contains(&mae));
    assert!(reward.join("truth_metrics.md").exists());

    // A train run: the usual evaluation, then aligned ranking.
    let run = tmp.path().join("train");
    let o = mtrec(&[
        "train",
        "--model",
        "din",
        "--data",
        data.to_str().unwrap(),
        "--max-steps",
        "4",
        "--batch-size",
        "64",
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = mtrec(&[
        "evaluate",
        "--run",
        run.to_str().unwrap(),
        "--ground-truth",
        world.to_str().unwrap(),
        "--candidates",
        "12",
        "--top-k",
        "3",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("AUC") && out.contains("aligned ranking") && out.contains("NDCG@3"),
        "{out}"
    );
    assert!(run.join("metrics.json").exists());
    let m = json(&run.join("truth_metrics.json"));
    assert_eq!(m["run_kind"], "train");
    assert_eq!(m["model"], "din");
    assert!(m["recovery"].is_null());
    let r = &m["ranking"];
    assert_eq!(r["candidates"], 12);
    assert_eq!(r["k"], 3);
    assert_eq!(r["score"], "ctr-logit");
    assert!(r["steps"].as_u64().unwrap() > 0);
    let ndcg = finite(r, "ndcg_at_k");
    assert!((0.0..=1.0).contains(&ndcg));
    let at_k = finite(r, "mean_reward_at_k");
    let oracle = finite(r, "oracle_mean_reward_at_k");
    let random = finite(r, "random_mean_reward");
    assert!(at_k <= oracle + 1e-9 && random <= oracle + 1e-9);
    for key in [
        "mean_reward_at_1",
        "oracle_mean_reward_at_1",
        "gain_captured_at_k",
        "logged_positive_reward",
    ] {
        finite(r, key);
    }
    let hit = finite(r, "positive_hit_at_k");
    assert!((0.0..=1.0).contains(&hit));

    // A world that is not the dataset's is refused with the first difference.
    let other = tmp.path().join("other");
    let o = mtrec(&[
        "synth",
        "--preset",
        "tiny",
        "--seed",
        "5",
        "--out",
        other.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = mtrec(&[
        "evaluate",
        "--run",
        run.to_str().unwrap(),
        "--ground-truth",
        other.to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && text(&o).contains("not this world's log"),
        "{}",
        text(&o)
    );
}
