//! Generalised advantage estimation (Schulman et al. 2016) over a vector rollout, with separate
//! termination and episode-end flags so that truncated episodes bootstrap and terminated ones
//! do not.

use crate::error::{Result, RlError};

/// GAE(λ) advantages and λ-returns of a rollout stored time-major (`index = t·num_envs + i`).
///
/// For each transition: `next_values` is the value to bootstrap from — `V(s_{t+1})` inside an
/// episode, `V(terminal observation)` where the episode was truncated (ignored where it
/// terminated); `terminated` marks true terminations (no bootstrap); `episode_end` marks every
/// episode end, terminated or truncated (the advantage recursion is cut there). Then
///
/// ```text
/// δ_t = r_t + γ·(1 − terminated_t)·next_value_t − V(s_t)
/// A_t = δ_t + γλ·(1 − episode_end_t)·A_{t+1}
/// R_t = A_t + V(s_t)
/// ```
///
/// SB3 gets the same numbers by adding `γ·V(terminal)` to truncated rewards and marking them done.
/// Accumulated in f64.
#[allow(clippy::too_many_arguments)]
pub fn compute_gae(
    rewards: &[f32],
    values: &[f32],
    next_values: &[f32],
    terminated: &[bool],
    episode_end: &[bool],
    num_envs: usize,
    gamma: f64,
    lambda: f64,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let n = rewards.len();
    if num_envs == 0
        || n % num_envs != 0
        || [
            values.len(),
            next_values.len(),
            terminated.len(),
            episode_end.len(),
        ]
        .iter()
        .any(|&l| l != n)
    {
        return Err(RlError::Shape(format!(
            "compute_gae: {n} rewards, {} values, {} next values, {} terminated, {} episode ends \
             for {num_envs} envs",
            values.len(),
            next_values.len(),
            terminated.len(),
            episode_end.len()
        )));
    }
    let steps = n / num_envs;
    let mut adv = vec![0.0f32; n];
    let mut ret = vec![0.0f32; n];
    for i in 0..num_envs {
        let mut next_adv = 0.0f64;
        for t in (0..steps).rev() {
            let k = t * num_envs + i;
            let boot = if terminated[k] {
                0.0
            } else {
                gamma * f64::from(next_values[k])
            };
            let delta = f64::from(rewards[k]) + boot - f64::from(values[k]);
            let carry = if episode_end[k] { 0.0 } else { next_adv };
            let a = delta + gamma * lambda * carry;
            adv[k] = a as f32;
            ret[k] = (a + f64::from(values[k])) as f32;
            next_adv = a;
        }
    }
    Ok((adv, ret))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One env, 5 steps: a termination after step 1, a truncation after step 3, and a rollout cut
    /// (bootstrap from the last value) after step 4. Hand-computed with γ = 0.9, λ = 0.5.
    #[test]
    fn gae_matches_a_hand_computation_with_termination_and_truncation() {
        let r = [1.0f32, 2.0, 0.5, -1.0, 3.0];
        let v = [0.2f32, 0.4, -0.3, 0.6, 1.0];
        // next values: V(s1), (ignored, terminated), V(s3), V(terminal obs)=5, last value 2.
        let nv = [0.4f32, 99.0, 0.6, 5.0, 2.0];
        let term = [false, true, false, false, false];
        let end = [false, true, false, true, false];
        let (g, l) = (0.9f64, 0.5f64);
        let (adv, ret) = compute_gae(&r, &v, &nv, &term, &end, 1, g, l).unwrap();
        // Backwards by hand.
        let d4 = 3.0 + g * 2.0 - 1.0; // 3.8
        let a4 = d4;
        let d3 = -1.0 + g * 5.0 - 0.6; // 2.9 (truncation: bootstrap, cut the recursion)
        let a3 = d3;
        let d2 = 0.5 + g * 0.6 - (-0.3); // 1.34
        let a2 = d2 + g * l * a3;
        let d1 = 2.0 - 0.4; // terminated: no bootstrap
        let a1 = d1;
        let d0 = 1.0 + g * 0.4 - 0.2;
        let a0 = d0 + g * l * a1;
        let want = [a0, a1, a2, a3, a4];
        for k in 0..5 {
            assert!(
                (f64::from(adv[k]) - want[k]).abs() < 1e-6,
                "A[{k}] {} vs {}",
                adv[k],
                want[k]
            );
            let rv = want[k] + f64::from(v[k]);
            assert!((f64::from(ret[k]) - rv).abs() < 1e-6, "R[{k}]");
        }
        // Two interleaved envs give each env's own result.
        let mut r2 = Vec::new();
        let (mut v2, mut nv2, mut t2, mut e2) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for k in 0..5 {
            r2.extend([r[k], 0.0]);
            v2.extend([v[k], 0.0]);
            nv2.extend([nv[k], 0.0]);
            t2.extend([term[k], false]);
            e2.extend([end[k], false]);
        }
        let (adv2, _) = compute_gae(&r2, &v2, &nv2, &t2, &e2, 2, g, l).unwrap();
        for k in 0..5 {
            assert_eq!(adv2[2 * k], adv[k]);
            assert_eq!(adv2[2 * k + 1], 0.0);
        }
        assert!(compute_gae(&r, &v, &nv[..4], &term, &end, 1, g, l).is_err());
    }
}
