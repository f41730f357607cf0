//! The reward-learning objectives (`specs/method.md` §2–§3) and the rewards they imply.
//!
//! Shapes: `B` transitions, 2 actions (index [`mtrec_nn::ACTION_P`] = 1 is "click", 0 "skip"),
//! `N` quantile heads. IQ-Learn's Q-network outputs `[B, 2]`, QR-IQL's `[B, 2, N]`.
//! `actions` are `[B]` u32, `done` `[B]` float (1 at the end of a trajectory).
//!
//! Gradients flow through `Q(s, a)`, `V(s)` and `V(s')`: no target network and no stop-gradient,
//! IQ-Learn's default (method §3.3 A5).

use candle_core::{DType, Result, Tensor, D};

/// The settings shared by both objectives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IqConfig {
    /// Discount γ (method §3.3 A2: IQ-Learn's 0.99).
    pub gamma: f64,
    /// χ² regulariser α (paper A.3: 0.5).
    pub alpha: f64,
    /// Keep `γ·(1 − done)` inside the squared term (method §3.3 A1). `false` reproduces the
    /// paper's Problem 6 literally (γ = 1 and no done masking inside the square).
    pub u2_gamma: bool,
}

impl Default for IqConfig {
    fn default() -> Self {
        IqConfig {
            gamma: 0.99,
            alpha: 0.5,
            u2_gamma: true,
        }
    }
}

impl IqConfig {
    /// The factor in front of `V(s')` inside the χ² term: `γ(1 − done)`, or 1 in the literal mode.
    fn next_factor(&self, done: &Tensor, dtype: DType) -> Result<Tensor> {
        let done = done.to_dtype(dtype)?;
        if self.u2_gamma {
            done.affine(-self.gamma, self.gamma)
        } else {
            done.ones_like()
        }
    }
}

/// The quantile midpoints `τ_i = (2i − 1) / (2N)`, `i = 1..N` (QR-DQN).
pub fn quantile_taus(n: usize) -> Vec<f64> {
    (1..=n)
        .map(|i| (2 * i - 1) as f64 / (2 * n) as f64)
        .collect()
}

/// The pinball loss `p_τ(u) = τ·u` for `u ≥ 0`, `(τ − 1)·u` for `u < 0`, elementwise; `tau`
/// broadcasts against `u`.
pub fn pinball(u: &Tensor, tau: &Tensor) -> Result<Tensor> {
    let neg = u.lt(0.0)?.to_dtype(u.dtype())?;
    // τ − 1{u<0}
    let w = tau.broadcast_sub(&neg)?;
    u.mul(&w)
}

/// `Q(s, a)` for the logged actions: `[B, 2]` → `[B]`, or `[B, 2, N]` → `[B, N]`.
pub fn gather_action(q: &Tensor, actions: &Tensor) -> Result<Tensor> {
    let actions = actions.to_dtype(DType::U32)?;
    let q = q.contiguous()?;
    match q.rank() {
        2 => q.gather(&actions.unsqueeze(1)?, 1)?.squeeze(1),
        3 => {
            let (b, _, n) = q.dims3()?;
            let idx = actions
                .reshape((b, 1, 1))?
                .broadcast_as((b, 1, n))?
                .contiguous()?;
            q.gather(&idx, 1)?.squeeze(1)
        }
        r => candle_core::bail!("expected Q of rank 2 or 3, got rank {r}"),
    }
}

/// The soft value `V(x) = logsumexp_a Q(x, a)` (temperature 1): `[B, 2]` → `[B]`,
/// `[B, 2, N]` → `[B, N]` (per head, method §3.3 A4).
pub fn soft_value(q: &Tensor) -> Result<Tensor> {
    q.log_sum_exp(1)
}

/// The offline χ² IQ-Learn objective ("IRL", method §2.2):
/// `mean[V(s) − Q(s,a)] + 1/(4α) · mean[(Q(s,a) − γ(1−done)·V(s'))²]`.
pub fn iq_loss(
    q_s: &Tensor,
    actions: &Tensor,
    q_next: &Tensor,
    done: &Tensor,
    cfg: &IqConfig,
) -> Result<Tensor> {
    let qa = gather_action(q_s, actions)?;
    let ce = (soft_value(q_s)? - &qa)?;
    let target = (cfg.next_factor(done, q_s.dtype())? * soft_value(q_next)?)?;
    let chi = (qa - target)?.sqr()?;
    ce.mean_all()? + (chi.mean_all()? * (1.0 / (4.0 * cfg.alpha)))?
}

/// The paper-literal QR-IQL objective (App. A.2, method §3.2): per head `i`,
/// `u1_i = λ_i(s,a) − V_i(s)`, `u2_i = 1/(4α)·(λ_i(s,a) − γ(1−done)·V_i(s'))²`, loss
/// `mean_B Σ_i [p_τi(u1_i) + p_τi(u2_i)]`. The heads are not sorted (method §10: they do not come
/// out ordered like quantiles).
pub fn qr_iql_loss(
    lam_s: &Tensor,
    actions: &Tensor,
    lam_next: &Tensor,
    done: &Tensor,
    cfg: &IqConfig,
) -> Result<Tensor> {
    let (_, _, n) = lam_s.dims3()?;
    let taus =
        Tensor::from_vec(quantile_taus(n), (1, n), lam_s.device())?.to_dtype(lam_s.dtype())?;
    let la = gather_action(lam_s, actions)?; // [B,N]
    let u1 = (&la - soft_value(lam_s)?)?;
    let factor = cfg.next_factor(done, lam_s.dtype())?.unsqueeze(1)?; // [B,1]
    let target = factor.broadcast_mul(&soft_value(lam_next)?)?;
    let u2 = ((la - target)?.sqr()? * (1.0 / (4.0 * cfg.alpha)))?;
    let per = (pinball(&u1, &taus)? + pinball(&u2, &taus)?)?;
    per.sum(1)?.mean_all()
}

/// The mean over heads `Q_λ(s, ·) = (1/N) Σ_i λ_i(s, ·)`: `[B, 2, N]` → `[B, 2]`; `[B, 2]` passes
/// through (IQ-Learn).
pub fn mean_q(q: &Tensor) -> Result<Tensor> {
    match q.rank() {
        2 => Ok(q.clone()),
        3 => q.mean(D::Minus1),
        r => candle_core::bail!("expected Q of rank 2 or 3, got rank {r}"),
    }
}

/// The expected mental reward of both actions (Eq. 7, method §3.2):
/// `r*(s, a) = Q_λ(s, a) − γ(1 − done)·logsumexp_a' Q_λ(s', a')`, `[B, 2]`, with the logsumexp of the
/// head mean (not the mean of per-head logsumexps). Both actions share the logged `s'` (method §4).
pub fn expected_rewards(
    q_s: &Tensor,
    q_next: &Tensor,
    done: &Tensor,
    gamma: f64,
) -> Result<Tensor> {
    let qs = mean_q(q_s)?;
    let v_next = soft_value(&mean_q(q_next)?)?; // [B]
    let factor = done.to_dtype(qs.dtype())?.affine(-gamma, gamma)?;
    qs.broadcast_sub(&(factor * v_next)?.unsqueeze(1)?)
}

/// The distributional reward samples `r_i(s, a) = λ_i(s, a) − γ(1 − done)·V_i(s')`, `[B, 2, N]`.
pub fn quantile_rewards(
    lam_s: &Tensor,
    lam_next: &Tensor,
    done: &Tensor,
    gamma: f64,
) -> Result<Tensor> {
    let v_next = soft_value(lam_next)?; // [B,N]
    let factor = done
        .to_dtype(lam_s.dtype())?
        .affine(-gamma, gamma)?
        .unsqueeze(1)?;
    lam_s.broadcast_sub(&factor.broadcast_mul(&v_next)?.unsqueeze(1)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use mtrec_nn::testing::{check_gradients, GradCheckConfig};

    fn t(v: &[f64], shape: &[usize]) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
    }
    fn scalar(x: &Tensor) -> f64 {
        x.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    }
    fn acts(v: &[u32]) -> Tensor {
        Tensor::from_vec(v.to_vec(), v.len(), &Device::Cpu).unwrap()
    }

    #[test]
    fn iq_loss_hand_value() {
        // method §9: Q(s,·) = (0,0), a = P, Q(s',·) = (0,0), γ = 0.99, done = 0, α = 0.5.
        let l = iq_loss(
            &t(&[0.0, 0.0], &[1, 2]),
            &acts(&[1]),
            &t(&[0.0, 0.0], &[1, 2]),
            &t(&[0.0], &[1]),
            &IqConfig::default(),
        )
        .unwrap();
        assert!((scalar(&l) - 0.928593).abs() < 1e-6, "{}", scalar(&l));
        // done = 1 drops the bootstrap: ln 2 + 0.
        let l = iq_loss(
            &t(&[0.0, 0.0], &[1, 2]),
            &acts(&[1]),
            &t(&[0.0, 0.0], &[1, 2]),
            &t(&[1.0], &[1]),
            &IqConfig::default(),
        )
        .unwrap();
        assert!((scalar(&l) - 2f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn pinball_cases() {
        let u = t(&[1.0, -1.0, 0.0, 2.5], &[4]);
        let tau = t(&[0.05], &[1]);
        let p: Vec<f64> = pinball(&u, &tau).unwrap().to_vec1().unwrap();
        let want = [0.05, 0.95, 0.0, 0.125];
        for (a, b) in p.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{p:?}");
        }
        assert_eq!(quantile_taus(10)[0], 0.05);
        assert!((quantile_taus(10)[9] - 0.95).abs() < 1e-15);
    }

    fn random(shape: &[usize], seed: u64) -> Tensor {
        // A small deterministic generator keeps the test independent of candle's RNG.
        let n: usize = shape.iter().product();
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let v: Vec<f64> = (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 11) as f64 / (1u64 << 53) as f64) * 4.0 - 2.0
            })
            .collect();
        t(&v, shape)
    }

    #[test]
    fn qr_iql_equals_its_closed_form_and_half_iq_with_one_head() {
        let cfg = IqConfig::default();
        let (b, n) = (7, 10);
        let lam = random(&[b, 2, n], 1);
        let lam_next = random(&[b, 2, n], 2);
        let a = acts(&[1, 0, 1, 1, 0, 0, 1]);
        let done = t(&[0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0], &[b]);
        let l = scalar(&qr_iql_loss(&lam, &a, &lam_next, &done, &cfg).unwrap());
        // Closed form Σ_i [(1 − τ_i) CE_i + τ_i u2_i], computed with plain f64.
        let lv: Vec<Vec<Vec<f64>>> = lam.to_vec3().unwrap();
        let nv: Vec<Vec<Vec<f64>>> = lam_next.to_vec3().unwrap();
        let av: Vec<u32> = a.to_vec1().unwrap();
        let dv: Vec<f64> = done.to_vec1().unwrap();
        let taus = quantile_taus(n);
        let lse = |x: f64, y: f64| x.max(y) + (1.0 + (-(x - y).abs()).exp()).ln();
        let mut total = 0.0;
        for r in 0..b {
            for i in 0..n {
                let qa = lv[r][av[r] as usize][i];
                let ce = lse(lv[r][0][i], lv[r][1][i]) - qa;
                let u2 = (qa - 0.99 * (1.0 - dv[r]) * lse(nv[r][0][i], nv[r][1][i])).powi(2) / 2.0;
                total += (1.0 - taus[i]) * ce + taus[i] * u2;
            }
        }
        assert!(
            (l - total / b as f64).abs() < 1e-10,
            "{l} vs {}",
            total / b as f64
        );
        // N = 1 (τ = 0.5) is half the IQ-Learn loss.
        let one = lam.narrow(2, 0, 1).unwrap();
        let one_next = lam_next.narrow(2, 0, 1).unwrap();
        let qr = scalar(&qr_iql_loss(&one, &a, &one_next, &done, &cfg).unwrap());
        let iq = scalar(
            &iq_loss(
                &one.squeeze(2).unwrap(),
                &a,
                &one_next.squeeze(2).unwrap(),
                &done,
                &cfg,
            )
            .unwrap(),
        );
        assert!((qr - 0.5 * iq).abs() < 1e-12, "{qr} vs {iq}");
    }

    #[test]
    fn gradients_flow_into_next_state_and_match_finite_differences() {
        let cfg = IqConfig::default();
        let lam = Var::from_tensor(&random(&[3, 2, 4], 3)).unwrap();
        let lam_next = Var::from_tensor(&random(&[3, 2, 4], 4)).unwrap();
        let a = acts(&[1, 0, 1]);
        let done = t(&[0.0, 1.0, 0.0], &[3]);
        let loss = qr_iql_loss(lam.as_tensor(), &a, lam_next.as_tensor(), &done, &cfg).unwrap();
        let grads = loss.backward().unwrap();
        let g: Vec<Vec<Vec<f64>>> = grads.get(lam_next.as_tensor()).unwrap().to_vec3().unwrap();
        // Row 1 is terminal: no gradient into its s'; rows 0 and 2 receive one.
        assert!(g[1].iter().flatten().all(|&x| x == 0.0));
        assert!(g[0].iter().flatten().any(|&x| x != 0.0));
        check_gradients(
            &[lam.clone(), lam_next.clone()],
            |_| qr_iql_loss(lam.as_tensor(), &a, lam_next.as_tensor(), &done, &cfg),
            GradCheckConfig::default(),
        )
        .unwrap()
        .assert_ok();
        let q = Var::from_tensor(&random(&[3, 2], 5)).unwrap();
        let qn = Var::from_tensor(&random(&[3, 2], 6)).unwrap();
        check_gradients(
            &[q.clone(), qn.clone()],
            |_| iq_loss(q.as_tensor(), &a, qn.as_tensor(), &done, &cfg),
            GradCheckConfig::default(),
        )
        .unwrap()
        .assert_ok();
    }

    #[test]
    fn literal_mode_drops_gamma_and_done_inside_the_square() {
        let cfg = IqConfig {
            u2_gamma: false,
            ..IqConfig::default()
        };
        let l = iq_loss(
            &t(&[0.0, 0.0], &[1, 2]),
            &acts(&[1]),
            &t(&[0.0, 0.0], &[1, 2]),
            &t(&[1.0], &[1]),
            &cfg,
        )
        .unwrap();
        let want = 2f64.ln() + 0.5 * 2f64.ln().powi(2);
        assert!((scalar(&l) - want).abs() < 1e-12);
    }

    #[test]
    fn rewards_use_the_logsumexp_of_the_head_mean() {
        let lam = random(&[2, 2, 3], 7);
        let lam_next = random(&[2, 2, 3], 8);
        let done = t(&[0.0, 1.0], &[2]);
        let r: Vec<Vec<f64>> = expected_rewards(&lam, &lam_next, &done, 0.9)
            .unwrap()
            .to_vec2()
            .unwrap();
        let l: Vec<Vec<Vec<f64>>> = lam.to_vec3().unwrap();
        let nx: Vec<Vec<Vec<f64>>> = lam_next.to_vec3().unwrap();
        let mean = |v: &Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
        let v0 = (mean(&nx[0][0]).exp() + mean(&nx[0][1]).exp()).ln();
        assert!((r[0][1] - (mean(&l[0][1]) - 0.9 * v0)).abs() < 1e-12);
        assert!(
            (r[1][0] - mean(&l[1][0])).abs() < 1e-12,
            "terminal: no bootstrap"
        );
        // The difference of the two actions' rewards is the Q difference: s' is shared.
        let dq = mean(&l[0][1]) - mean(&l[0][0]);
        assert!(((r[0][1] - r[0][0]) - dq).abs() < 1e-12);
        let qr: Vec<Vec<Vec<f64>>> = quantile_rewards(&lam, &lam_next, &done, 0.9)
            .unwrap()
            .to_vec3()
            .unwrap();
        let vi = (nx[0][0][2].exp() + nx[0][1][2].exp()).ln();
        assert!((qr[0][1][2] - (l[0][1][2] - 0.9 * vi)).abs() < 1e-12);
    }
}
