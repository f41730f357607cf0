//! Agreement with scikit-learn and SciPy on a large case with many ties. The fixture is made by
//! `tests/reference/make_fixtures.py` (committed with it), so this test needs no Python.

use mtrec_eval::{auc, gauc, logloss, logloss_from_logits, student_t_quantile};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    auc: AucCase,
    gauc: GaucCase,
    logloss: LoglossCase,
    student_t_ppf: Vec<TCase>,
}

#[derive(Deserialize)]
struct AucCase {
    scores: Vec<f64>,
    labels: Vec<u8>,
    roc_auc_score: f64,
}

#[derive(Deserialize)]
struct GaucCase {
    groups: Vec<u32>,
    gauc: f64,
    users_counted: usize,
    users_total: usize,
}

#[derive(Deserialize)]
struct LoglossCase {
    logits: Vec<f64>,
    log_loss: f64,
}

#[derive(Deserialize)]
struct TCase {
    df: f64,
    p: f64,
    t: f64,
}

fn fixture() -> Fixture {
    let text = include_str!("fixtures/sklearn_reference.json");
    serde_json::from_str(text).expect("the committed fixture parses")
}

#[test]
fn auc_matches_sklearn_with_many_ties() {
    let f = fixture();
    assert_eq!(f.auc.scores.len(), 5000);
    let mut distinct = f.auc.scores.clone();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    assert!(
        distinct.len() <= 101,
        "scores rounded to 2 decimals: heavy ties"
    );
    let a = auc(&f.auc.scores, &f.auc.labels).unwrap();
    assert!(
        (a - f.auc.roc_auc_score).abs() < 1e-12,
        "{a} vs sklearn {}",
        f.auc.roc_auc_score
    );
}

#[test]
fn gauc_matches_per_user_sklearn() {
    let f = fixture();
    let g = gauc(&f.gauc.groups, &f.auc.scores, &f.auc.labels).unwrap();
    assert!(
        (g.value - f.gauc.gauc).abs() < 1e-12,
        "{} vs {}",
        g.value,
        f.gauc.gauc
    );
    assert_eq!(g.groups_counted, f.gauc.users_counted);
    assert_eq!(g.groups_counted + g.groups_skipped, f.gauc.users_total);
}

#[test]
fn logloss_matches_sklearn() {
    let f = fixture();
    let n = f.logloss.logits.len();
    let labels = &f.auc.labels[..n];
    let from_logits = logloss_from_logits(&f.logloss.logits, labels).unwrap();
    assert!((from_logits - f.logloss.log_loss).abs() < 1e-12);
    let probs: Vec<f64> = f
        .logloss
        .logits
        .iter()
        .map(|z| 1.0 / (1.0 + (-z).exp()))
        .collect();
    let from_probs = logloss(&probs, labels).unwrap();
    assert!((from_probs - f.logloss.log_loss).abs() < 1e-12);
}

#[test]
fn student_t_matches_scipy() {
    let f = fixture();
    assert!(f.student_t_ppf.len() >= 150);
    for c in &f.student_t_ppf {
        let q = student_t_quantile(c.p, c.df).unwrap();
        let tol = 1e-9 * c.t.abs().max(1.0);
        assert!(
            (q - c.t).abs() < tol,
            "df {} p {}: {q} vs scipy {}",
            c.df,
            c.p,
            c.t
        );
    }
}
