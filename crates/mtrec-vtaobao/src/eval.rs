//! eCTR of a policy over complete episodes (decision (c) of the spec: both estimators).
//!
//! The paper reports the per-episode eCTR `r_episode / (10 · N_step)` "averaged ... with 95 % CI";
//! the repository's DDPG example prints a ratio of sums over its test episodes. They differ
//! noticeably (all-zero action: 0.09 vs 0.056), so both are reported and the paper's is primary.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::env::{EnvConfig, EpisodeStats, VecEnv};
use crate::error::{Result, VtbError};
use crate::model::VirtualTb;

/// Normal quantile of a two-sided 95 % interval.
const Z95: f64 = 1.959_963_984_540_054;

/// Which eCTR aggregate to use where one number is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EctrEstimator {
    /// Mean over episodes of `clicks / (10 · pages)`: the paper's (primary).
    #[default]
    PerEpisodeMean,
    /// `Σ clicks / (10 · Σ pages)`: the repository's DDPG evaluation.
    RatioOfSums,
}

/// eCTR of a set of finished episodes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EctrReport {
    /// Mean of the per-episode CTRs (the paper's eCTR).
    pub per_episode_mean: f64,
    /// Half width of its normal 95 % interval, `1.96 · sd / √n` (NaN with fewer than 2 episodes).
    pub ci95_half_width: f64,
    /// `Σ clicks / (10 · Σ pages)` over the episodes.
    pub ratio_of_sums: f64,
    /// Half width of its 95 % interval by the delta method (NaN with fewer than 2 episodes).
    pub ratio_ci95_half_width: f64,
    /// Number of episodes.
    pub episodes: usize,
    /// Mean episode length in pages.
    pub mean_pages: f64,
    /// Mean clicks per episode (the mean return).
    pub mean_clicks: f64,
}

impl EctrReport {
    /// Aggregates finished episodes; `None` when there are none.
    pub fn from_episodes(eps: &[EpisodeStats]) -> Option<Self> {
        if eps.is_empty() {
            return None;
        }
        let n = eps.len() as f64;
        let ctrs: Vec<f64> = eps.iter().map(EpisodeStats::ctr).collect();
        let mean = ctrs.iter().sum::<f64>() / n;
        let clicks: f64 = eps.iter().map(|e| f64::from(e.clicks)).sum();
        let pages: f64 = eps.iter().map(|e| f64::from(e.pages)).sum();
        let ratio = clicks / (10.0 * pages);
        let (ci, ratio_ci) = if eps.len() < 2 {
            (f64::NAN, f64::NAN)
        } else {
            let var = ctrs.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / (n - 1.0);
            // Delta method for a ratio of means: residuals c_i - R·10·p_i.
            let res = eps
                .iter()
                .map(|e| (f64::from(e.clicks) - ratio * 10.0 * f64::from(e.pages)).powi(2))
                .sum::<f64>()
                / (n - 1.0);
            let mean_denominator = 10.0 * pages / n;
            (
                Z95 * (var / n).sqrt(),
                Z95 * (res / n).sqrt() / mean_denominator,
            )
        };
        Some(EctrReport {
            per_episode_mean: mean,
            ci95_half_width: ci,
            ratio_of_sums: ratio,
            ratio_ci95_half_width: ratio_ci,
            episodes: eps.len(),
            mean_pages: pages / n,
            mean_clicks: clicks / n,
        })
    }

    /// The value of one estimator.
    pub fn get(&self, estimator: EctrEstimator) -> f64 {
        match estimator {
            EctrEstimator::PerEpisodeMean => self.per_episode_mean,
            EctrEstimator::RatioOfSums => self.ratio_of_sums,
        }
    }
}

/// Runs `policy` for exactly `episodes` complete episodes and reports their eCTR.
///
/// `policy` maps the `num_envs × 91` observations to `num_envs × 27` actions (it is called once
/// per vector step with every slot's observation). To avoid the bias of keeping the first
/// episodes to finish (short ones), each slot is given a fixed quota of episodes up front
/// (`episodes / num_envs`, the remainder to the first slots) and exactly its first `quota` episodes
/// are counted; slots past their quota keep stepping but are ignored. `num_envs` is lowered to
/// `episodes` when larger.
pub fn evaluate_policy<F>(
    model: Arc<VirtualTb>,
    num_envs: usize,
    episodes: usize,
    seed: u64,
    cfg: EnvConfig,
    mut policy: F,
) -> Result<EctrReport>
where
    F: FnMut(&[f32]) -> Vec<f32>,
{
    if episodes == 0 || num_envs == 0 {
        return Err(VtbError::Config(format!(
            "evaluate_policy needs episodes > 0 and num_envs > 0 (got {episodes}, {num_envs})"
        )));
    }
    let n = num_envs.min(episodes);
    let mut quota: Vec<usize> = (0..n)
        .map(|i| episodes / n + usize::from(i < episodes % n))
        .collect();
    let mut env = VecEnv::new(model, n, cfg, seed)?;
    let mut done_eps = Vec::with_capacity(episodes);
    while done_eps.len() < episodes {
        let actions = policy(env.obs());
        let step = env.step(&actions)?;
        for (q, ep) in quota.iter_mut().zip(step.episodes) {
            if let (Some(ep), true) = (ep, *q > 0) {
                *q -= 1;
                done_eps.push(ep);
            }
        }
    }
    EctrReport::from_episodes(&done_eps)
        .ok_or_else(|| VtbError::Config("no episode finished".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_estimators_on_hand_computed_episodes() {
        let eps = [
            EpisodeStats {
                clicks: 9,
                pages: 1,
            },
            EpisodeStats {
                clicks: 0,
                pages: 9,
            },
        ];
        let r = EctrReport::from_episodes(&eps).unwrap();
        assert!((r.per_episode_mean - 0.45).abs() < 1e-12);
        assert!((r.ratio_of_sums - 9.0 / 100.0).abs() < 1e-12);
        assert_eq!(r.episodes, 2);
        assert!((r.mean_pages - 5.0).abs() < 1e-12 && (r.mean_clicks - 4.5).abs() < 1e-12);
        // sd of {0.9, 0} is 0.9/√2; half width 1.96 · sd / √2 = 1.96 · 0.45.
        assert!((r.ci95_half_width - Z95 * 0.45).abs() < 1e-9);
        assert_eq!(r.get(EctrEstimator::RatioOfSums), r.ratio_of_sums);
        assert!(EctrReport::from_episodes(&[]).is_none());
        let one = EctrReport::from_episodes(&eps[..1]).unwrap();
        assert!(one.ci95_half_width.is_nan() && one.per_episode_mean == 0.9);
    }

    #[test]
    fn fixed_quotas_do_not_favour_short_episodes() {
        use crate::testutil::synthetic_tensors;
        use candle_core::Device;
        // Synthetic users leave after 2 or 5 pages with probability 1/2 each: mean 3.5 pages. Keeping
        // the first episodes to finish would bias this towards 2.
        let model = Arc::new(
            VirtualTb::from_tensors(
                &synthetic_tensors(),
                std::path::Path::new("synthetic"),
                &Device::Cpu,
            )
            .unwrap(),
        );
        let r = evaluate_policy(model, 64, 4000, 9, EnvConfig::default(), |obs| {
            vec![0.0; obs.len() / crate::OBS_DIM * crate::ACT_DIM]
        })
        .unwrap();
        assert_eq!(r.episodes, 4000);
        // sd of the length is 1.5, so the s.e. is 1.5 / √4000 ≈ 0.024.
        assert!(
            (r.mean_pages - 3.5).abs() < 0.1,
            "mean pages {}",
            r.mean_pages
        );
        assert!((r.per_episode_mean - 0.3).abs() < 1e-12 && (r.ratio_of_sums - 0.3).abs() < 1e-12);
        assert!(r.ci95_half_width.abs() < 1e-12);
        let few = evaluate_policy(
            Arc::new(
                VirtualTb::from_tensors(
                    &synthetic_tensors(),
                    std::path::Path::new("synthetic"),
                    &Device::Cpu,
                )
                .unwrap(),
            ),
            64,
            3,
            1,
            EnvConfig::default(),
            |obs| vec![0.0; obs.len() / crate::OBS_DIM * crate::ACT_DIM],
        )
        .unwrap();
        assert_eq!(few.episodes, 3);
    }
}
