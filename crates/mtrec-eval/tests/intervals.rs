//! Bootstrap and Student-t intervals: known quantiles, determinism, coverage.

use mtrec_eval::{
    auc, bootstrap_ci, bootstrap_ci_mean, mean_t_interval, paired_t_interval, student_t_quantile,
    EvalError,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[test]
fn t_quantile_known_values() {
    // Textbook / scipy.stats.t.ppf values.
    let cases = [
        (0.975, 1.0, 12.706204736174694),
        (0.975, 2.0, 4.302652729749462),
        (0.975, 3.0, 3.1824463052837078),
        (0.975, 4.0, 2.7764451051977934),
        (0.975, 10.0, 2.228138851986274),
        (0.975, 30.0, 2.0422724563012378),
        (0.995, 5.0, 4.032142983555228),
        (0.95, 3.0, 2.3533634348018233),
    ];
    for (p, df, t) in cases {
        let q = student_t_quantile(p, df).unwrap();
        assert!((q - t).abs() < 1e-10, "t_{{{p},{df}}} = {q}, expected {t}");
        // Symmetry.
        let lower = student_t_quantile(1.0 - p, df).unwrap();
        assert!((lower + q).abs() < 1e-9, "{lower} vs {q}");
    }
    assert!((student_t_quantile(0.975, 2.0).unwrap() - 4.302653).abs() < 1e-6);
    assert!((student_t_quantile(0.975, 4.0).unwrap() - 2.776445).abs() < 1e-6);
    assert_eq!(student_t_quantile(0.5, 7.0).unwrap(), 0.0);
    // Large df (scipy: 1.9599877075346095) tends to the normal quantile 1.959964.
    assert!((student_t_quantile(0.975, 1e5).unwrap() - 1.9599877075346095).abs() < 1e-8);
    assert!((student_t_quantile(0.975, 2.5).unwrap() - 3.5746548420036817).abs() < 1e-10);
    // Non-integer df lies between its neighbours.
    let q = student_t_quantile(0.975, 2.5).unwrap();
    assert!(q < 4.302653 && q > 3.182446);
}

#[test]
fn t_quantile_errors() {
    for p in [0.0, 1.0, -0.1, f64::NAN] {
        assert!(matches!(
            student_t_quantile(p, 3.0),
            Err(EvalError::InvalidParameter { name: "p", .. })
        ));
    }
    for df in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            student_t_quantile(0.9, df),
            Err(EvalError::InvalidParameter { name: "df", .. })
        ));
    }
}

#[test]
fn mean_t_interval_by_hand() {
    // values 1, 2, 3, 4: mean 2.5, s = sqrt(5/3), t_{0.975,3} = 3.182446
    let ci = mean_t_interval(&[1.0, 2.0, 3.0, 4.0], 0.95).unwrap();
    let s = (5.0f64 / 3.0).sqrt();
    assert!((ci.mean - 2.5).abs() < 1e-15);
    assert!((ci.std - s).abs() < 1e-15);
    assert!((ci.half_width - 3.1824463052837078 * s / 2.0).abs() < 1e-12);
    assert!((ci.lower - (ci.mean - ci.half_width)).abs() == 0.0);
    assert_eq!(ci.n, 4);
    assert_eq!(format!("{ci:.2}"), "2.50 ± 2.05");
    // Zero spread gives a zero-width interval.
    let ci = mean_t_interval(&[0.3, 0.3, 0.3], 0.95).unwrap();
    assert_eq!((ci.lower, ci.upper), (0.3, 0.3));
    // Paired by seed: the differences 0.1, 0.2, 0.3.
    let p = paired_t_interval(&[1.1, 1.2, 1.3], &[1.0, 1.0, 1.0], 0.95).unwrap();
    assert!((p.mean - 0.2).abs() < 1e-12);
    assert!((p.half_width - 4.302652729749462 * 0.1 / 3f64.sqrt()).abs() < 1e-12);

    assert!(matches!(
        mean_t_interval(&[1.0], 0.95),
        Err(EvalError::TooFewValues {
            needed: 2,
            found: 1,
            ..
        })
    ));
    assert!(matches!(
        mean_t_interval(&[1.0, f64::NAN], 0.95),
        Err(EvalError::NaN { index: 1, .. })
    ));
    assert!(matches!(
        mean_t_interval(&[1.0, 2.0], 1.0),
        Err(EvalError::InvalidParameter { .. })
    ));
    assert!(matches!(
        paired_t_interval(&[1.0, 2.0], &[1.0], 0.95),
        Err(EvalError::LengthMismatch { .. })
    ));
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    // Box–Muller.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

#[test]
fn bootstrap_is_deterministic() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let values: Vec<f64> = (0..200).map(|_| normal(&mut rng)).collect();
    let a = bootstrap_ci_mean(&values, 500, 0.95, 42).unwrap();
    let b = bootstrap_ci_mean(&values, 500, 0.95, 42).unwrap();
    assert_eq!(a, b);
    let c = bootstrap_ci_mean(&values, 500, 0.95, 43).unwrap();
    assert_ne!((a.lower, a.upper), (c.lower, c.upper));
    assert!(a.lower < a.estimate && a.estimate < a.upper);
    assert_eq!((a.resamples, a.skipped), (500, 0));
    // A wider level gives a wider interval from the same resamples.
    let w = bootstrap_ci_mean(&values, 500, 0.99, 42).unwrap();
    assert!(w.lower <= a.lower && w.upper >= a.upper);
    // About ±1.96/√200 ≈ ±0.139 around the mean.
    let half = (a.upper - a.lower) / 2.0;
    assert!(half > 0.1 && half < 0.18, "{half}");
}

#[test]
fn bootstrap_coverage_of_a_known_mean() {
    // 300 samples of 40 N(1, 1) values: the 95% interval should contain 1 about 95% of the time
    // (the percentile bootstrap under-covers a little at small n).
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    let trials = 300;
    let mut covered = 0;
    let mut covered_t = 0;
    for trial in 0..trials {
        let values: Vec<f64> = (0..40).map(|_| 1.0 + normal(&mut rng)).collect();
        let ci = bootstrap_ci_mean(&values, 400, 0.95, trial).unwrap();
        if ci.lower <= 1.0 && 1.0 <= ci.upper {
            covered += 1;
        }
        let t = mean_t_interval(&values, 0.95).unwrap();
        if t.lower <= 1.0 && 1.0 <= t.upper {
            covered_t += 1;
        }
    }
    let rate = covered as f64 / trials as f64;
    let rate_t = covered_t as f64 / trials as f64;
    assert!((0.88..=0.99).contains(&rate), "bootstrap coverage {rate}");
    assert!((0.90..=0.99).contains(&rate_t), "t coverage {rate_t}");
}

#[test]
fn bootstrap_over_a_closure_skips_undefined_resamples() {
    // AUC with a single positive: many resamples miss it and are skipped.
    let scores = [0.9, 0.2, 0.4, 0.1, 0.3, 0.5];
    let labels = [1, 0, 0, 0, 0, 0];
    let ci = bootstrap_ci(scores.len(), 300, 0.9, 1, |idx| {
        let s: Vec<f64> = idx.iter().map(|&k| scores[k]).collect();
        let l: Vec<i32> = idx.iter().map(|&k| labels[k]).collect();
        auc(&s, &l).ok()
    })
    .unwrap();
    assert_eq!(ci.estimate, 1.0);
    assert!(ci.skipped > 0 && ci.skipped < 300);
    assert_eq!(ci.resamples + ci.skipped, 300);
    assert_eq!((ci.lower, ci.upper), (1.0, 1.0));
}

#[test]
fn bootstrap_errors() {
    assert!(matches!(
        bootstrap_ci_mean(&[], 10, 0.95, 0),
        Err(EvalError::Empty { .. })
    ));
    assert!(matches!(
        bootstrap_ci_mean(&[1.0], 0, 0.95, 0),
        Err(EvalError::InvalidParameter { .. })
    ));
    assert!(matches!(
        bootstrap_ci_mean(&[1.0], 10, 0.0, 0),
        Err(EvalError::InvalidParameter { .. })
    ));
    assert!(matches!(
        bootstrap_ci_mean(&[1.0, f64::NAN], 10, 0.9, 0),
        Err(EvalError::NaN { index: 1, .. })
    ));
    assert!(matches!(
        bootstrap_ci(3, 10, 0.9, 0, |_| None),
        Err(EvalError::UndefinedStatistic { .. })
    ));
    assert!(matches!(
        bootstrap_ci(3, 10, 0.9, 0, |idx| if idx == [0, 1, 2] {
            Some(1.0)
        } else {
            None
        }),
        Err(EvalError::UndefinedStatistic { .. })
    ));
    assert!(matches!(
        bootstrap_ci(3, 10, 0.9, 0, |idx| if idx == [0, 1, 2] {
            Some(1.0)
        } else {
            Some(f64::NAN)
        }),
        Err(EvalError::NaN { .. })
    ));
}
