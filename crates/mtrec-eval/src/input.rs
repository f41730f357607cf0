//! Input conversion and validation shared by the metrics, and two numerically careful primitives
//! ([`softplus`], [`log_sigmoid`]).

use crate::error::{EvalError, Result};

/// A binary label: `bool`, an integer 0/1 or a float exactly 0.0/1.0.
///
/// Anything else (2, 0.5, NaN) is rejected with [`EvalError::InvalidLabel`] rather than guessed at.
pub trait Label: Copy {
    /// `Some(true)` for a positive, `Some(false)` for a negative, `None` for a value that is neither.
    fn as_label(self) -> Option<bool>;
    /// The value as a float, for error messages.
    fn as_f64(self) -> f64;
}

impl Label for bool {
    fn as_label(self) -> Option<bool> {
        Some(self)
    }
    fn as_f64(self) -> f64 {
        f64::from(u8::from(self))
    }
}

macro_rules! int_label {
    ($($t:ty),*) => {$(
        impl Label for $t {
            fn as_label(self) -> Option<bool> {
                match self {
                    0 => Some(false),
                    1 => Some(true),
                    _ => None,
                }
            }
            fn as_f64(self) -> f64 {
                self as f64
            }
        }
    )*};
}
int_label!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize);

macro_rules! float_label {
    ($($t:ty),*) => {$(
        impl Label for $t {
            fn as_label(self) -> Option<bool> {
                if self == 0.0 {
                    Some(false)
                } else if self == 1.0 {
                    Some(true)
                } else {
                    None
                }
            }
            fn as_f64(self) -> f64 {
                f64::from(self)
            }
        }
    )*};
}
float_label!(f32, f64);

/// Checks that `n` equals `expected`.
pub(crate) fn same_len(what: &'static str, expected: usize, found: usize) -> Result<()> {
    if expected == found {
        Ok(())
    } else {
        Err(EvalError::LengthMismatch {
            what,
            expected,
            found,
        })
    }
}

/// Labels as booleans, or the first invalid one.
pub(crate) fn labels_to_bool<L: Label>(what: &'static str, labels: &[L]) -> Result<Vec<bool>> {
    labels
        .iter()
        .enumerate()
        .map(|(index, &l)| {
            l.as_label().ok_or(EvalError::InvalidLabel {
                what,
                index,
                value: l.as_f64(),
            })
        })
        .collect()
}

/// Values as f64, rejecting NaN (infinities pass).
pub(crate) fn finite_or_inf<S: Copy + Into<f64>>(
    what: &'static str,
    values: &[S],
) -> Result<Vec<f64>> {
    values
        .iter()
        .enumerate()
        .map(|(index, &s)| {
            let v: f64 = s.into();
            if v.is_nan() {
                Err(EvalError::NaN { what, index })
            } else {
                Ok(v)
            }
        })
        .collect()
}

/// `softplus(x) = ln(1 + e^x)`, computed without overflow or loss of precision:
/// `max(x, 0) + ln_1p(e^{-|x|})`. `softplus(+inf) = +inf`, `softplus(-inf) = 0`, NaN stays NaN.
pub fn softplus(x: f64) -> f64 {
    if x == f64::INFINITY {
        return x;
    }
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// `ln σ(x) = −softplus(−x)`: the log of the sigmoid, exact in f64 for every finite `x`
/// (`ln σ(−800) = −800`, where `σ(−800)` itself underflows to 0).
pub fn log_sigmoid(x: f64) -> f64 {
    -softplus(-x)
}

/// Neumaier's compensated summation: the error does not grow with the number of terms.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sum {
    sum: f64,
    compensation: f64,
}

impl Sum {
    pub(crate) fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.compensation += (self.sum - t) + x;
        } else {
            self.compensation += (x - t) + self.sum;
        }
        self.sum = t;
    }

    pub(crate) fn value(&self) -> f64 {
        // With an infinite term the compensation is NaN; the plain sum is the answer then.
        if self.sum.is_finite() {
            self.sum + self.compensation
        } else {
            self.sum
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softplus_is_stable_and_exact() {
        assert_eq!(softplus(0.0), std::f64::consts::LN_2);
        assert_eq!(softplus(1000.0), 1000.0);
        assert_eq!(softplus(-1000.0), 0.0);
        assert_eq!(softplus(f64::INFINITY), f64::INFINITY);
        assert_eq!(softplus(f64::NEG_INFINITY), 0.0);
        assert!((softplus(-40.0) - (-40.0f64).exp()).abs() < 1e-30);
        for &x in &[-5.0, -0.3, 0.7, 3.0, 15.0] {
            let direct = (1.0 + f64::exp(x)).ln();
            assert!((softplus(x) - direct).abs() < 1e-14, "{x}");
        }
        assert_eq!(log_sigmoid(-800.0), -800.0);
        assert!((log_sigmoid(2.0) - (1.0 / (1.0 + (-2.0f64).exp())).ln()).abs() < 1e-15);
    }

    #[test]
    fn compensated_sum() {
        let mut s = Sum::default();
        s.add(1.0);
        for _ in 0..10 {
            s.add(1e-16);
        }
        s.add(-1.0);
        assert!((s.value() - 1e-15).abs() < 1e-30);
        let mut s = Sum::default();
        s.add(1.0);
        s.add(f64::NEG_INFINITY);
        assert_eq!(s.value(), f64::NEG_INFINITY);
    }

    #[test]
    fn labels() {
        assert_eq!(
            labels_to_bool("t", &[0u8, 1, 1]).unwrap(),
            vec![false, true, true]
        );
        assert_eq!(
            labels_to_bool("t", &[1.0f32, 0.0]).unwrap(),
            vec![true, false]
        );
        assert!(matches!(
            labels_to_bool("t", &[0i32, 2]),
            Err(EvalError::InvalidLabel { index: 1, .. })
        ));
        assert!(labels_to_bool("t", &[f64::NAN]).is_err());
        assert!(labels_to_bool("t", &[0.5f64]).is_err());
    }
}
