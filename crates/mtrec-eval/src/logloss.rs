//! Binary cross-entropy (log loss), from probabilities or, stably, from logits.

use crate::error::{EvalError, Result};
use crate::input::{finite_or_inf, labels_to_bool, same_len, softplus, Label, Sum};

/// Default clipping of [`logloss`]: probabilities are clipped to `[ε, 1 − ε]` with `ε = 1e-15`
/// (scikit-learn's historical default), so a confident mistake costs at most `−ln 1e-15 ≈ 34.5`
/// instead of infinity.
pub const LOGLOSS_EPS: f64 = 1e-15;

/// Mean binary cross-entropy `−(1/n) Σ [y ln p + (1 − y) ln(1 − p)]` of probabilities, clipped to
/// `[LOGLOSS_EPS, 1 − LOGLOSS_EPS]` ([`LOGLOSS_EPS`]). Natural log.
///
/// Prefer [`logloss_from_logits`] when logits are at hand: it needs no clipping.
///
/// # Errors
/// [`EvalError::LengthMismatch`], [`EvalError::Empty`], [`EvalError::NaN`],
/// [`EvalError::InvalidProbability`] (outside `[0, 1]`), [`EvalError::InvalidLabel`].
///
/// ```
/// # use mtrec_eval::logloss;
/// let l = logloss(&[0.9, 0.2], &[1, 0]).unwrap();
/// assert!((l - (-(0.9f64.ln() + 0.8f64.ln()) / 2.0)).abs() < 1e-15);
/// ```
pub fn logloss<S: Copy + Into<f64>, L: Label>(probs: &[S], labels: &[L]) -> Result<f64> {
    logloss_with_eps(probs, labels, LOGLOSS_EPS)
}

/// [`logloss`] with the clipping `ε` given (`0 ≤ ε < 0.5`; `ε = 0` means no clipping, and a
/// probability of exactly 0 for a positive then gives `+inf`).
///
/// # Errors
/// As [`logloss`], and [`EvalError::InvalidParameter`] for an `ε` outside `[0, 0.5)`.
pub fn logloss_with_eps<S: Copy + Into<f64>, L: Label>(
    probs: &[S],
    labels: &[L],
    eps: f64,
) -> Result<f64> {
    const WHAT: &str = "log loss";
    if !(0.0..0.5).contains(&eps) {
        return Err(EvalError::InvalidParameter {
            name: "eps",
            value: eps,
            reason: "the clipping must lie in [0, 0.5)",
        });
    }
    same_len(WHAT, probs.len(), labels.len())?;
    if probs.is_empty() {
        return Err(EvalError::Empty { what: WHAT });
    }
    let probs = finite_or_inf(WHAT, probs)?;
    let labels = labels_to_bool(WHAT, labels)?;
    let mut sum = Sum::default();
    for (index, (&p, &y)) in probs.iter().zip(&labels).enumerate() {
        if !(0.0..=1.0).contains(&p) {
            return Err(EvalError::InvalidProbability {
                what: WHAT,
                index,
                value: p,
            });
        }
        let p = p.clamp(eps, 1.0 - eps);
        // ln(1 − p) as ln_1p(−p): accurate for small p.
        sum.add(if y { -p.ln() } else { -(-p).ln_1p() });
    }
    Ok(sum.value() / probs.len() as f64)
}

/// Mean binary cross-entropy of logits `z` (`p = σ(z)`), computed stably without clipping:
/// `−ln σ(z) = softplus(−z)` for a positive and `−ln(1 − σ(z)) = softplus(z)` for a negative.
///
/// Agrees with [`logloss`] on `σ(z)` wherever the clipping is inactive (`|z| ≲ 34.5`); beyond,
/// it keeps growing linearly (`z = −100` for a positive costs 100) where the clipped version
/// stops at `≈ 34.5`. `±inf` logits are accepted (a confident mistake then costs `+inf`).
///
/// # Errors
/// [`EvalError::LengthMismatch`], [`EvalError::Empty`], [`EvalError::NaN`],
/// [`EvalError::InvalidLabel`].
///
/// ```
/// # use mtrec_eval::logloss_from_logits;
/// let l = logloss_from_logits(&[0.0, 0.0], &[true, false]).unwrap();
/// assert!((l - std::f64::consts::LN_2).abs() < 1e-15);
/// ```
pub fn logloss_from_logits<S: Copy + Into<f64>, L: Label>(
    logits: &[S],
    labels: &[L],
) -> Result<f64> {
    const WHAT: &str = "log loss (logits)";
    same_len(WHAT, logits.len(), labels.len())?;
    if logits.is_empty() {
        return Err(EvalError::Empty { what: WHAT });
    }
    let logits = finite_or_inf(WHAT, logits)?;
    let labels = labels_to_bool(WHAT, labels)?;
    let mut sum = Sum::default();
    for (&z, &y) in logits.iter().zip(&labels) {
        sum.add(if y { softplus(-z) } else { softplus(z) });
    }
    Ok(sum.value() / logits.len() as f64)
}
