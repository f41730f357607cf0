//! Aligned ranking: does the recommender put first the items that would have made her glad?

use std::collections::HashSet;

use candle_core::{DType, Device, D};
use mtrec_data::PreparedDataset;
use mtrec_mdp::{Batcher, State};
use mtrec_nn::{HeadKind, Model};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TruthError};
use crate::truth::GroundTruth;

/// Steps scored per call of the scorer.
const SETS_PER_CALL: usize = 4096;

/// Settings of [`ranking_metrics`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankingConfig {
    /// Candidates per step: the logged positive, the logged negative and `candidates − 2` items she
    /// never engaged (fewer when she engaged nearly everything).
    pub candidates: usize,
    /// The top-k that is recommended.
    pub k: usize,
    /// Seed of the candidate draws (the same candidates for every model).
    pub seed: u64,
    /// Only the last this many steps of each test user (None: all her steps `t ≥ 1`).
    pub max_steps_per_user: Option<usize>,
}

impl Default for RankingConfig {
    fn default() -> Self {
        RankingConfig {
            candidates: 20,
            k: 5,
            seed: 1234,
            max_steps_per_user: None,
        }
    }
}

/// Aligned-ranking metrics over the test users' steps (means over steps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankingMetrics {
    /// Steps ranked.
    pub steps: usize,
    /// Test users with at least one ranked step.
    pub users: usize,
    /// Candidates asked for per step, and the mean actually ranked.
    pub candidates: usize,
    pub mean_candidates: f64,
    pub k: usize,
    pub seed: u64,
    pub max_steps_per_user: Option<usize>,
    /// What was used as the score: `ctr-logit`, or `q-logit` (`Q(s,P) − Q(s,N)`, head mean).
    pub score: String,
    /// Mean expected reward of the top-k (the headline number).
    pub mean_reward_at_k: f64,
    /// Mean expected reward of the top-ranked item.
    pub mean_reward_at_1: f64,
    /// NDCG@k with gains shifted to `gain − min over the step's candidates`.
    pub ndcg_at_k: f64,
    /// The best possible top-k and top-1: candidates ordered by their true expected reward.
    pub oracle_mean_reward_at_k: f64,
    pub oracle_mean_reward_at_1: f64,
    /// A random ranking: the mean expected reward over all candidates.
    pub random_mean_reward: f64,
    /// `(reward@k − random) / (oracle@k − random)`: the share of the achievable gain that the
    /// ranking captures (0 = random, 1 = oracle; negative = worse than random).
    pub gain_captured_at_k: f64,
    /// Mean expected reward of the item she actually engaged (the logged positive).
    pub logged_positive_reward: f64,
    /// Share of steps where the logged positive is in the top-k (a behavioural hit rate).
    pub positive_hit_at_k: f64,
}

/// One step's ranking.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepRanking {
    pub reward_at_k: f64,
    pub reward_at_1: f64,
    pub ndcg_at_k: f64,
    pub oracle_at_k: f64,
    pub oracle_at_1: f64,
    pub random: f64,
}

/// Ranks one step's candidates by `scores` (descending; ties keep candidate order) and measures
/// the `gains` of the top `k` (`k` is capped to the number of candidates). NDCG uses the gains
/// shifted by their minimum, `g − min g ≥ 0`: expected rewards can be negative, and NDCG needs
/// non-negative gains to lie in [0, 1]; the shift makes the worst candidate worth 0 and keeps
/// every difference. When all gains are equal every ranking is ideal and NDCG is 1.
pub fn rank_step(scores: &[f64], gains: &[f64], k: usize) -> StepRanking {
    let n = gains.len().min(scores.len());
    let k = k.min(n).max(1);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a])); // stable: ties keep candidate order
    let mut ideal: Vec<f64> = gains[..n].to_vec();
    ideal.sort_by(|a, b| b.total_cmp(a));
    let min = ideal.last().copied().unwrap_or(0.0);
    let discount = |r: usize| 1.0 / ((r + 2) as f64).log2();
    let dcg: f64 = (0..k).map(|r| (gains[order[r]] - min) * discount(r)).sum();
    let idcg: f64 = (0..k).map(|r| (ideal[r] - min) * discount(r)).sum();
    StepRanking {
        reward_at_k: order[..k].iter().map(|&i| gains[i]).sum::<f64>() / k as f64,
        reward_at_1: gains[order[0]],
        ndcg_at_k: if idcg > 0.0 { dcg / idcg } else { 1.0 },
        oracle_at_k: ideal[..k].iter().sum::<f64>() / k as f64,
        oracle_at_1: ideal[0],
        random: gains[..n].iter().sum::<f64>() / n as f64,
    }
}

/// A ranked step: the state (user, step) and its candidates; candidate 0 is the logged positive,
/// candidate 1 the logged negative.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateSet {
    pub state: State,
    pub items: Vec<u32>,
}

/// The candidate sets of the test users' steps `t ≥ 1` (the last `max_steps_per_user` of them).
/// Each user has her own ChaCha8 stream (`seed`, stream = user id) that draws, step after step
/// from `t = 1`, `candidates − 2` distinct items uniformly among those she never engaged (nor the
/// step's negative); every step is drawn even when not kept, so a step's candidates do not depend
/// on `max_steps_per_user`, and they are the same for every model.
pub fn candidate_sets(ds: &PreparedDataset, cfg: &RankingConfig) -> Vec<CandidateSet> {
    let n_items = ds.n_items() as u32;
    let extra = cfg.candidates.saturating_sub(2);
    let mut out = Vec::new();
    for u in 1..=ds.n_users() {
        let seq = ds.sequence(u);
        if !ds.is_test(u) || seq.len() < 2 {
            continue;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        rng.set_stream(u as u64);
        let seen: HashSet<u32> = seq.iter().copied().collect();
        let first_kept = match cfg.max_steps_per_user {
            Some(m) => seq.len().saturating_sub(m).max(1),
            None => 1,
        };
        for (t, (&pos, &neg)) in seq.iter().zip(ds.negatives(u)).enumerate().skip(1) {
            let mut items = vec![pos, neg];
            let pool = n_items as usize - seen.len() - usize::from(!seen.contains(&neg));
            if pool <= extra {
                // She engaged nearly everything: take every other item, in id order.
                items.extend((1..=n_items).filter(|i| !seen.contains(i) && *i != neg));
            } else {
                let mut drawn = HashSet::with_capacity(extra);
                while items.len() < extra + 2 {
                    let i = rng.random_range(1..=n_items);
                    if !seen.contains(&i) && i != neg && drawn.insert(i) {
                        items.push(i);
                    }
                }
            }
            if t >= first_kept {
                out.push(CandidateSet {
                    state: State {
                        user: u as u32,
                        step: t as u32,
                        positive: true,
                    },
                    items,
                });
            }
        }
    }
    out
}

/// Aligned ranking with any scorer: `score` receives `(state, item)` rows and returns one score
/// per row (higher = recommended first). The gain of a candidate is
/// [`GroundTruth::expected_reward`] at the step. `score_name` is recorded in the metrics.
pub fn ranking_metrics_with(
    truth: &GroundTruth,
    ds: &PreparedDataset,
    cfg: &RankingConfig,
    score_name: &str,
    mut score: impl FnMut(&[(State, u32)]) -> Result<Vec<f64>>,
) -> Result<RankingMetrics> {
    if cfg.candidates < 2 || cfg.k == 0 {
        return Err(TruthError::Invalid(format!(
            "ranking needs at least 2 candidates and k >= 1 (got {} and {})",
            cfg.candidates, cfg.k
        )));
    }
    truth.check_dataset(ds)?;
    let sets = candidate_sets(ds, cfg);
    if sets.is_empty() {
        return Err(TruthError::Invalid(
            "no test user has a step to rank (is the test split empty?)".into(),
        ));
    }
    let mut acc = [0.0f64; 9];
    let mut users = HashSet::new();
    // Scored a block of steps at a time, so memory stays bounded on the largest worlds.
    for block in sets.chunks(SETS_PER_CALL) {
        let rows: Vec<(State, u32)> = block
            .iter()
            .flat_map(|c| c.items.iter().map(move |&i| (c.state, i)))
            .collect();
        let scores = score(&rows)?;
        if scores.len() != rows.len() {
            return Err(TruthError::Invalid(format!(
                "the scorer returned {} scores for {} candidates",
                scores.len(),
                rows.len()
            )));
        }
        if let Some(k) = scores.iter().position(|s| !s.is_finite()) {
            return Err(TruthError::Invalid(format!(
                "the model scored user {} step {} item {} as {} (a diverged model?)",
                rows[k].0.user, rows[k].0.step, rows[k].1, scores[k]
            )));
        }
        let mut at = 0;
        for c in block {
            let n = c.items.len();
            let s = &scores[at..at + n];
            at += n;
            let gains: Vec<f64> = c
                .items
                .iter()
                .map(|&i| truth.expected_reward(c.state.user, c.state.step, i))
                .collect();
            let r = rank_step(s, &gains, cfg.k);
            // Rank of the logged positive (candidate 0): candidates ahead of it, ties by order.
            let ahead = s.iter().filter(|&&x| x > s[0]).count();
            let hit = ahead < cfg.k.min(n);
            for (a, v) in acc.iter_mut().zip([
                r.reward_at_k,
                r.reward_at_1,
                r.ndcg_at_k,
                r.oracle_at_k,
                r.oracle_at_1,
                r.random,
                gains[0],
                f64::from(u8::from(hit)),
                n as f64,
            ]) {
                *a += v;
            }
            users.insert(c.state.user);
        }
    }
    let m = sets.len() as f64;
    let [at_k, at_1, ndcg, oracle_k, oracle_1, random, logged, hit, cands] = acc.map(|a| a / m);
    Ok(RankingMetrics {
        steps: sets.len(),
        users: users.len(),
        candidates: cfg.candidates,
        mean_candidates: cands,
        k: cfg.k,
        seed: cfg.seed,
        max_steps_per_user: cfg.max_steps_per_user,
        score: score_name.to_owned(),
        mean_reward_at_k: at_k,
        mean_reward_at_1: at_1,
        ndcg_at_k: ndcg,
        oracle_mean_reward_at_k: oracle_k,
        oracle_mean_reward_at_1: oracle_1,
        random_mean_reward: random,
        gain_captured_at_k: (at_k - random) / (oracle_k - random),
        logged_positive_reward: logged,
        positive_hit_at_k: hit,
    })
}

/// What a model's head scores: a CTR head its click logit; a Q or quantile head (a reward model's
/// Q-network) its soft policy's logit `Q(s,P) − Q(s,N)` (head mean), the preference of the
/// learned user policy (`mtrec_reward` docs: the alignment gradient).
pub fn score_name(kind: HeadKind) -> &'static str {
    match kind {
        HeadKind::Ctr => "ctr-logit",
        _ => "q-logit",
    }
}

/// Scores `(state, item)` rows with `model` (inference mode), `batch_size` at a time.
pub fn score_items(
    model: &Model,
    ds: &PreparedDataset,
    rows: &[(State, u32)],
    batch_size: usize,
    device: &Device,
) -> Result<Vec<f64>> {
    let batcher = Batcher::new(ds).with_layout(model.layout());
    let kind = model.head().kind();
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(batch_size.max(1)) {
        let batch = batcher.batch_items(chunk, device)?;
        let logits = model.forward(&batch, false)?.logits;
        let s = match kind {
            HeadKind::Ctr => logits,
            HeadKind::Q => logits
                .narrow(1, mtrec_nn::ACTION_P, 1)?
                .squeeze(1)?
                .sub(&logits.narrow(1, 0, 1)?.squeeze(1)?)?,
            HeadKind::Quantile(_) => {
                let q = logits.mean(D::Minus1)?;
                q.narrow(1, mtrec_nn::ACTION_P, 1)?
                    .squeeze(1)?
                    .sub(&q.narrow(1, 0, 1)?.squeeze(1)?)?
            }
        };
        out.extend(
            s.to_dtype(DType::F64)?
                .to_device(&Device::Cpu)?
                .to_vec1::<f64>()?,
        );
    }
    Ok(out)
}

/// Aligned ranking of `model` on the test users of `ds` (see the crate docs).
pub fn ranking_metrics(
    truth: &GroundTruth,
    ds: &PreparedDataset,
    model: &Model,
    batch_size: usize,
    device: &Device,
    cfg: &RankingConfig,
) -> Result<RankingMetrics> {
    let kind = model.head().kind();
    ranking_metrics_with(truth, ds, cfg, score_name(kind), |rows| {
        score_items(model, ds, rows, batch_size, device)
    })
}
