//! Scoring samples and the test metrics of a trained model (`specs/method.md` §5, §6.4 step 7).
//!
//! On the test users (the prepared dataset's held-out split):
//! - **all-steps** AUC, GAUC (impression weighting) and log loss over every (positive, negative)
//!   sample of steps `2..n` (1-based);
//! - **last-pair** AUC (the primary metric: DIN's and DIEN's protocol, each user's last step, one
//!   positive and one negative) with its log loss, and its GAUC, which over one pair per user is
//!   the share of users whose positive outscores the negative (DIN's code "GAUC", ties ½);
//! - **NCIS** over the users' complete positive trajectories (`p_t = σ(z_pos,t)` for every step with
//!   a non-empty history, `L_u` = that number of steps, log space), the same for the model at
//!   initialisation (same architecture and seed, zero steps), **ΔNCIS** and both ESS.
//!
//! Every number comes from one scoring pass over the test samples in their fixed order
//! (`mtrec_mdp::samples`), batched by `eval_batch_size`: the last pair and the NCIS trajectories
//! are read out of the all-steps scores, so models whose evaluation depends on the batch (Dice with
//! batch statistics, as in the DIEN reference) see the same batches for every metric and for both
//! the trained and the initial model.

use candle_core::Device;
use mtrec_data::PreparedDataset;
use mtrec_eval::{delta_ncis, Metrics, NcisConfig, UserTrajectory};
use mtrec_mdp::{samples, Batcher, Split, State};
use mtrec_nn::Model;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// Click logits of `states` (inference mode), in order, `batch_size` at a time.
pub fn score(
    model: &Model,
    batcher: &Batcher,
    states: &[State],
    batch_size: usize,
    device: &Device,
) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(states.len());
    for chunk in states.chunks(batch_size.max(1)) {
        let batch = batcher.batch(chunk, device)?;
        let logits = model.forward(&batch, false)?.logits;
        out.extend(
            logits
                .to_dtype(candle_core::DType::F32)?
                .to_device(&Device::Cpu)?
                .to_vec1::<f32>()?,
        );
    }
    Ok(out)
}

/// The test metrics of a run (see the module docs). The flat fields are the headline numbers;
/// `all_steps` and `last_pair` hold mtrec-eval's full summaries with their counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestMetrics {
    /// Last-pair AUC over the test users: the primary metric (DIN/DIEN protocol).
    pub auc: f64,
    /// AUC over every test sample (all steps).
    pub auc_all_steps: f64,
    /// GAUC over every test sample, impression-weighted (DIN paper's definition).
    pub gauc: f64,
    /// Log loss over every test sample.
    pub logloss: f64,
    /// Log loss over the last pairs.
    pub logloss_last_pair: f64,
    /// NCIS of the trained model over the test users' positive trajectories.
    pub ncis: f64,
    /// NCIS of the same architecture at initialisation (same seed, zero steps).
    pub ncis_init: f64,
    /// `ncis − ncis_init`: the paper's reported NCIS.
    pub delta_ncis: f64,
    /// Effective sample size of the trained model's NCIS weights.
    pub ess: f64,
    /// Effective sample size of the initial model's NCIS weights.
    pub ess_init: f64,
    /// Test users with at least one sample.
    pub users: usize,
    /// mtrec-eval's summary over all steps (includes the NCIS fields and settings).
    pub all_steps: Metrics,
    /// mtrec-eval's summary over the last pairs.
    pub last_pair: Metrics,
}

/// Scores the test samples with the trained and the initial model and computes [`TestMetrics`].
pub fn evaluate_test(
    model: &Model,
    init_model: &Model,
    ds: &PreparedDataset,
    batcher: &Batcher,
    batch_size: usize,
    device: &Device,
    ncis_cfg: &NcisConfig,
) -> Result<TestMetrics> {
    let states = samples(ds, Split::Test);
    if states.is_empty() {
        return Err(TrainError::Empty(
            "the dataset has no test sample (prepare it with --test-fraction > 0)".into(),
        ));
    }
    let logits = score(model, batcher, &states, batch_size, device)?;
    let init_logits = score(init_model, batcher, &states, batch_size, device)?;
    metrics_from_scores(ds, &states, &logits, &init_logits, ncis_cfg)
}

/// [`TestMetrics`] from the logits of the test samples (`states` in `samples(ds, Split::Test)`
/// order) by the trained and the initial model.
pub fn metrics_from_scores(
    ds: &PreparedDataset,
    states: &[State],
    logits: &[f32],
    init_logits: &[f32],
    ncis_cfg: &NcisConfig,
) -> Result<TestMetrics> {
    let users: Vec<u32> = states.iter().map(|s| s.user).collect();
    let labels: Vec<u8> = states.iter().map(|s| u8::from(s.positive)).collect();
    let mut all = Metrics::ctr(&users, logits, &labels)?;

    // Last pair of each user, and the trajectories, read out of the same scores.
    let mut last_idx = Vec::new();
    let mut trained: Vec<UserTrajectory> = Vec::new();
    let mut init: Vec<UserTrajectory> = Vec::new();
    let mut k = 0;
    while k < states.len() {
        let u = states[k].user;
        let n = ds.sequence(u as usize).len() as u32;
        let start = k;
        while k < states.len() && states[k].user == u {
            k += 1;
        }
        let span = start..k;
        let pos: Vec<usize> = span.clone().filter(|&i| states[i].positive).collect();
        let negs: Vec<usize> = span.clone().filter(|&i| !states[i].positive).collect();
        let mut t = UserTrajectory::new(pos.iter().map(|&i| logits[i]));
        let mut t0 = UserTrajectory::new(pos.iter().map(|&i| init_logits[i]));
        if ncis_cfg.with_negatives {
            t = t.with_negatives(negs.iter().map(|&i| logits[i]));
            t0 = t0.with_negatives(negs.iter().map(|&i| init_logits[i]));
        }
        trained.push(t);
        init.push(t0);
        last_idx.extend(span.filter(|&i| states[i].step + 1 == n));
    }
    let pick = |v: &[f32]| last_idx.iter().map(|&i| v[i]).collect::<Vec<f32>>();
    let last = Metrics::ctr(
        &last_idx.iter().map(|&i| users[i]).collect::<Vec<_>>(),
        &pick(logits),
        &last_idx.iter().map(|&i| labels[i]).collect::<Vec<_>>(),
    )?;
    let d = delta_ncis(&trained, &init, ncis_cfg)?;
    all.record_delta_ncis(&d, ncis_cfg);
    let get = |x: Option<f64>| x.unwrap_or(f64::NAN);
    Ok(TestMetrics {
        auc: get(last.auc),
        auc_all_steps: get(all.auc),
        gauc: get(all.gauc),
        logloss: get(all.logloss),
        logloss_last_pair: get(last.logloss),
        ncis: d.trained.value,
        ncis_init: d.init.value,
        delta_ncis: d.value,
        ess: d.trained.ess,
        ess_init: d.init.ess,
        users: trained.len(),
        all_steps: all,
        last_pair: last,
    })
}
