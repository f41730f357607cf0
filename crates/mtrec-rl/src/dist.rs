//! Diagonal Gaussian and tanh-squashed Gaussian densities, written with differentiable candle ops.
//!
//! Shapes: samples and means are `[B, A]`; `log_std` is `[B, A]` (SAC's state-dependent scale) or
//! `[A]` (PPO's state-independent one), broadcast over the rows. Densities sum over the last
//! dimension (independent action dimensions) and return `[B]`.

use candle_core::{Result, Tensor, D};

/// `ln √(2π)`.
pub const LOG_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// `log N(x; mean, exp(log_std)²)` summed over the last dimension.
pub fn gaussian_log_prob(x: &Tensor, mean: &Tensor, log_std: &Tensor) -> Result<Tensor> {
    let log_std = log_std.broadcast_as(x.shape())?;
    let z = ((x - mean)? / log_std.exp()?)?;
    let per_dim = ((z.sqr()? * -0.5)? - &log_std)?;
    (per_dim - LOG_SQRT_2PI)?.sum(D::Minus1)
}

/// Entropy of the diagonal Gaussian, `Σ (½ + ln √(2π) + log_std)` over the last dimension.
pub fn gaussian_entropy(log_std: &Tensor) -> Result<Tensor> {
    (log_std + (0.5 + LOG_SQRT_2PI))?.sum(D::Minus1)
}

/// `log(1 − tanh(u)²)`, computed as `2·(ln 2 − u − softplus(−2u))`: exact, and finite where
/// `tanh(u)` rounds to ±1 (|u| ≳ 9 in f32), where the textbook `log(1 − a² + 1e-6)` (SB3) is
/// biased by the `1e-6`.
pub fn log_one_minus_tanh_sq(u: &Tensor) -> Result<Tensor> {
    let sp = mtrec_nn::softplus(&(u * -2.0)?)?;
    ((u.neg()? - sp)? + std::f64::consts::LN_2)? * 2.0
}

/// Log-density of `a = tanh(u)` with `u ~ N(mean, exp(log_std)²)`, given the pre-squash sample
/// `u`: `log N(u) − Σ log(1 − tanh(u)²)` (change of variables; the Jacobian of `tanh` is
/// diagonal). Gradients flow into `u` as well, as the reparameterised SAC actor needs.
pub fn squashed_log_prob(u: &Tensor, mean: &Tensor, log_std: &Tensor) -> Result<Tensor> {
    let base = gaussian_log_prob(u, mean, log_std)?;
    base - log_one_minus_tanh_sq(u)?.sum(D::Minus1)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};
    use mtrec_nn::testing::{check_gradients, GradCheckConfig};

    fn t2(v: &[[f64; 3]]) -> Tensor {
        let flat: Vec<f64> = v.iter().flatten().copied().collect();
        Tensor::from_vec(flat, (v.len(), 3), &Device::Cpu).unwrap()
    }

    fn cfg() -> GradCheckConfig {
        GradCheckConfig {
            step: 1e-6,
            rtol: 1e-6,
            atol: 1e-9,
        }
    }

    #[test]
    fn gaussian_log_prob_matches_hand_value_and_its_gradients_match_differences() {
        let x = t2(&[[0.3, -1.2, 2.0], [0.0, 0.5, -0.7]]);
        let mean = Var::from_tensor(&t2(&[[0.1, -0.4, 1.0], [0.2, 0.0, 0.3]])).unwrap();
        let log_std =
            Var::from_tensor(&Tensor::new(&[0.2f64, -0.5, 0.7], &Device::Cpu).unwrap()).unwrap();
        // Hand value of the first row.
        let lp: Vec<f64> = gaussian_log_prob(&x, &mean, &log_std)
            .unwrap()
            .to_vec1()
            .unwrap();
        let (xs, ms, ls) = ([0.3, -1.2, 2.0], [0.1, -0.4, 1.0], [0.2f64, -0.5, 0.7]);
        let want: f64 = (0..3)
            .map(|i| {
                let z = (xs[i] - ms[i]) / ls[i].exp();
                -0.5 * z * z - ls[i] - 0.5 * (2.0 * std::f64::consts::PI).ln()
            })
            .sum();
        assert!((lp[0] - want).abs() < 1e-12, "{} vs {want}", lp[0]);
        let rep = check_gradients(
            &[mean.clone(), log_std.clone()],
            |v| {
                let w = Tensor::new(&[[1.0f64], [-0.7]], &Device::Cpu)?;
                (gaussian_log_prob(&x, v[0].as_tensor(), v[1].as_tensor())?.unsqueeze(1)? * w)?
                    .sum_all()
            },
            cfg(),
        )
        .unwrap();
        assert_eq!(rep.checked, 9);
        rep.assert_ok();
    }

    /// SAC's actor: `u = mean + exp(log_std)·ε`, `log π(tanh u)`; gradients through `u` too.
    #[test]
    fn squashed_log_prob_gradients_match_differences() {
        let eps = t2(&[[0.4, -1.1, 2.3], [-0.2, 1.7, 0.05]]);
        let mean = Var::from_tensor(&t2(&[[0.1, -0.4, 1.0], [3.5, 0.0, -2.0]])).unwrap();
        let log_std = Var::from_tensor(&t2(&[[0.2, -0.5, 0.3], [-1.0, 0.1, 0.0]])).unwrap();
        let rep = check_gradients(
            &[mean.clone(), log_std.clone()],
            |v| {
                let u = (v[0].as_tensor() + (v[1].as_tensor().exp()? * &eps)?)?;
                squashed_log_prob(&u, v[0].as_tensor(), v[1].as_tensor())?.sum_all()
            },
            GradCheckConfig {
                step: 1e-6,
                rtol: 1e-5,
                atol: 1e-8,
            },
        )
        .unwrap();
        assert_eq!(rep.checked, 12);
        rep.assert_ok();
        // With ε fixed, d/dmean of log N(u) is 0 (z does not move); all of the mean's gradient
        // is the Jacobian term's: −d/du Σ log(1 − tanh² u) = 2·tanh(u).
        let u = (mean.as_tensor() + (log_std.as_tensor().exp().unwrap() * &eps).unwrap()).unwrap();
        let g = squashed_log_prob(&u, mean.as_tensor(), log_std.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gm: Vec<Vec<f64>> = g.get(mean.as_tensor()).unwrap().to_vec2().unwrap();
        let uv: Vec<Vec<f64>> = u.to_vec2().unwrap();
        for (gr, ur) in gm.iter().zip(&uv) {
            for (a, b) in gr.iter().zip(ur) {
                assert!(
                    (a - 2.0 * b.tanh()).abs() < 1e-12,
                    "{a} vs {}",
                    2.0 * b.tanh()
                );
            }
        }
    }

    /// 1-D: `p(a) = N(atanh a; μ, σ) / (1 − a²)`, by hand, and it integrates to 1 over (−1, 1).
    #[test]
    fn squashed_log_prob_is_the_density_of_tanh_u_in_1d() {
        let (mu, log_std) = (0.4f64, -0.3f64);
        let sigma = log_std.exp();
        let hand = |a: f64| {
            let u = a.atanh();
            let z = (u - mu) / sigma;
            (-0.5 * z * z).exp() / (sigma * (2.0 * std::f64::consts::PI).sqrt()) / (1.0 - a * a)
        };
        // Midpoint rule over a ∈ (−1, 1).
        let n = 20_000;
        let a: Vec<f64> = (0..n)
            .map(|i| -1.0 + (i as f64 + 0.5) * 2.0 / n as f64)
            .collect();
        let u = Tensor::from_vec(
            a.iter().map(|x| x.atanh()).collect::<Vec<_>>(),
            (n, 1),
            &Device::Cpu,
        )
        .unwrap();
        let mean = Tensor::full(mu, (n, 1), &Device::Cpu).unwrap();
        let ls = Tensor::new(&[log_std], &Device::Cpu).unwrap();
        let lp: Vec<f64> = squashed_log_prob(&u, &mean, &ls)
            .unwrap()
            .to_vec1()
            .unwrap();
        let mut integral = 0.0;
        for (ai, li) in a.iter().zip(&lp) {
            let h = hand(*ai);
            assert!(
                (li.exp() - h).abs() <= 1e-9 * (1.0 + h),
                "a={ai}: {} vs {h}",
                li.exp()
            );
            integral += li.exp() * 2.0 / n as f64;
        }
        assert!((integral - 1.0).abs() < 1e-4, "∫ p(a) da = {integral}");
        // Stable where tanh(u) rounds to ±1 in f32.
        let big = Tensor::new(&[[30.0f32, -30.0]], &Device::Cpu).unwrap();
        let v: Vec<f32> = log_one_minus_tanh_sq(&big)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want = 2.0 * (std::f32::consts::LN_2 - 30.0);
        assert!(v.iter().all(|x| (x - want).abs() < 1e-4), "{v:?}");
    }

    #[test]
    fn entropy_matches_the_closed_form_and_gradient() {
        let ls = [0.3f64, -1.0, 0.0, 2.0];
        let t = Tensor::new(&ls, &Device::Cpu).unwrap();
        let h: f64 = gaussian_entropy(&t).unwrap().to_scalar().unwrap();
        let want: f64 = ls
            .iter()
            .map(|l| {
                0.5 * (2.0 * std::f64::consts::PI * std::f64::consts::E * (2.0 * l).exp()).ln()
            })
            .sum();
        assert!((h - want).abs() < 1e-12, "{h} vs {want}");
        // Monte Carlo: −E[log p(x)] over many draws (f32 path, as the trainers use).
        let mean = Tensor::zeros((20_000, 4), DType::F32, &Device::Cpu).unwrap();
        let ls32 = t.to_dtype(DType::F32).unwrap();
        let eps = crate::nets::standard_normal(&mut crate::nets::rng(3, 0), 80_000);
        let x = Tensor::from_vec(eps, (20_000, 4), &Device::Cpu)
            .unwrap()
            .broadcast_mul(&ls32.exp().unwrap())
            .unwrap();
        let mc: f32 = gaussian_log_prob(&x, &mean, &ls32)
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!((f64::from(-mc) - want).abs() < 0.05, "{mc} vs {want}");
    }
}
