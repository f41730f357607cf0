//! Settings of a reward-model fit ([`RewardConfig`]) and its named profiles.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, RewardError};
use crate::losses::IqConfig;

/// Which objective the Q-network learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RewardKind {
    /// QR-IQL: `N` quantile heads per action, the paper-literal pinball objective (MTRec).
    QrIql,
    /// IQ-Learn's offline χ² objective with one Q value per action (the "IRL" baseline).
    IqLearn,
}

impl RewardKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            RewardKind::QrIql => "qr-iql",
            RewardKind::IqLearn => "iq-learn",
        }
    }
}

impl std::str::FromStr for RewardKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "qr-iql" | "mtrec" => Ok(RewardKind::QrIql),
            "iq-learn" | "irl" => Ok(RewardKind::IqLearn),
            other => Err(format!(
                "unknown reward kind '{other}' (expected qr-iql or iq-learn)"
            )),
        }
    }
}

/// Named settings. `paper` is MTRec's App. A.3 budget; the others are for small machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Batch 4,000, 50,000 Adam steps, lr 1e-4 (IQ-Learn's softq default; paper A.3).
    Paper,
    /// Batch 512, 1,200 steps (about two passes over Beauty's 318k transitions), lr 1e-3: the
    /// budget of the PyTorch reference run in `specs/method.md` §10, where lr 1e-4 barely learns.
    Quick,
    /// Batch 64, 40 steps: for tests and smoke runs.
    Smoke,
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "paper" => Ok(Profile::Paper),
            "quick" => Ok(Profile::Quick),
            "smoke" => Ok(Profile::Smoke),
            other => Err(format!(
                "unknown profile '{other}' (expected paper, quick or smoke)"
            )),
        }
    }
}

/// Everything that defines a reward fit, apart from the backbone and the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RewardConfig {
    /// QR-IQL (default) or IQ-Learn.
    pub kind: RewardKind,
    /// Quantile heads `N` of QR-IQL (paper: 10), `τ_i = (2i − 1) / 2N`. Ignored by IQ-Learn.
    pub quantiles: usize,
    /// Discount γ (method §3.3 A2: 0.99).
    pub gamma: f64,
    /// χ² regulariser α (paper: 0.5).
    pub alpha: f64,
    /// Keep `γ(1 − done)` inside the squared term (method §3.3 A1); false = the paper's literal
    /// Problem 6.
    pub u2_gamma: bool,
    /// Adam learning rate (betas 0.9, 0.999, no weight decay).
    pub lr: f64,
    /// Transitions per step.
    pub batch_size: usize,
    /// Adam steps.
    pub steps: u64,
    /// Seed of the initial weights and of the transition order.
    pub seed: u64,
    /// Add the backbone's auxiliary loss (DIEN's interest-extractor loss) to the Q objective, as a
    /// regulariser (the paper is silent; `specs/backbones.md` §4 suggests keeping it).
    pub aux_loss: bool,
    /// Write a checkpoint every this many steps (and at the end); 0 = only at the end.
    pub checkpoint_every: u64,
    /// Samples per forward pass when patching rewards and scoring.
    pub eval_batch_size: usize,
}

impl Default for RewardConfig {
    fn default() -> Self {
        RewardConfig::profile(Profile::Quick)
    }
}

impl RewardConfig {
    /// The settings of a profile (QR-IQL, N = 10, γ 0.99, α 0.5).
    pub fn profile(p: Profile) -> Self {
        let (batch_size, steps, lr) = match p {
            Profile::Paper => (4000, 50_000, 1e-4),
            Profile::Quick => (512, 1_200, 1e-3),
            Profile::Smoke => (64, 40, 1e-3),
        };
        RewardConfig {
            kind: RewardKind::QrIql,
            quantiles: 10,
            gamma: 0.99,
            alpha: 0.5,
            u2_gamma: true,
            lr,
            batch_size,
            steps,
            seed: 1234,
            aux_loss: true,
            checkpoint_every: 500,
            eval_batch_size: 2048,
        }
    }

    /// Reads a YAML file; unknown keys are errors naming the key.
    pub fn from_yaml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| RewardError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        serde_norway::from_str(&text).map_err(|e| RewardError::Yaml {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// The loss settings.
    pub fn iq(&self) -> IqConfig {
        IqConfig {
            gamma: self.gamma,
            alpha: self.alpha,
            u2_gamma: self.u2_gamma,
        }
    }

    /// The head the Q-network needs.
    pub fn head(&self) -> mtrec_nn::HeadKind {
        match self.kind {
            RewardKind::QrIql => mtrec_nn::HeadKind::Quantile(self.quantiles),
            RewardKind::IqLearn => mtrec_nn::HeadKind::Q,
        }
    }

    /// Checks every setting's domain.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(RewardError::Config(m));
        if self.kind == RewardKind::QrIql && self.quantiles == 0 {
            return bad("quantiles must be at least 1".into());
        }
        if !(self.gamma >= 0.0 && self.gamma <= 1.0) {
            return bad(format!("gamma must lie in [0, 1], got {}", self.gamma));
        }
        if !(self.alpha > 0.0 && self.alpha.is_finite()) {
            return bad(format!("alpha must be positive, got {}", self.alpha));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("lr must be positive, got {}", self.lr));
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return bad("batch_size and eval_batch_size must be at least 1".into());
        }
        if self.steps == 0 {
            return bad("steps must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_rejects_unknown_keys_and_fills_defaults() {
        let c: RewardConfig = serde_norway::from_str("kind: iq-learn\nsteps: 7\n").unwrap();
        assert_eq!(c.kind, RewardKind::IqLearn);
        assert_eq!(c.steps, 7);
        assert_eq!(c.quantiles, 10);
        let e = serde_norway::from_str::<RewardConfig>("stepz: 7\n").unwrap_err();
        assert!(e.to_string().contains("stepz"), "{e}");
        assert!(RewardConfig {
            alpha: 0.0,
            ..RewardConfig::default()
        }
        .validate()
        .is_err());
        let p = RewardConfig::profile(Profile::Paper);
        assert_eq!((p.batch_size, p.steps, p.lr), (4000, 50_000, 1e-4));
    }
}
