//! The `Metrics` summary of metrics.json.

use mtrec_eval::{delta_ncis, GaucWeighting, LogCap, Metrics, NcisConfig, UserTrajectory};

#[test]
fn ctr_metrics_and_counts() {
    let users = [1u32, 1, 1, 2, 2, 3];
    let logits = [2.0f32, -1.0, 0.5, 0.5, 0.5, 1.0];
    let labels = [1, 0, 0, 1, 0, 1];
    let m = Metrics::ctr(&users, &logits, &labels).unwrap();
    // pos {2.0, 0.5, 1.0}, neg {-1.0, 0.5, 0.5}: (3 + (1 + 0.5 + 0.5) + 3) / 9
    assert!((m.auc.unwrap() - 8.0 / 9.0).abs() < 1e-15);
    // user 1: AUC 1 (3 samples), user 2: 0.5 (2 samples), user 3 skipped.
    assert!((m.gauc.unwrap() - (3.0 + 1.0) / 5.0).abs() < 1e-15);
    assert_eq!(m.gauc_weighting, Some(GaucWeighting::Samples));
    assert_eq!(m.counts.samples, 6);
    assert_eq!((m.counts.positives, m.counts.negatives), (3, 3));
    assert_eq!((m.counts.gauc_users, m.counts.gauc_users_skipped), (2, 1));
    assert!(m.logloss.unwrap() > 0.0);
    assert_eq!(m.ncis, None);
    assert!(Metrics::ctr(&[1, 2], &[0.1, f64::NAN], &[1, 0]).is_err());
}

#[test]
fn json_round_trip_leaves_out_what_was_not_computed() {
    let mut m = Metrics::ctr(&[1, 1, 2, 2], &[2.0, -1.0, 0.5, 0.5], &[1, 0, 1, 0]).unwrap();
    let trained = vec![
        UserTrajectory::new([1.0, 2.0]),
        UserTrajectory::new([0.5, 0.5, 0.5]),
    ];
    let init = vec![
        UserTrajectory::new([0.0, 0.0]),
        UserTrajectory::new([0.0, 0.0, 0.0]),
    ];
    let cfg = NcisConfig {
        log_cap: LogCap::BelowMax(10.0),
        ..NcisConfig::default()
    };
    let d = delta_ncis(&trained, &init, &cfg).unwrap();
    m.record_delta_ncis(&d, &cfg);
    assert_eq!(m.delta_ncis, Some(d.value));
    assert_eq!(m.ess_init, Some(d.init.ess));
    assert_eq!(m.counts.ncis_users, 2);

    let json = serde_json::to_string_pretty(&m).unwrap();
    let back: Metrics = serde_json::from_str(&json).unwrap();
    assert_eq!(back, m);
    assert!(json.contains("\"delta_ncis\""));
    assert!(json.contains("\"below_max\": 10.0"));

    let bare = serde_json::to_string(&Metrics::default()).unwrap();
    assert_eq!(
        bare,
        r#"{"counts":{"samples":0,"positives":0,"negatives":0,"gauc_users":0,"gauc_users_skipped":0,"ncis_users":0}}"#
    );
    assert_eq!(
        serde_json::from_str::<Metrics>("{}").unwrap(),
        Metrics::default()
    );
}
