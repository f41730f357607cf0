//! `mtrec fit-reward` and `mtrec inspect-reward` as a user runs them, on the simulator's `tiny`
//! world, and the rewards they write feeding `mtrec train --rewards`.

mod common;
use common::{mtrec, text, tiny_prepared as tiny};

#[test]
fn fit_inspect_and_align_on_the_tiny_world() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny(tmp.path());
    let run = tmp.path().join("reward");
    let fit = [
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
        run.to_str().unwrap(),
    ];
    let o = mtrec(&fit);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("Q-net click AUC") && out.contains("--rewards"),
        "{out}"
    );
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("reward_metrics.json")).unwrap()).unwrap();
    assert_eq!(m["kind"], "qr-iql");
    assert_eq!(m["steps"], 6);

    // Refuses to overwrite without --force, names the remedy.
    let o = mtrec(&fit);
    assert!(!o.status.success());
    assert!(text(&o).contains("--resume"), "{}", text(&o));

    let o = mtrec(&["inspect-reward", run.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    for f in [
        "fig3a_reward_by_step.svg",
        "fig3a_reward_by_step.csv",
        "fig3b-e_reward_histograms.svg",
        "fig3b-e_reward_histograms.csv",
        "figure3.json",
    ] {
        assert!(run.join("figure3").join(f).exists(), "{f}");
    }

    // The patched rewards drive the alignment loss.
    let o = mtrec(&[
        "train",
        "--model",
        "din",
        "--data",
        data.to_str().unwrap(),
        "--rewards",
        run.join("rewards.parquet").to_str().unwrap(),
        "--kappa",
        "0.2",
        "--max-steps",
        "4",
        "--batch-size",
        "64",
        "--out",
        tmp.path().join("aligned").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));

    // Bad input: unknown kind and unknown model are named.
    let o = mtrec(&[
        "fit-reward",
        "--model",
        "din",
        "--kind",
        "qrr",
        "--data",
        data.to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && text(&o).contains("unknown reward kind 'qrr'"),
        "{}",
        text(&o)
    );
    let o = mtrec(&[
        "fit-reward",
        "--model",
        "dinn",
        "--data",
        data.to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && text(&o).contains("unknown model 'dinn'"),
        "{}",
        text(&o)
    );
    let o = mtrec(&[
        "inspect-reward",
        tmp.path().join("nothing").to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && text(&o).contains("does not exist"),
        "{}",
        text(&o)
    );
}
