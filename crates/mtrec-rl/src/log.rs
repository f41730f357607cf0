//! Training curves: one [`LogPoint`] per PPO update or per SAC logging interval, with the
//! environment's own return and score beside the shaped return the agent trained on.
//!
//! Why both returns: with a reward hook (`r = r_env + κ·r_mental`) the shaped return is not
//! comparable across runs with and without the hook; the raw return and the environment's score
//! (Virtual Taobao's eCTR) are, so "with vs without the mental reward" is read on those.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::env::EnvStep;

/// One finished episode.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpisodeRecord {
    /// Undiscounted return in the environment's reward ([`crate::EpisodeInfo::ret`] when the
    /// environment reports it, else the trainer's sum of the step rewards).
    pub raw_return: f64,
    /// Undiscounted return in the reward trained on, `Σ (r_env + extra)`.
    pub shaped_return: f64,
    /// Steps of the episode.
    pub len: usize,
    /// The environment's score of the episode, if it reports one.
    pub score: Option<f64>,
}

/// One point of a training curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogPoint {
    /// Transitions collected so far (vector steps × `num_envs`), over the trainer's life.
    pub env_steps: u64,
    /// Gradient updates so far (PPO: minibatch steps; SAC: gradient steps).
    pub updates: u64,
    /// Training episodes finished since the previous point (the means below are over them).
    pub episodes: usize,
    pub mean_raw_return: Option<f64>,
    pub mean_shaped_return: Option<f64>,
    /// Mean of the episodes' scores, over the episodes that have one.
    pub mean_score: Option<f64>,
    pub mean_episode_len: Option<f64>,
    /// Mean losses and diagnostics since the previous point, by name.
    pub losses: BTreeMap<String, f64>,
}

/// A training curve.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainLog {
    /// `"ppo"` or `"sac"`.
    pub algo: String,
    pub points: Vec<LogPoint>,
}

impl TrainLog {
    /// The curve as CSV: the fixed columns, then one column per loss name (the union over the
    /// points, sorted); missing values are empty cells.
    pub fn to_csv(&self) -> String {
        let mut names: Vec<&String> = self.points.iter().flat_map(|p| p.losses.keys()).collect();
        names.sort();
        names.dedup();
        let mut out = String::from(
            "env_steps,updates,episodes,mean_raw_return,mean_shaped_return,mean_score,mean_episode_len",
        );
        for n in &names {
            out.push(',');
            out.push_str(n);
        }
        out.push('\n');
        let opt = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
        for p in &self.points {
            let _ = write!(
                out,
                "{},{},{},{},{},{},{}",
                p.env_steps,
                p.updates,
                p.episodes,
                opt(p.mean_raw_return),
                opt(p.mean_shaped_return),
                opt(p.mean_score),
                opt(p.mean_episode_len)
            );
            for n in &names {
                out.push(',');
                out.push_str(&opt(p.losses.get(*n).copied()));
            }
            out.push('\n');
        }
        out
    }
}

/// Means of a set of episodes: `(raw, shaped, score, len)`, `None` where there is nothing to
/// average.
pub(crate) fn episode_means(
    eps: &[EpisodeRecord],
) -> (Option<f64>, Option<f64>, Option<f64>, Option<f64>) {
    if eps.is_empty() {
        return (None, None, None, None);
    }
    let n = eps.len() as f64;
    let raw = eps.iter().map(|e| e.raw_return).sum::<f64>() / n;
    let shaped = eps.iter().map(|e| e.shaped_return).sum::<f64>() / n;
    let len = eps.iter().map(|e| e.len as f64).sum::<f64>() / n;
    let scores: Vec<f64> = eps.iter().filter_map(|e| e.score).collect();
    let score = (!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64);
    (Some(raw), Some(shaped), score, Some(len))
}

/// Running returns of each slot, turned into [`EpisodeRecord`]s when episodes end.
#[derive(Debug, Clone, Default)]
pub(crate) struct EpisodeTracker {
    raw: Vec<f64>,
    shaped: Vec<f64>,
    len: Vec<usize>,
    finished: Vec<EpisodeRecord>,
}

impl EpisodeTracker {
    pub(crate) fn new(num_envs: usize) -> Self {
        EpisodeTracker {
            raw: vec![0.0; num_envs],
            shaped: vec![0.0; num_envs],
            len: vec![0; num_envs],
            finished: Vec::new(),
        }
    }

    pub(crate) fn num_envs(&self) -> usize {
        self.raw.len()
    }

    /// Makes `slot` a tracker of `num_envs` slots: the one there when it has that many (episodes
    /// in progress carry over to the next training call), else a new one.
    pub(crate) fn keep_or_new(slot: &mut Option<EpisodeTracker>, num_envs: usize) {
        if slot.as_ref().map(EpisodeTracker::num_envs) != Some(num_envs) {
            *slot = Some(EpisodeTracker::new(num_envs));
        }
    }

    /// Adds one vector step (`shaped` = the rewards trained on) and closes finished episodes.
    pub(crate) fn record(&mut self, step: &EnvStep, shaped: &[f32]) {
        for (i, &s) in shaped.iter().enumerate().take(self.raw.len()) {
            self.raw[i] += f64::from(step.rewards[i]);
            self.shaped[i] += f64::from(s);
            self.len[i] += 1;
            if step.dones[i] || step.truncated[i] || step.episodes[i].is_some() {
                let info = step.episodes[i];
                self.finished.push(EpisodeRecord {
                    raw_return: info.map_or(self.raw[i], |e| e.ret),
                    shaped_return: self.shaped[i],
                    len: info.map_or(self.len[i], |e| e.len),
                    score: info.and_then(|e| e.score),
                });
                self.raw[i] = 0.0;
                self.shaped[i] = 0.0;
                self.len[i] = 0;
            }
        }
    }

    /// The episodes finished since the last call.
    pub(crate) fn drain(&mut self) -> Vec<EpisodeRecord> {
        std::mem::take(&mut self.finished)
    }
}

/// Running means of named losses.
#[derive(Debug, Clone, Default)]
pub(crate) struct LossMeans {
    sums: BTreeMap<String, (f64, u64)>,
}

impl LossMeans {
    pub(crate) fn add(&mut self, name: &str, value: f64) {
        let e = self.sums.entry(name.to_owned()).or_insert((0.0, 0));
        e.0 += value;
        e.1 += 1;
    }

    /// Sets a value that is not averaged (the last one wins).
    pub(crate) fn set(&mut self, name: &str, value: f64) {
        self.sums.insert(name.to_owned(), (value, 1));
    }

    pub(crate) fn take(&mut self) -> BTreeMap<String, f64> {
        std::mem::take(&mut self.sums)
            .into_iter()
            .map(|(k, (s, n))| (k, s / n.max(1) as f64))
            .collect()
    }
}

/// Builds a point from the episodes and losses since the previous one.
pub(crate) fn make_point(
    env_steps: u64,
    updates: u64,
    eps: &[EpisodeRecord],
    losses: BTreeMap<String, f64>,
) -> LogPoint {
    let (mean_raw_return, mean_shaped_return, mean_score, mean_episode_len) = episode_means(eps);
    LogPoint {
        env_steps,
        updates,
        episodes: eps.len(),
        mean_raw_return,
        mean_shaped_return,
        mean_score,
        mean_episode_len,
        losses,
    }
}

/// A trainer's log point: the episodes `tracker` closed since the previous point and `losses`,
/// logged under `what`.
pub(crate) fn close_point(
    tracker: Option<&mut EpisodeTracker>,
    env_steps: u64,
    updates: u64,
    losses: BTreeMap<String, f64>,
    what: &str,
) -> LogPoint {
    let eps = tracker.map(EpisodeTracker::drain).unwrap_or_default();
    let point = make_point(env_steps, updates, &eps, losses);
    tracing::info!(
        env_steps = point.env_steps,
        episodes = point.episodes,
        raw = ?point.mean_raw_return,
        shaped = ?point.mean_shaped_return,
        score = ?point.mean_score,
        "{what}"
    );
    point
}

/// Hands `point` to a trainer's callback; its error stops training.
pub(crate) fn run_callback<A, C>(
    callback: &mut C,
    agent: &A,
    point: &LogPoint,
    env_steps: u64,
) -> crate::Result<()>
where
    C: FnMut(&A, &LogPoint) -> Result<(), crate::EnvError>,
{
    callback(agent, point).map_err(|source| crate::RlError::Callback { env_steps, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::EpisodeInfo;

    #[test]
    fn tracker_uses_env_info_when_given_and_its_own_sums_otherwise() {
        let mut t = EpisodeTracker::new(2);
        let step =
            |r: [f32; 2], d: [bool; 2], tr: [bool; 2], e: [Option<EpisodeInfo>; 2]| EnvStep {
                rewards: r.to_vec(),
                dones: d.to_vec(),
                truncated: tr.to_vec(),
                next_obs: vec![0.0; 2],
                episodes: e.to_vec(),
            };
        t.record(
            &step([1.0, 2.0], [false; 2], [false; 2], [None, None]),
            &[1.5, 2.0],
        );
        let info = EpisodeInfo {
            ret: 10.0,
            len: 7,
            score: Some(0.5),
        };
        t.record(
            &step([3.0, 4.0], [true, false], [false, true], [Some(info), None]),
            &[3.5, 4.0],
        );
        let eps = t.drain();
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[0].raw_return, 10.0);
        assert_eq!(eps[0].shaped_return, 5.0);
        assert_eq!(eps[0].len, 7);
        assert_eq!(eps[0].score, Some(0.5));
        assert_eq!(eps[1].raw_return, 6.0);
        assert_eq!(eps[1].shaped_return, 6.0);
        assert_eq!(eps[1].len, 2);
        assert_eq!(eps[1].score, None);
        let (raw, shaped, score, len) = episode_means(&eps);
        assert_eq!(
            (raw, shaped, score, len),
            (Some(8.0), Some(5.5), Some(0.5), Some(4.5))
        );
        let log = TrainLog {
            algo: "ppo".into(),
            points: vec![make_point(4, 1, &eps, [("value_loss".into(), 0.25)].into())],
        };
        let csv = log.to_csv();
        assert_eq!(
            csv,
            "env_steps,updates,episodes,mean_raw_return,mean_shaped_return,mean_score,mean_episode_len,value_loss\n\
             4,1,2,8,5.5,0.5,4.5,0.25\n"
        );
    }
}
