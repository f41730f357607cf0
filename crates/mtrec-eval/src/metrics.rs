//! The [`Metrics`] summary written to a run's `metrics.json`.

use serde::{Deserialize, Serialize};

use crate::auc::{auc, gauc_weighted, Gauc, GaucWeighting};
use crate::error::Result;
use crate::input::{labels_to_bool, Label};
use crate::logloss::logloss_from_logits;
use crate::ncis::{DeltaNcis, NcisConfig};

/// How many samples, users and trajectories the metrics rest on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counts {
    /// Evaluated samples (AUC, log loss).
    pub samples: usize,
    /// Positive samples among them.
    pub positives: usize,
    /// Negative samples among them.
    pub negatives: usize,
    /// Users whose AUC enters GAUC (both classes present).
    pub gauc_users: usize,
    /// Users left out of GAUC (a single class).
    pub gauc_users_skipped: usize,
    /// NCIS users (trajectories).
    pub ncis_users: usize,
}

/// A serialisable summary of a run's metrics. A metric that was not computed is `None` and is left
/// out of the JSON.
///
/// ```
/// # use mtrec_eval::Metrics;
/// let m = Metrics::ctr(&[1, 1, 2, 2], &[2.0, -1.0, 0.5, 0.5], &[1, 0, 1, 0]).unwrap();
/// assert_eq!(m.auc, Some(0.875));
/// assert_eq!(m.counts.gauc_users, 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Metrics {
    /// Global AUC, midrank ties.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auc: Option<f64>,
    /// GAUC with the weighting in `gauc_weighting`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gauc: Option<f64>,
    /// GAUC's weighting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gauc_weighting: Option<GaucWeighting>,
    /// Mean binary cross-entropy (natural log).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logloss: Option<f64>,
    /// NCIS of the trained model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ncis: Option<f64>,
    /// NCIS of the model at initialisation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ncis_init: Option<f64>,
    /// `ncis − ncis_init`, the paper's reported NCIS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta_ncis: Option<f64>,
    /// Effective sample size of the trained model's NCIS weights.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ess: Option<f64>,
    /// Effective sample size of the initial model's NCIS weights.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ess_init: Option<f64>,
    /// NCIS settings used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ncis_config: Option<NcisConfig>,
    /// Sample and user counts.
    pub counts: Counts,
}

impl Metrics {
    /// AUC, GAUC (impression weighting) and log loss of CTR logits, with their counts.
    ///
    /// `groups[k]` is the user of sample `k`. AUC is taken on the logits (same as on σ(logit),
    /// without saturation ties); log loss by [`logloss_from_logits`].
    ///
    /// # Errors
    /// Those of [`auc`], [`gauc_weighted`] and [`logloss_from_logits`].
    pub fn ctr<G: Ord, S: Copy + Into<f64>, L: Label>(
        groups: &[G],
        logits: &[S],
        labels: &[L],
    ) -> Result<Self> {
        let auc = auc(logits, labels)?;
        let g = gauc_weighted(groups, logits, labels, GaucWeighting::Samples)?;
        let logloss = logloss_from_logits(logits, labels)?;
        let positives = labels_to_bool("labels", labels)?
            .iter()
            .filter(|&&y| y)
            .count();
        let mut m = Metrics {
            auc: Some(auc),
            logloss: Some(logloss),
            counts: Counts {
                samples: labels.len(),
                positives,
                negatives: labels.len() - positives,
                ..Counts::default()
            },
            ..Metrics::default()
        };
        m.record_gauc(&g);
        Ok(m)
    }

    /// Stores a GAUC result and its user counts.
    pub fn record_gauc(&mut self, g: &Gauc) {
        self.gauc = Some(g.value);
        self.gauc_weighting = Some(g.weighting);
        self.counts.gauc_users = g.groups_counted;
        self.counts.gauc_users_skipped = g.groups_skipped;
    }

    /// Stores a ΔNCIS result (both NCIS values, both ESS) and the settings it used.
    pub fn record_delta_ncis(&mut self, d: &DeltaNcis, config: &NcisConfig) {
        self.ncis = Some(d.trained.value);
        self.ncis_init = Some(d.init.value);
        self.delta_ncis = Some(d.value);
        self.ess = Some(d.trained.ess);
        self.ess_init = Some(d.init.ess);
        self.ncis_config = Some(*config);
        self.counts.ncis_users = d.trained.users;
    }
}
