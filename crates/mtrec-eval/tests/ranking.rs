//! AUC, GAUC and log loss: the hand cases of `specs/method.md` §9 and more, and the error cases.

use mtrec_eval::{
    auc, auc_pos_neg, gauc, gauc_weighted, logloss, logloss_from_logits, logloss_with_eps,
    EvalError, GaucWeighting, LOGLOSS_EPS,
};

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn auc_hand_cases_from_the_spec() {
    // pos = [0.5], neg = [0.5] → 0.5
    assert_eq!(auc_pos_neg(&[0.5], &[0.5]).unwrap(), 0.5);
    assert_eq!(auc(&[0.5, 0.5], &[1, 0]).unwrap(), 0.5);
    // pos = [0.9, 0.4], neg = [0.4, 0.1] → (1 + 1 + 0.5 + 1) / 4 = 0.875
    assert_eq!(auc_pos_neg(&[0.9, 0.4], &[0.4, 0.1]).unwrap(), 0.875);
    assert_eq!(
        auc(&[0.4, 0.1, 0.9, 0.4], &[false, false, true, true]).unwrap(),
        0.875
    );
}

#[test]
fn auc_extremes_and_invariances() {
    let scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6];
    assert_eq!(auc(&scores, &[0, 0, 0, 1, 1, 1]).unwrap(), 1.0);
    assert_eq!(auc(&scores, &[1, 1, 1, 0, 0, 0]).unwrap(), 0.0);
    // All scores equal: 0.5 whatever the labels.
    assert_eq!(auc(&[3.0; 5], &[1, 0, 0, 1, 0]).unwrap(), 0.5);
    // Monotone transforms (sigmoid of logits) do not change AUC; neither does the order of samples.
    let logits = [-2.0f64, 0.3, 0.3, 1.7, -0.5, 4.0, 0.3];
    let labels = [0, 1, 0, 1, 0, 1, 1];
    let probs: Vec<f64> = logits.iter().map(|z| 1.0 / (1.0 + (-z).exp())).collect();
    let a = auc(&logits, &labels).unwrap();
    assert_eq!(a, auc(&probs, &labels).unwrap());
    let rev_s: Vec<f64> = logits.iter().rev().copied().collect();
    let rev_l: Vec<i32> = labels.iter().rev().copied().collect();
    assert_eq!(a, auc(&rev_s, &rev_l).unwrap());
    // Hand count: pos {0.3, 1.7, 4.0, 0.3}, neg {-2.0, 0.3, -0.5}:
    // each 0.3 wins 1 + 0.5 + 1 = 2.5, 1.7 and 4.0 win 3 each → (2.5 + 3 + 3 + 2.5) / 12
    assert!(close(a, 11.0 / 12.0, 1e-15));
    // f32 scores and float labels.
    assert_eq!(
        auc(&[0.9f32, 0.4, 0.4, 0.1], &[1.0f32, 1.0, 0.0, 0.0]).unwrap(),
        0.875
    );
    // Infinite scores are ordinary extremes.
    assert_eq!(
        auc(&[f64::INFINITY, f64::NEG_INFINITY], &[1, 0]).unwrap(),
        1.0
    );
}

#[test]
fn auc_errors() {
    assert!(matches!(
        auc(&[0.1, 0.2], &[1, 1]),
        Err(EvalError::SingleClass {
            positives: 2,
            negatives: 0,
            ..
        })
    ));
    assert!(matches!(
        auc(&[0.1, 0.2], &[0, 0]),
        Err(EvalError::SingleClass {
            positives: 0,
            negatives: 2,
            ..
        })
    ));
    assert!(matches!(
        auc(&[0.1, 0.2, 0.3], &[0, 1]),
        Err(EvalError::LengthMismatch {
            expected: 3,
            found: 2,
            ..
        })
    ));
    assert!(matches!(
        auc(&[0.1, f64::NAN], &[0, 1]),
        Err(EvalError::NaN { index: 1, .. })
    ));
    assert!(matches!(
        auc::<f64, i32>(&[], &[]),
        Err(EvalError::Empty { .. })
    ));
    assert!(matches!(
        auc(&[0.1, 0.2], &[0, 3]),
        Err(EvalError::InvalidLabel { index: 1, .. })
    ));
    assert!(matches!(
        auc_pos_neg(&[0.5], &[]),
        Err(EvalError::SingleClass { .. })
    ));
    // Messages name the problem.
    let msg = auc(&[0.1, f64::NAN], &[0, 1]).unwrap_err().to_string();
    assert!(msg.contains("NaN at index 1"), "{msg}");
}

#[test]
fn gauc_hand_case() {
    // user 7: pos [0.8, 0.3], neg [0.3, 0.2, 0.9] → (1 + 0 + 0.5 + 1 + 1 + 0) / 6... counted below
    //   pairs (pos, neg): (0.8,0.3)=1 (0.8,0.2)=1 (0.8,0.9)=0 (0.3,0.3)=.5 (0.3,0.2)=1 (0.3,0.9)=0
    //   → 3.5 / 6, 5 samples, 2 positives
    // user 3: pos [0.6], neg [0.1] → 1, 2 samples, 1 positive
    // user 5: only negatives → skipped (2 samples)
    // user 9: only a positive → skipped (1 sample)
    let groups = [7, 3, 7, 5, 7, 7, 3, 9, 5, 7];
    let scores = [0.8, 0.6, 0.3, 0.4, 0.3, 0.2, 0.1, 0.5, 0.45, 0.9];
    let labels = [1, 1, 1, 0, 0, 0, 0, 1, 0, 0];
    let a7 = 3.5 / 6.0;

    let g = gauc(&groups, &scores, &labels).unwrap();
    assert!(close(g.value, (5.0 * a7 + 2.0 * 1.0) / 7.0, 1e-15));
    assert_eq!(g.weighting, GaucWeighting::Samples);
    assert_eq!((g.groups_counted, g.groups_skipped), (2, 2));
    assert_eq!((g.samples_counted, g.samples_skipped), (7, 3));

    let g = gauc_weighted(&groups, &scores, &labels, GaucWeighting::Positives).unwrap();
    assert!(close(g.value, (2.0 * a7 + 1.0 * 1.0) / 3.0, 1e-15));
    let g = gauc_weighted(&groups, &scores, &labels, GaucWeighting::Uniform).unwrap();
    assert!(close(g.value, (a7 + 1.0) / 2.0, 1e-15));

    // String keys work too, and shuffling the samples changes nothing.
    let names: Vec<String> = groups.iter().map(|g| format!("user-{g}")).collect();
    let perm = [9, 0, 4, 2, 7, 1, 8, 3, 6, 5];
    let pg: Vec<&String> = perm.iter().map(|&k| &names[k]).collect();
    let ps: Vec<f64> = perm.iter().map(|&k| scores[k]).collect();
    let pl: Vec<i32> = perm.iter().map(|&k| labels[k]).collect();
    let g2 = gauc(&pg, &ps, &pl).unwrap();
    assert!(close(g2.value, (5.0 * a7 + 2.0) / 7.0, 1e-15));
}

#[test]
fn gauc_of_one_pair_per_user_is_din_code_with_half_ties() {
    // DIN's code: fraction of users with logit_pos > logit_neg; ours counts a tie as 1/2.
    let groups = [1, 1, 2, 2, 3, 3, 4, 4];
    let logits = [1.0, 0.0, -1.0, 2.0, 0.5, 0.5, 3.0, -3.0];
    let labels = [1, 0, 1, 0, 1, 0, 1, 0];
    let g = gauc(&groups, &logits, &labels).unwrap();
    assert!(close(g.value, (1.0 + 0.0 + 0.5 + 1.0) / 4.0, 1e-15));
}

#[test]
fn gauc_errors() {
    assert!(matches!(
        gauc(&[1, 1, 2], &[0.1, 0.2, 0.3], &[1, 1, 0]),
        Err(EvalError::NoEligibleGroup { groups: 2 })
    ));
    assert!(matches!(
        gauc(&[1, 1], &[0.1, 0.2, 0.3], &[1, 0, 0]),
        Err(EvalError::LengthMismatch { .. })
    ));
    assert!(matches!(
        gauc(&[1, 1, 1], &[0.1, 0.2, 0.3], &[1, 0]),
        Err(EvalError::LengthMismatch { .. })
    ));
    assert!(matches!(
        gauc(&[1, 1], &[f32::NAN, 0.2], &[1, 0]),
        Err(EvalError::NaN { index: 0, .. })
    ));
    assert!(matches!(
        gauc::<u32, f64, u8>(&[], &[], &[]),
        Err(EvalError::Empty { .. })
    ));
}

#[test]
fn logloss_hand_case() {
    // probs [0.9, 0.2, 0.6], labels [1, 0, 0]: −(ln 0.9 + ln 0.8 + ln 0.4) / 3
    let expect = -(0.9f64.ln() + 0.8f64.ln() + 0.4f64.ln()) / 3.0;
    assert!(close(expect, 0.414_931_599_615_397, 1e-15));
    let l = logloss(&[0.9, 0.2, 0.6], &[1, 0, 0]).unwrap();
    assert!(close(l, expect, 1e-15));
    // Perfect and maximally wrong predictions: clipping bounds the loss at −ln ε.
    assert!(close(
        logloss(&[1.0, 0.0], &[1, 0]).unwrap(),
        -(1.0 - LOGLOSS_EPS).ln(),
        1e-17
    ));
    assert!(close(
        logloss(&[0.0], &[1]).unwrap(),
        -LOGLOSS_EPS.ln(),
        1e-12
    ));
    assert!(close(-LOGLOSS_EPS.ln(), 34.538_776_394_910_684, 1e-12));
    assert_eq!(logloss_with_eps(&[0.0], &[1], 0.0).unwrap(), f64::INFINITY);
    assert!(close(
        logloss_with_eps(&[0.0], &[1], 0.1).unwrap(),
        -(0.1f64).ln(),
        1e-15
    ));
}

#[test]
fn logloss_logits_agree_with_probabilities() {
    let logits = [-6.0, -2.5, -0.1, 0.0, 0.7, 3.3, 12.0, -15.0];
    let labels = [0u8, 1, 0, 1, 1, 0, 1, 0];
    let probs: Vec<f64> = logits
        .iter()
        .map(|&z: &f64| 1.0 / (1.0 + (-z).exp()))
        .collect();
    let a = logloss_from_logits(&logits, &labels).unwrap();
    let b = logloss(&probs, &labels).unwrap();
    assert!(close(a, b, 1e-13), "{a} vs {b}");
    // σ(0) = 0.5 for both classes: ln 2.
    assert!(close(
        logloss_from_logits(&[0.0f32, 0.0], &[1, 0]).unwrap(),
        std::f64::consts::LN_2,
        1e-16
    ));
    // Beyond the clipping the logits version keeps growing linearly.
    assert!(close(
        logloss_from_logits(&[-100.0], &[1]).unwrap(),
        100.0,
        1e-12
    ));
    assert!(close(
        logloss_from_logits(&[100.0], &[0]).unwrap(),
        100.0,
        1e-12
    ));
    assert!(close(
        logloss(&[1.0 / (1.0 + 100f64.exp())], &[1]).unwrap(),
        34.538776394910684,
        1e-9
    ));
}

#[test]
fn logloss_errors() {
    assert!(matches!(
        logloss(&[1.2], &[1]),
        Err(EvalError::InvalidProbability { index: 0, .. })
    ));
    assert!(matches!(
        logloss(&[-0.1], &[0]),
        Err(EvalError::InvalidProbability { .. })
    ));
    assert!(matches!(
        logloss(&[f64::NAN], &[0]),
        Err(EvalError::NaN { .. })
    ));
    assert!(matches!(
        logloss(&[0.3, 0.4], &[0]),
        Err(EvalError::LengthMismatch { .. })
    ));
    assert!(matches!(
        logloss::<f64, u8>(&[], &[]),
        Err(EvalError::Empty { .. })
    ));
    assert!(matches!(
        logloss_with_eps(&[0.3], &[0], 0.5),
        Err(EvalError::InvalidParameter { .. })
    ));
    assert!(matches!(
        logloss_with_eps(&[0.3], &[0], f64::NAN),
        Err(EvalError::InvalidParameter { .. })
    ));
    assert!(matches!(
        logloss_from_logits(&[0.3], &[2]),
        Err(EvalError::InvalidLabel { .. })
    ));
    assert!(matches!(
        logloss_from_logits(&[f32::NAN], &[1]),
        Err(EvalError::NaN { .. })
    ));
}
