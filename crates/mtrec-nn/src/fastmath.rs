//! Branch-free f32 `exp` and `erf` that the compiler can vectorise, for the fused CPU kernels.
//!
//! glibc's `expf` and libm's `erff` are calls per element: in LinRec's training step the GELU
//! (`erf` forward, `erf` and `exp` backward) over `[51,200, 256]` and the ELUs of the linear
//! attention spent more time in those calls than in the rest of their kernels. These are the
//! classic polynomial forms, written without branches or calls so that a loop over them becomes
//! SIMD code:
//!
//! * [`exp`]: range reduction `x = k·ln 2 + r` (ln 2 split in two parts), a degree-6 polynomial
//!   for `e^r` (the Cephes `expf` coefficients), then `2^k` through the exponent bits; relative
//!   error below 3e-7 on `[−87, 88]` (tested against `f32::exp`), 0 below −87.3 → about 1e-38.
//! * [`erf`]: the odd/even minimax rational approximation on `[−4, 4]` used by XLA and Eigen for
//!   f32 (`erf(±4)` is ±1 in f32); absolute error below 1e-6 (tested against libm's `erf` in f64).
//!
//! f64 kernels keep the exact library functions.

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split so that `k · LN2_HI` is exact for the `k` that occur.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// 1.5 · 2^23: adding it to a float of magnitude below 2^22 rounds that float to an integer,
/// which then sits in the sum's low mantissa bits.
const ROUND: f32 = 12_582_912.0;

/// `e^x` in f32 (see the module docs).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.3);
    // k = round(x / ln 2) with float adds only: Rust's saturating float-to-int `as` does not
    // vectorise (it became four scalar conversions per SSE vector), this does. A NaN stays NaN.
    let big = x * LOG2E + ROUND;
    let kf = big - ROUND;
    let r = x - kf * LN2_HI - kf * LN2_LO;
    let r2 = r * r;
    let p = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * r2 + r + 1.0;
    // 2^k through the exponent bits; k (in [−126, 127] after the clamp) is the low bits of `big`.
    let k = big.to_bits().wrapping_sub(ROUND.to_bits());
    y * f32::from_bits(k.wrapping_add(127) << 23)
}

/// `erf(x)` in f32 (see the module docs).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = ((((((-2.726_142_3e-10 * x2 + 2.770_681_4e-8) * x2 - 2.101_024e-6) * x2
        - 5.692_506_4e-5)
        * x2
        - 7.349_906_3e-4)
        * x2
        - 2.954_600_1e-3)
        * x2
        - 1.609_603_3e-2)
        * x;
    let q = (((-1.456_607_2e-5 * x2 - 2.133_740_6e-4) * x2 - 1.682_827e-3) * x2 - 7.373_329_3e-3)
        * x2
        - 1.426_474e-2;
    p / q
}

/// The float types of the fused CPU kernels (f32 and f64), with the per-type maths they need:
/// the vectorisable forms above in f32, the library functions in f64.
pub(crate) trait Elem:
    num_traits::Float + candle_core::WithDType + Send + Sync + std::ops::AddAssign + std::ops::MulAssign
{
    /// `e^x`.
    fn exp_v(self) -> Self;
    /// `x·Φ(x)` (erf form, as candle's `gelu_erf`).
    fn gelu(self) -> Self;
    /// `Φ(x) + x·φ(x)`, the derivative of `x·Φ(x)`.
    fn gelu_slope(self) -> Self;
}

impl Elem for f32 {
    #[inline(always)]
    fn exp_v(self) -> Self {
        exp(self)
    }

    #[inline(always)]
    fn gelu(self) -> Self {
        (erf(self * std::f32::consts::FRAC_1_SQRT_2) + 1.) * 0.5 * self
    }

    #[inline(always)]
    fn gelu_slope(self) -> Self {
        const INV_SQRT_2PI: f32 = 0.398_942_3;
        0.5 * (1.0 + erf(self * std::f32::consts::FRAC_1_SQRT_2))
            + self * exp(-0.5 * self * self) * INV_SQRT_2PI
    }
}

impl Elem for f64 {
    #[inline(always)]
    fn exp_v(self) -> Self {
        self.exp()
    }

    fn gelu(self) -> Self {
        (candle_core::cpu::erf::erf_f64(self * std::f64::consts::FRAC_1_SQRT_2) + 1.) * 0.5 * self
    }

    fn gelu_slope(self) -> Self {
        let inv_sqrt_2pi = 1.0 / (2.0 * std::f64::consts::PI).sqrt();
        0.5 * (1.0 + candle_core::cpu::erf::erf_f64(self * std::f64::consts::FRAC_1_SQRT_2))
            + self * (-0.5 * self * self).exp() * inv_sqrt_2pi
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_is_within_3e_7_relative() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = f64::from(x).exp();
            let got = f64::from(super::exp(x));
            worst = worst.max(((got - want) / want).abs());
            x += 0.000_37;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert!(super::exp(-200.0) < 1e-37);
        assert_eq!(super::exp(0.0), 1.0);
        assert!(super::exp(f32::NAN).is_nan());
        assert!(super::exp(1e30) > 1e38 && super::exp(1e30).is_finite());
    }

    #[test]
    fn erf_is_within_1e_6_absolute() {
        let mut worst = 0f64;
        let mut x = -6.0f32;
        while x < 6.0 {
            let want = candle_core::cpu::erf::erf_f64(f64::from(x));
            worst = worst.max((f64::from(super::erf(x)) - want).abs());
            x += 0.000_11;
        }
        assert!(worst < 1e-6, "worst absolute error {worst}");
        assert_eq!(super::erf(0.0), 0.0);
    }
}
