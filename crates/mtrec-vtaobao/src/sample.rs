//! Categorical sampling in plain Rust.
//!
//! Why not on the tensor side: the click logits reach |x| ≈ 4·10⁴, so an f32 softmax underflows
//! to exact zeros and ones; doing `exp(l - max)` in f64 keeps the small probabilities, and an
//! inverse-CDF draw from one uniform number per distribution makes every draw reproducible from the
//! seed alone (no dependence on a tensor library's sampler, which torch itself changes between
//! versions).

/// Softmax of `logits`, computed in f64 after subtracting the maximum.
///
/// Returns an empty vector for empty input. NaN logits give NaN probabilities; use
/// [`sample_categorical`] when the result must be checked.
pub fn softmax_f64(logits: &[f32]) -> Vec<f64> {
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &l| m.max(f64::from(l)));
    let w: Vec<f64> = logits.iter().map(|&l| (f64::from(l) - max).exp()).collect();
    let total: f64 = w.iter().sum();
    w.into_iter().map(|x| x / total).collect()
}

/// Draws one class of the categorical distribution `softmax(logits)` by inverse CDF from a uniform
/// number `u` in `[0, 1)`: the first class `i` with `u · Σw < w_0 + … + w_i`, where
/// `w_j = exp(l_j - max l)` in f64.
///
/// Returns `None` when `logits` is empty, holds a NaN, or its maximum is not finite (`+∞`, or all
/// `-∞`): there is no distribution to sample then. Classes with `-∞` logits are never drawn.
pub fn sample_categorical(logits: &[f32], u: f64) -> Option<usize> {
    if logits.is_empty() || logits.iter().any(|l| l.is_nan()) {
        return None;
    }
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &l| m.max(f64::from(l)));
    if !max.is_finite() {
        return None;
    }
    let total: f64 = logits.iter().map(|&l| (f64::from(l) - max).exp()).sum();
    let target = u * total;
    let mut cum = 0.0;
    let mut last_positive = 0;
    for (i, &l) in logits.iter().enumerate() {
        let w = (f64::from(l) - max).exp();
        if w > 0.0 {
            last_positive = i;
        }
        cum += w;
        if target < cum {
            return Some(i);
        }
    }
    // Only reachable through rounding (`u` within an ulp of 1): the last class that has mass.
    Some(last_positive)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn inverse_cdf_boundaries_of_a_hand_made_distribution() {
        // Probabilities 0.5, 0.25, 0.25 from logits ln 2, 0, 0.
        let logits = [std::f32::consts::LN_2, 0.0, 0.0];
        assert_eq!(sample_categorical(&logits, 0.0), Some(0));
        assert_eq!(sample_categorical(&logits, 0.499), Some(0));
        assert_eq!(sample_categorical(&logits, 0.501), Some(1));
        assert_eq!(sample_categorical(&logits, 0.749), Some(1));
        assert_eq!(sample_categorical(&logits, 0.751), Some(2));
        assert_eq!(sample_categorical(&logits, 0.999_999), Some(2));
        let p = softmax_f64(&logits);
        assert!((p[0] - 0.5).abs() < 1e-7 && (p[1] - 0.25).abs() < 1e-7);
    }

    #[test]
    fn sampled_frequencies_match_the_probabilities() {
        let logits = [1.0f32, -0.5, 2.0, f32::NEG_INFINITY, 0.0];
        let p = softmax_f64(&logits);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let n = 200_000;
        let mut counts = [0usize; 5];
        for _ in 0..n {
            counts[sample_categorical(&logits, rng.random::<f64>()).unwrap()] += 1;
        }
        assert_eq!(counts[3], 0, "a -inf logit must never be drawn");
        for (i, (&c, &pi)) in counts.iter().zip(&p).enumerate() {
            let se = (pi * (1.0 - pi) / n as f64).sqrt();
            let f = c as f64 / n as f64;
            assert!((f - pi).abs() <= 5.0 * se + 1e-12, "class {i}: {f} vs {pi}");
        }
    }

    #[test]
    fn saturated_logits_are_deterministic() {
        // The click head's typical case: gaps of thousands between logits.
        let logits = [2301.0f32, 1275.2, -772.6, 2300.0 - 40.0];
        for u in [0.0, 0.3, 0.999_999_9] {
            assert_eq!(sample_categorical(&logits, u), Some(0));
        }
    }

    #[test]
    fn degenerate_logits_are_refused() {
        assert_eq!(sample_categorical(&[], 0.5), None);
        assert_eq!(sample_categorical(&[0.0, f32::NAN], 0.5), None);
        assert_eq!(sample_categorical(&[0.0, f32::INFINITY], 0.5), None);
        assert_eq!(
            sample_categorical(&[f32::NEG_INFINITY, f32::NEG_INFINITY], 0.5),
            None
        );
        // Rounding guard: u at the top of [0, 1) returns the last class with mass.
        assert_eq!(
            sample_categorical(&[0.0, 0.0, f32::NEG_INFINITY], 1.0 - f64::EPSILON / 2.0),
            Some(1)
        );
    }
}
