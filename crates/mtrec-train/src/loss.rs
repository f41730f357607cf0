//! MTRec's training loss for the recommendation model `F = σ(z)` (paper Eq. 8–10,
//! `specs/method.md` §4):
//!
//! ```text
//! L_CE    = mean[ softplus(z) − y·z ]                        (BCE with logits)
//! L_Align = −mean[ r_P·σ(z) + r_N·(1 − σ(z)) ]                (r_P, r_N constants: no gradient)
//! L       = L_CE + κ·L_Align + aux                            (aux: DIEN's auxiliary loss)
//! ```
//!
//! Per sample, `∂(κ·L_Align)/∂z = −κ (r_P − r_N) σ'(z) / B` with `σ' = σ(1 − σ)`: the alignment term
//! pushes the click probability up where the user's mental reward prefers engaging.

use candle_core::{Result, Tensor};
use mtrec_nn::bce_with_logits;

/// The terms of one batch's loss (scalars).
#[derive(Debug, Clone)]
pub struct LossTerms {
    /// `L_CE + κ·L_Align + aux`: what the optimiser minimises.
    pub total: Tensor,
    /// `L_CE`.
    pub bce: Tensor,
    /// `L_Align` (unweighted), when κ > 0.
    pub align: Option<Tensor>,
    /// The backbone's auxiliary loss, when it has one.
    pub aux: Option<Tensor>,
}

/// `L_Align = −mean[r_P σ(z) + r_N (1 − σ(z))]` over `[B]` logits and rewards. The rewards are
/// detached, so no gradient reaches whatever produced them.
pub fn alignment_loss(logits: &Tensor, r_pos: &Tensor, r_neg: &Tensor) -> Result<Tensor> {
    let r_pos = r_pos.to_dtype(logits.dtype())?.detach();
    let r_neg = r_neg.to_dtype(logits.dtype())?.detach();
    let p = candle_nn::ops::sigmoid(logits)?;
    // r_P σ + r_N (1 − σ) = r_N + (r_P − r_N) σ
    let gain = (&r_neg + ((&r_pos - &r_neg)? * p)?)?;
    gain.mean_all()?.neg()
}

/// The full loss. `rewards` = `(r_pos, r_neg)` `[B]` tensors, needed when `kappa > 0` (ignored at 0).
pub fn training_loss(
    logits: &Tensor,
    labels: &Tensor,
    rewards: Option<(&Tensor, &Tensor)>,
    kappa: f64,
    aux: Option<&Tensor>,
) -> Result<LossTerms> {
    let bce = bce_with_logits(logits, labels)?;
    let mut total = bce.clone();
    let align = match (kappa > 0.0, rewards) {
        (true, Some((rp, rn))) => {
            let a = alignment_loss(logits, rp, rn)?;
            total = (total + (&a * kappa)?)?;
            Some(a)
        }
        (true, None) => candle_core::bail!("kappa > 0 needs the rewards of the batch"),
        (false, _) => None,
    };
    let aux = match aux {
        Some(a) => {
            let a = a.to_dtype(total.dtype())?;
            total = (total + &a)?;
            Some(a)
        }
        None => None,
    };
    Ok(LossTerms {
        total,
        bce,
        align,
        aux,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn sigmoid(z: f64) -> f64 {
        1.0 / (1.0 + (-z).exp())
    }

    /// The alignment term changes each logit's gradient by exactly −κ (r_P − r_N) σ'(z) / B,
    /// checked against the closed form and against central finite differences.
    #[test]
    fn alignment_gradient_is_minus_kappa_reward_gap_times_sigmoid_prime() {
        let dev = Device::Cpu;
        let z0 = [0.3f64, -1.2, 2.5, 0.0, -0.4];
        let y = [1.0f64, 0.0, 1.0, 0.0, 1.0];
        let rp = [0.7f64, -0.3, 1.5, 0.2, -2.0];
        let rn = [-0.1f64, 0.4, 0.5, 0.2, 1.0];
        let b = z0.len() as f64;
        let z = Var::new(&z0[..], &dev).unwrap();
        let yt = Tensor::new(&y[..], &dev).unwrap();
        let rpt = Tensor::new(&rp[..], &dev).unwrap();
        let rnt = Tensor::new(&rn[..], &dev).unwrap();
        let kappa = 0.2;
        let grad_of = |kappa: f64| -> Vec<f64> {
            let l = training_loss(z.as_tensor(), &yt, Some((&rpt, &rnt)), kappa, None).unwrap();
            let g = l.total.backward().unwrap();
            g.get(z.as_tensor()).unwrap().to_vec1().unwrap()
        };
        let plain = grad_of(0.0);
        let aligned = grad_of(kappa);
        for i in 0..z0.len() {
            let s = sigmoid(z0[i]);
            // BCE part: (σ − y)/B.
            assert!((plain[i] - (s - y[i]) / b).abs() < 1e-14);
            let want = -kappa * (rp[i] - rn[i]) * s * (1.0 - s) / b;
            assert!(
                (aligned[i] - plain[i] - want).abs() < 1e-14,
                "sample {i}: {} vs {want}",
                aligned[i] - plain[i]
            );
        }
        // Finite differences of the total loss.
        let loss_at = |zs: &[f64]| -> f64 {
            let zt = Tensor::new(zs, &dev).unwrap();
            training_loss(&zt, &yt, Some((&rpt, &rnt)), kappa, None)
                .unwrap()
                .total
                .to_scalar()
                .unwrap()
        };
        let h = 1e-6;
        for i in 0..z0.len() {
            let mut up = z0;
            let mut dn = z0;
            up[i] += h;
            dn[i] -= h;
            let fd = (loss_at(&up) - loss_at(&dn)) / (2.0 * h);
            assert!(
                (fd - aligned[i]).abs() < 1e-8,
                "{i}: {fd} vs {}",
                aligned[i]
            );
        }
    }

    #[test]
    fn terms_add_up_and_rewards_get_no_gradient() {
        let dev = Device::Cpu;
        let z = Tensor::new(&[0.5f32, -0.5], &dev).unwrap();
        let y = Tensor::new(&[1.0f32, 0.0], &dev).unwrap();
        let rp = Var::new(&[1.0f32, 2.0], &dev).unwrap();
        let rn = Tensor::new(&[0.0f32, 1.0], &dev).unwrap();
        let aux = Tensor::new(0.25f32, &dev).unwrap();
        let l = training_loss(&z, &y, Some((rp.as_tensor(), &rn)), 0.5, Some(&aux)).unwrap();
        let f = |t: &Tensor| t.to_scalar::<f32>().unwrap();
        let align = f(l.align.as_ref().unwrap());
        let s = 1.0 / (1.0 + (-0.5f32).exp());
        let want_align = -((s) + (1.0 + (1.0 - s))) / 2.0;
        assert!((align - want_align).abs() < 1e-6);
        assert!((f(&l.total) - (f(&l.bce) + 0.5 * align + 0.25)).abs() < 1e-6);
        let g = l.total.backward().unwrap();
        assert!(g.get(rp.as_tensor()).is_none());
        // kappa 0: no alignment term, rewards optional; kappa > 0 without rewards: an error.
        assert!(training_loss(&z, &y, None, 0.0, None)
            .unwrap()
            .align
            .is_none());
        assert!(training_loss(&z, &y, None, 0.1, None).is_err());
    }
}
