//! [`TrainConfig`]: the recommender's training settings, loadable from YAML.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// Training settings of a recommendation model `F`. The defaults are the DIEN reference's
/// (`script/train.py`, `specs/backbones.md` §1 and §5): Adam lr 1e-3, batch 128, 3 epochs, the
/// learning rate halved after each epoch, no weight decay, no dropout.
///
/// Unknown keys are rejected, so a typo in a YAML file is an error rather than a silent default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Seed of the initial weights, the per-epoch shuffles and the validation users. The same seed
    /// on CPU gives bit-identical metrics.
    pub seed: u64,
    /// Passes over the training samples.
    pub epochs: usize,
    /// Samples per optimiser step.
    pub batch_size: usize,
    /// Adam's learning rate in the first epoch.
    pub lr: f64,
    /// Factor applied to the learning rate after each epoch (epoch `e` uses `lr · lr_decay^e`).
    pub lr_decay: f64,
    /// Adam's β₁.
    pub beta1: f64,
    /// Adam's β₂.
    pub beta2: f64,
    /// Adam's ε (added to `sqrt(v̂)`, PyTorch's convention).
    pub eps: f64,
    /// Weight κ of the alignment loss, `L = L_CE + κ·L_Align + aux` (0 = plain training; the paper's
    /// only stated value is 0.2). κ > 0 needs a rewards file.
    pub kappa: f64,
    /// Samples per forward pass when scoring validation and test samples.
    pub eval_batch_size: usize,
    /// Share of the TRAINING users held out (seeded) to measure validation AUC after each epoch;
    /// they are not trained on. 0 disables validation.
    pub validation_fraction: f64,
    /// Early stopping: stop after this many epochs without a better validation AUC, and keep the
    /// weights of the best epoch. `None` (the default) trains every epoch, as the reference does.
    pub patience: Option<usize>,
    /// Stop after this many optimiser steps in all (quick runs, tests); a checkpoint is written
    /// there, so `--resume` without the limit continues the run exactly.
    pub max_steps: Option<u64>,
    /// Also write a checkpoint every this many optimiser steps (besides each epoch's end).
    pub checkpoint_every: Option<u64>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            seed: 1,
            epochs: 3,
            batch_size: 128,
            lr: 1e-3,
            lr_decay: 0.5,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            kappa: 0.0,
            eval_batch_size: 1024,
            validation_fraction: 0.05,
            patience: None,
            max_steps: None,
            checkpoint_every: None,
        }
    }
}

impl TrainConfig {
    /// Reads a YAML file; unknown keys and bad values are errors naming the file.
    pub fn from_yaml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        let cfg: TrainConfig = serde_norway::from_str(&text).map_err(|e| TrainError::Yaml {
            path: path.to_path_buf(),
            message: format!("invalid training settings: {e}"),
        })?;
        cfg.validate().map_err(|e| TrainError::Yaml {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(cfg)
    }

    /// The learning rate of epoch `epoch` (0-based).
    pub fn lr_at(&self, epoch: usize) -> f64 {
        self.lr * self.lr_decay.powi(epoch as i32)
    }

    /// Checks every setting's domain.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.epochs == 0 {
            return bad("epochs must be at least 1".into());
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return bad("batch_size and eval_batch_size must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("lr must be a positive number, got {}", self.lr));
        }
        if !(self.lr_decay.is_finite() && self.lr_decay > 0.0) {
            return bad(format!(
                "lr_decay must be a positive number, got {}",
                self.lr_decay
            ));
        }
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return bad(format!("{name} must be in [0, 1), got {b}"));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return bad(format!("eps must be a positive number, got {}", self.eps));
        }
        if !self.kappa.is_finite() || self.kappa < 0.0 {
            return bad(format!(
                "kappa must be a finite number >= 0, got {}",
                self.kappa
            ));
        }
        if !(0.0..1.0).contains(&self.validation_fraction) {
            return bad(format!(
                "validation_fraction must be in [0, 1), got {}",
                self.validation_fraction
            ));
        }
        if self.patience == Some(0) {
            return bad("patience must be at least 1 (or absent for no early stopping)".into());
        }
        if self.patience.is_some() && self.validation_fraction == 0.0 {
            return bad("patience needs validation users (validation_fraction > 0)".into());
        }
        if self.max_steps == Some(0) || self.checkpoint_every == Some(0) {
            return bad("max_steps and checkpoint_every must be at least 1 when given".into());
        }
        Ok(())
    }

    /// The settings that define a run's result: everything but the step limit and the checkpoint
    /// interval, which may change when a run is resumed.
    pub fn identity(&self) -> TrainConfig {
        TrainConfig {
            max_steps: None,
            checkpoint_every: None,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_reference_recipe_and_yaml_round_trips() {
        let c = TrainConfig::default();
        assert_eq!(
            (c.epochs, c.batch_size, c.lr, c.lr_decay),
            (3, 128, 1e-3, 0.5)
        );
        assert!((c.lr_at(2) - 2.5e-4).abs() < 1e-18);
        c.validate().unwrap();
        let text = serde_norway::to_string(&c).unwrap();
        let back: TrainConfig = serde_norway::from_str(&text).unwrap();
        assert_eq!(back, c);
        let partial: TrainConfig = serde_norway::from_str("kappa: 0.2\nseed: 7\n").unwrap();
        assert_eq!((partial.kappa, partial.seed, partial.epochs), (0.2, 7, 3));
    }

    /// `experiments/train.yaml` documents the defaults and writes every key.
    #[test]
    fn the_experiment_file_holds_the_defaults() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/train.yaml");
        assert_eq!(
            TrainConfig::from_yaml_file(&p).unwrap(),
            TrainConfig::default()
        );
        let raw: serde_norway::Value =
            serde_norway::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        let defaults = serde_norway::to_value(TrainConfig::default()).unwrap();
        let keys = |v: &serde_norway::Value| v.as_mapping().unwrap().len();
        assert_eq!(keys(&raw), keys(&defaults));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train.yaml");
        std::fs::write(&p, "epochs: 2\nlearning_rate: 0.1\n").unwrap();
        let e = TrainConfig::from_yaml_file(&p).unwrap_err().to_string();
        assert!(
            e.contains("train.yaml") && e.contains("learning_rate"),
            "{e}"
        );
        std::fs::write(&p, "validation_fraction: 1.5\n").unwrap();
        let e = TrainConfig::from_yaml_file(&p).unwrap_err().to_string();
        assert!(e.contains("validation_fraction"), "{e}");
        for bad in [
            TrainConfig {
                kappa: -1.0,
                ..Default::default()
            },
            TrainConfig {
                patience: Some(0),
                ..Default::default()
            },
            TrainConfig {
                patience: Some(1),
                validation_fraction: 0.0,
                ..Default::default()
            },
            TrainConfig {
                batch_size: 0,
                ..Default::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
