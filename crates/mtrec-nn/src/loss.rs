//! Numerically stable losses on logits.

use candle_core::{Result, Tensor};

/// `log(1 + exp(x))` without overflow: `relu(x) + log(1 + exp(−|x|))`.
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    let log1p = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    x.relu()? + log1p
}

/// `log σ(x) = −softplus(−x)`.
pub fn log_sigmoid(x: &Tensor) -> Result<Tensor> {
    softplus(&x.neg()?)?.neg()
}

/// Mean binary cross-entropy of click logits `[B]` against labels `[B]` in {0, 1}:
/// `mean(softplus(z) − y·z)` (= `−y log σ(z) − (1−y) log(1−σ(z))`).
///
/// The DIEN reference computes a 2-logit softmax cross-entropy averaged over both columns, which
/// is half this value with `z = z₀ − z₁`; we keep the standard scale (the learning rate absorbs it
/// for Adam, which is scale invariant).
pub fn bce_with_logits(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let labels = labels.to_dtype(logits.dtype())?;
    (softplus(logits)? - (logits * labels)?)?.mean_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn bce_matches_hand_values_and_survives_large_logits() {
        let z = Tensor::new(&[0.0f64, 2.0, -3.0, 800.0, -800.0], &Device::Cpu).unwrap();
        let y = Tensor::new(&[1.0f64, 0.0, 1.0, 1.0, 0.0], &Device::Cpu).unwrap();
        let l: f64 = bce_with_logits(&z, &y).unwrap().to_scalar().unwrap();
        let want = (2f64.ln() + (1.0 + 2f64.exp()).ln() + (1.0 + 3f64.exp()).ln()) / 5.0;
        assert!((l - want).abs() < 1e-12, "{l} vs {want}");
        let ls: Vec<f64> = log_sigmoid(&z).unwrap().to_vec1().unwrap();
        assert!((ls[1] - (1.0 / (1.0 + (-2f64).exp())).ln()).abs() < 1e-12);
        assert!(ls.iter().all(|v| v.is_finite()));
    }
}
