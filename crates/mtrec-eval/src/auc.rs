//! ROC AUC with midrank ties and DIN's group AUC (`specs/method.md` §5.1–5.2).

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::input::{finite_or_inf, labels_to_bool, same_len, Label};

/// Mann–Whitney counts of a set of (score, label) pairs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    /// Twice the U statistic: 2 per (pos, neg) pair with pos > neg, 1 per tied pair. Exact.
    twice_u: u128,
    positives: usize,
    negatives: usize,
}

impl Counts {
    fn auc(&self) -> f64 {
        self.twice_u as f64 / (2.0 * self.positives as f64 * self.negatives as f64)
    }
}

/// Total order on non-NaN scores in which `-0.0 == 0.0` (unlike `f64::total_cmp`).
fn cmp_score(a: f64, b: f64) -> Ordering {
    a.partial_cmp(&b).unwrap_or(Ordering::Equal)
}

/// Counts over pairs already sorted by ascending score: one pass over the runs of equal scores.
/// A run with `p` positives and `m` negatives, after `below` negatives with a lower score, adds
/// `2·p·below + p·m` to `2U` (each tied pos/neg pair counts 1/2).
fn counts_sorted(pairs: impl IntoIterator<Item = (f64, bool)>) -> Counts {
    let mut c = Counts::default();
    let mut run_score = f64::NAN;
    let (mut run_pos, mut run_neg) = (0u128, 0u128);
    let mut below = 0u128;
    fn close_run(c: &mut Counts, p: u128, m: u128, below: &mut u128) {
        c.twice_u += 2 * p * *below + p * m;
        *below += m;
    }
    for (score, label) in pairs {
        if score != run_score {
            close_run(&mut c, run_pos, run_neg, &mut below);
            run_score = score;
            run_pos = 0;
            run_neg = 0;
        }
        if label {
            run_pos += 1;
            c.positives += 1;
        } else {
            run_neg += 1;
            c.negatives += 1;
        }
    }
    close_run(&mut c, run_pos, run_neg, &mut below);
    c
}

/// Validates and converts scores and labels.
fn prepare<S: Copy + Into<f64>, L: Label>(
    what: &'static str,
    scores: &[S],
    labels: &[L],
) -> Result<(Vec<f64>, Vec<bool>)> {
    same_len(what, scores.len(), labels.len())?;
    if scores.is_empty() {
        return Err(EvalError::Empty { what });
    }
    Ok((finite_or_inf(what, scores)?, labels_to_bool(what, labels)?))
}

/// ROC AUC over all (score, label) pairs, ties counted 1/2 (midranks), in O(n log n).
///
/// `AUC = [Σ_{k∈pos} rank_k − P(P+1)/2] / (P·M)` with 1-based ascending midranks; equivalently the
/// probability that a random positive scores above a random negative, ties counting 1/2
/// (Mann–Whitney U / (P·M)). The count `2U` is accumulated exactly in integers, so the only
/// rounding is the final division.
///
/// Scores may be probabilities or logits (same AUC: σ is monotone; logits avoid saturation ties),
/// `f32` or `f64`; `±inf` is allowed. Labels: see [`Label`].
///
/// # Errors
/// [`EvalError::LengthMismatch`], [`EvalError::Empty`], [`EvalError::NaN`] (a NaN score),
/// [`EvalError::InvalidLabel`], and [`EvalError::SingleClass`] when there is no positive or no
/// negative (the spec's "AUC = NaN, skip").
///
/// ```
/// # use mtrec_eval::auc;
/// // pos = [0.9, 0.4], neg = [0.4, 0.1]: (1 + 1 + 0.5 + 1) / 4
/// let a = auc(&[0.9, 0.4, 0.4, 0.1], &[1, 1, 0, 0]).unwrap();
/// assert_eq!(a, 0.875);
/// ```
pub fn auc<S: Copy + Into<f64>, L: Label>(scores: &[S], labels: &[L]) -> Result<f64> {
    const WHAT: &str = "AUC";
    let (scores, labels) = prepare(WHAT, scores, labels)?;
    let mut pairs: Vec<(f64, bool)> = scores.into_iter().zip(labels).collect();
    pairs.sort_unstable_by(|a, b| cmp_score(a.0, b.0));
    let c = counts_sorted(pairs);
    if c.positives == 0 || c.negatives == 0 {
        return Err(EvalError::SingleClass {
            what: WHAT,
            positives: c.positives,
            negatives: c.negatives,
        });
    }
    Ok(c.auc())
}

/// AUC from separate positive and negative scores (the form of the spec's hand cases).
///
/// # Errors
/// As [`auc`]; an empty side gives [`EvalError::SingleClass`].
///
/// ```
/// # use mtrec_eval::auc_pos_neg;
/// assert_eq!(auc_pos_neg(&[0.5], &[0.5]).unwrap(), 0.5);
/// ```
pub fn auc_pos_neg<S: Copy + Into<f64>>(positives: &[S], negatives: &[S]) -> Result<f64> {
    const WHAT: &str = "AUC";
    let pos = finite_or_inf("AUC: positive scores", positives)?;
    let neg = finite_or_inf("AUC: negative scores", negatives)?;
    if pos.is_empty() || neg.is_empty() {
        return Err(EvalError::SingleClass {
            what: WHAT,
            positives: pos.len(),
            negatives: neg.len(),
        });
    }
    let mut pairs: Vec<(f64, bool)> = pos
        .into_iter()
        .map(|s| (s, true))
        .chain(neg.into_iter().map(|s| (s, false)))
        .collect();
    pairs.sort_unstable_by(|a, b| cmp_score(a.0, b.0));
    Ok(counts_sorted(pairs).auc())
}

/// How GAUC weights each group's AUC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GaucWeighting {
    /// `w_u` = the number of the user's evaluated samples, i.e. her impressions: the DIN paper's
    /// definition (`GAUC = Σ_u #impression_u · AUC_u / Σ_u #impression_u`). The default.
    #[default]
    Samples,
    /// `w_u` = the number of the user's positive samples (clicks), DIN's other option.
    Positives,
    /// Every eligible user counts the same (`w_u = 1`).
    Uniform,
}

/// Result of [`gauc`]: the value and how many groups and samples it rests on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Gauc {
    /// `Σ_u w_u AUC_u / Σ_u w_u` over the groups with both classes.
    pub value: f64,
    /// The weighting used.
    pub weighting: GaucWeighting,
    /// Groups with both a positive and a negative: the ones that count.
    pub groups_counted: usize,
    /// Groups with a single class, skipped.
    pub groups_skipped: usize,
    /// Samples in the counted groups.
    pub samples_counted: usize,
    /// Samples in the skipped groups.
    pub samples_skipped: usize,
}

/// DIN's group AUC with the default weighting, [`GaucWeighting::Samples`] (impressions).
///
/// `groups[k]` is the user (or any group key: `u32`, `String`, ...) of sample `k`.
/// See [`gauc_weighted`].
///
/// ```
/// # use mtrec_eval::gauc;
/// // user 1: AUC 1 over 3 samples; user 2: AUC 0.5 over 2; user 3: one class, skipped.
/// let g = gauc(&[1, 1, 1, 2, 2, 3], &[0.9, 0.1, 0.2, 0.5, 0.5, 0.7], &[1, 0, 0, 1, 0, 1]).unwrap();
/// assert!((g.value - (3.0 * 1.0 + 2.0 * 0.5) / 5.0).abs() < 1e-15);
/// assert_eq!((g.groups_counted, g.groups_skipped), (2, 1));
/// ```
///
/// # Errors
/// As [`gauc_weighted`].
pub fn gauc<G: Ord, S: Copy + Into<f64>, L: Label>(
    groups: &[G],
    scores: &[S],
    labels: &[L],
) -> Result<Gauc> {
    gauc_weighted(groups, scores, labels, GaucWeighting::Samples)
}

/// Group AUC: `GAUC = Σ_u w_u AUC_u / Σ_u w_u` over the groups `u` that have both a positive and
/// a negative (the others are skipped and counted in the result); `AUC_u` as in [`auc`], midranks.
///
/// DIN's code computes its "GAUC" differently (`mean(logit_pos > logit_neg)` per user over one
/// positive/negative pair, ties counting 0); with one pair per user ours is the same except that
/// a tie counts 1/2 (`specs/method.md` §5.2). Groups are visited in sorted key order, so the
/// result does not depend on the order of the samples. O(n log n).
///
/// # Errors
/// [`EvalError::LengthMismatch`], [`EvalError::Empty`], [`EvalError::NaN`],
/// [`EvalError::InvalidLabel`]; [`EvalError::NoEligibleGroup`] when no group has both classes.
pub fn gauc_weighted<G: Ord, S: Copy + Into<f64>, L: Label>(
    groups: &[G],
    scores: &[S],
    labels: &[L],
    weighting: GaucWeighting,
) -> Result<Gauc> {
    const WHAT: &str = "GAUC";
    same_len("GAUC: groups and scores", groups.len(), scores.len())?;
    let (scores, labels) = prepare(WHAT, scores, labels)?;
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_unstable_by(|&a, &b| {
        groups[a]
            .cmp(&groups[b])
            .then_with(|| cmp_score(scores[a], scores[b]))
    });

    let mut out = Gauc {
        value: f64::NAN,
        weighting,
        groups_counted: 0,
        groups_skipped: 0,
        samples_counted: 0,
        samples_skipped: 0,
    };
    let (mut num, mut den) = (0.0f64, 0.0f64);
    let mut start = 0;
    while start < order.len() {
        let key = &groups[order[start]];
        let end = start + order[start..].partition_point(|&k| groups[k] == *key);
        let c = counts_sorted(order[start..end].iter().map(|&k| (scores[k], labels[k])));
        let n = end - start;
        if c.positives == 0 || c.negatives == 0 {
            out.groups_skipped += 1;
            out.samples_skipped += n;
        } else {
            let w = match weighting {
                GaucWeighting::Samples => n as f64,
                GaucWeighting::Positives => c.positives as f64,
                GaucWeighting::Uniform => 1.0,
            };
            num += w * c.auc();
            den += w;
            out.groups_counted += 1;
            out.samples_counted += n;
        }
        start = end;
    }
    if out.groups_counted == 0 {
        return Err(EvalError::NoEligibleGroup {
            groups: out.groups_skipped,
        });
    }
    out.value = num / den;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// O(P·M) definition: the fraction of (pos, neg) pairs ordered right, ties 1/2.
    fn auc_pairs(scores: &[f64], labels: &[bool]) -> f64 {
        let (mut num, mut den) = (0.0, 0.0);
        for (i, &si) in scores.iter().enumerate() {
            for (j, &sj) in scores.iter().enumerate() {
                if labels[i] && !labels[j] {
                    den += 1.0;
                    num += if si > sj {
                        1.0
                    } else if si == sj {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
        }
        num / den
    }

    #[test]
    fn matches_pairwise_definition_with_ties() {
        // A small deterministic pseudo-random case with many ties.
        let mut x = 12345u64;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as usize
        };
        for _ in 0..20 {
            let n = 2 + next() % 60;
            let scores: Vec<f64> = (0..n).map(|_| (next() % 7) as f64 / 7.0).collect();
            let mut labels: Vec<bool> = (0..n).map(|_| next() % 3 == 0).collect();
            labels[0] = true;
            labels[1] = false;
            let fast = auc(&scores, &labels).unwrap();
            assert!((fast - auc_pairs(&scores, &labels)).abs() < 1e-15);
        }
    }

    #[test]
    fn negative_zero_ties_with_zero() {
        assert_eq!(auc(&[0.0, -0.0], &[1, 0]).unwrap(), 0.5);
        assert_eq!(auc(&[-0.0, 0.0], &[1, 0]).unwrap(), 0.5);
    }
}
