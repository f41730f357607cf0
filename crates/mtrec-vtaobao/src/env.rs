//! The VirtualTB-v0 environment, batched over `N` independent users ("slots") that step together,
//! with auto-reset. The dynamics are those of `virtualTB/envs/virtualTB.py` (spec §2); the choices
//! the original leaves open or gets oddly are the fields of [`EnvConfig`] (spec §3).

use std::sync::Arc;

use candle_core::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, VtbError};
use crate::model::{VirtualTb, ACTION_OUT, ACT_DIM, CLICK_CLASSES, USER_DIM};
use crate::sample::sample_categorical;

/// Length of one observation: `[user one-hot (88), clicks, b, page counter]`.
pub const OBS_DIM: usize = USER_DIM + 3;

/// What a finished slot reports as its next observation (decision (b) of the spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminalObs {
    /// The true last observation of the finished episode, `[user, clicks, b, pages]`. The slot is
    /// then reset and the observation to act on next is in [`VecEnv::obs`]. This is what a
    /// learner that bootstraps or logs terminal states should see.
    #[default]
    TrueLast,
    /// The original env's quirk: on `done`, `VirtualTB.step` draws the next user at once and
    /// returns `[next user, 0, 0, pages]` (the clicks/`b` zeroed, the page counter of the finished
    /// episode not reset). Here the shown user is the one the slot plays next, from page 0 (as a
    /// gym loop that calls `reset()` after `done` does; there `reset()` draws yet another user,
    /// which changes nothing in distribution since users are i.i.d.).
    OriginalQuirk,
}

/// The environment's explicit choices (spec §3). The defaults are those of the RL libraries used
/// with VirtualTB-v0 (SB3, tianshou), not of the raw env, where they differ.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnvConfig {
    /// (a) Clip every action component to `[-1, 1]` before the click model sees it. Default
    /// `true`: the action space is declared `Box(-1, 1)` and SB3/tianshou clip to it, but the raw
    /// env does not clip (`false` reproduces that: any finite value goes into the network).
    pub clip_actions: bool,
    /// (b) The next observation reported for a slot whose episode ended. Default
    /// [`TerminalObs::TrueLast`].
    pub terminal_obs: TerminalObs,
    /// (d) Scale the observation's counters to about `[0, 1]` (clicks / 10, `b` / 9, page / 100).
    /// Default `false`: the original env and all the baselines feed the raw counts. The click
    /// model always receives the raw page counter, whatever this says.
    pub scale_obs: bool,
}

impl Default for EnvConfig {
    fn default() -> Self {
        EnvConfig {
            clip_actions: true,
            terminal_obs: TerminalObs::TrueLast,
            scale_obs: false,
        }
    }
}

/// The totals of one finished episode (one user's visit), for eCTR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpisodeStats {
    /// Clicks summed over the episode's pages (the undiscounted return).
    pub clicks: u32,
    /// Pages shown (the episode length, 1..=100).
    pub pages: u32,
}

impl EpisodeStats {
    /// The episode's CTR, `clicks / (10 · pages)`: the paper's per-episode eCTR (eq. 12 context).
    pub fn ctr(&self) -> f64 {
        f64::from(self.clicks) / (10.0 * f64::from(self.pages.max(1)))
    }
}

/// What one vector step returns; every `Vec` has one entry per slot, except `next_obs`
/// (`N × 91`, row-major).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepBatch {
    /// The reward of each slot: the number of clicks on the page, 0..=10.
    pub rewards: Vec<f32>,
    /// Whether the slot's episode ended with this step (a true termination: the user left; the
    /// leave count is part of the MDP, so there is no truncation).
    pub dones: Vec<bool>,
    /// Next observation of each slot: for finished slots, the terminal observation chosen by
    /// [`EnvConfig::terminal_obs`]; the observation to act on next is [`VecEnv::obs`].
    pub next_obs: Vec<f32>,
    /// `Some` exactly where `dones[i]`: the finished episode's totals.
    pub episodes: Vec<Option<EpisodeStats>>,
}

/// VirtualTB-v0 over `N` parallel users, seeded, with auto-reset.
///
/// One [`VecEnv::step`] runs one batched forward pass of the click model for all slots, and at
/// most one generator and one leave forward for the slots that reset. All randomness comes from
/// one `ChaCha8Rng` seeded with the `seed` given to [`VecEnv::new`], drawn in slot order, so a run
/// is a function of (weights, `N`, config, seed, actions).
#[derive(Debug, Clone)]
pub struct VecEnv {
    model: Arc<VirtualTb>,
    cfg: EnvConfig,
    n: usize,
    rng: ChaCha8Rng,
    /// `N × 88` one-hot users of the current episodes.
    users: Vec<f32>,
    /// Each slot's leave count, drawn at reset: the episode ends when `pages >= leave`.
    leaves: Vec<u32>,
    /// Pages shown so far in each slot's episode (the original `total_c`).
    pages: Vec<u32>,
    /// Clicks so far in each slot's episode (the original `total_a`).
    clicks: Vec<u32>,
    /// `N × 91` observations to act on.
    obs: Vec<f32>,
    /// Scratch `N × 116` input of the click model.
    input: Vec<f32>,
}

impl VecEnv {
    /// Creates `num_envs` slots and resets them all (draws `num_envs` users and their leaves).
    pub fn new(model: Arc<VirtualTb>, num_envs: usize, cfg: EnvConfig, seed: u64) -> Result<Self> {
        if num_envs == 0 {
            return Err(VtbError::Config("VecEnv needs at least one slot".into()));
        }
        let mut env = VecEnv {
            model,
            cfg,
            n: num_envs,
            rng: ChaCha8Rng::seed_from_u64(seed),
            users: vec![0.0; num_envs * USER_DIM],
            leaves: vec![0; num_envs],
            pages: vec![0; num_envs],
            clicks: vec![0; num_envs],
            obs: vec![0.0; num_envs * OBS_DIM],
            input: vec![0.0; num_envs * (USER_DIM + 1 + ACT_DIM)],
        };
        env.reset()?;
        Ok(env)
    }

    /// Number of slots.
    pub fn num_envs(&self) -> usize {
        self.n
    }

    /// Length of one observation (91).
    pub fn obs_dim(&self) -> usize {
        OBS_DIM
    }

    /// Length of one action (27).
    pub fn act_dim(&self) -> usize {
        ACT_DIM
    }

    /// The configuration in use.
    pub fn config(&self) -> &EnvConfig {
        &self.cfg
    }

    /// The shared simulator networks.
    pub fn model(&self) -> &Arc<VirtualTb> {
        &self.model
    }

    /// The observations to act on, `N × 91`, row-major.
    pub fn obs(&self) -> &[f32] {
        &self.obs
    }

    /// Each slot's leave count (hidden state, for diagnostics and tests).
    pub fn leaves(&self) -> &[u32] {
        &self.leaves
    }

    /// Pages shown so far in each slot's current episode.
    pub fn pages(&self) -> &[u32] {
        &self.pages
    }

    /// Starts a new episode in every slot (unfinished episodes are dropped without statistics).
    pub fn reset(&mut self) -> Result<()> {
        let all: Vec<usize> = (0..self.n).collect();
        self.reset_slots(&all)
    }

    /// Draws new users and leaves for `slots` (one batched forward each) and writes their
    /// observations `[user, 0, 0, 0]`.
    fn reset_slots(&mut self, slots: &[usize]) -> Result<()> {
        if slots.is_empty() {
            return Ok(());
        }
        let users = self.model.sample_users(slots.len(), &mut self.rng)?;
        let leaves = self.model.sample_leaves(&users, &mut self.rng)?;
        for ((&s, user), leave) in slots.iter().zip(users.chunks_exact(USER_DIM)).zip(leaves) {
            self.users[s * USER_DIM..(s + 1) * USER_DIM].copy_from_slice(user);
            self.leaves[s] = leave;
            self.pages[s] = 0;
            self.clicks[s] = 0;
            write_obs(
                &mut self.obs[s * OBS_DIM..(s + 1) * OBS_DIM],
                user,
                0,
                0,
                0,
                self.cfg.scale_obs,
            );
        }
        Ok(())
    }

    /// Shows one page to every slot: `actions` is `N × 27`, row-major.
    ///
    /// Per slot, as the original `step`: click logits from (user, raw page counter, action);
    /// `clicks ~ Cat(softmax(logits[0..11]))`, then `b ~ Cat(softmax(logits[11..21]))`; reward =
    /// clicks; page counter + 1; done when the counter reaches the leave count. Finished slots
    /// report their [`EpisodeStats`] and are reset. Non-finite actions are an error (before any
    /// state changes).
    pub fn step(&mut self, actions: &[f32]) -> Result<StepBatch> {
        let n = self.n;
        if actions.len() != n * ACT_DIM {
            return Err(VtbError::Length {
                what: "actions (num_envs × 27)",
                expected: n * ACT_DIM,
                got: actions.len(),
            });
        }
        if let Some(i) = actions.iter().position(|a| !a.is_finite()) {
            return Err(VtbError::NonFiniteAction {
                slot: i / ACT_DIM,
                index: i % ACT_DIM,
                value: actions[i],
            });
        }
        let width = USER_DIM + 1 + ACT_DIM;
        for s in 0..n {
            let row = &mut self.input[s * width..(s + 1) * width];
            row[..USER_DIM].copy_from_slice(&self.users[s * USER_DIM..(s + 1) * USER_DIM]);
            row[USER_DIM] = self.pages[s] as f32;
            for (dst, &a) in row[USER_DIM + 1..]
                .iter_mut()
                .zip(&actions[s * ACT_DIM..(s + 1) * ACT_DIM])
            {
                *dst = if self.cfg.clip_actions {
                    a.clamp(-1.0, 1.0)
                } else {
                    a
                };
            }
        }
        let x = Tensor::from_slice(&self.input, (n, width), self.model.device())?;
        let logits = self
            .model
            .action_packed(&x)?
            .flatten_all()?
            .to_vec1::<f32>()?;

        let mut out = StepBatch {
            rewards: Vec::with_capacity(n),
            dones: Vec::with_capacity(n),
            next_obs: vec![0.0; n * OBS_DIM],
            episodes: vec![None; n],
        };
        let mut finished = Vec::new();
        for (s, row) in logits.chunks_exact(ACTION_OUT).enumerate() {
            let clicks = draw(&row[..CLICK_CLASSES], &mut self.rng, "click model")?;
            let b = draw(&row[CLICK_CLASSES..], &mut self.rng, "click model (b head)")?;
            self.clicks[s] += clicks;
            self.pages[s] += 1;
            let done = self.pages[s] >= self.leaves[s];
            let user = &self.users[s * USER_DIM..(s + 1) * USER_DIM];
            write_obs(
                &mut out.next_obs[s * OBS_DIM..(s + 1) * OBS_DIM],
                user,
                clicks,
                b,
                self.pages[s],
                self.cfg.scale_obs,
            );
            out.rewards.push(clicks as f32);
            out.dones.push(done);
            if done {
                out.episodes[s] = Some(EpisodeStats {
                    clicks: self.clicks[s],
                    pages: self.pages[s],
                });
                finished.push(s);
            } else {
                self.obs[s * OBS_DIM..(s + 1) * OBS_DIM]
                    .copy_from_slice(&out.next_obs[s * OBS_DIM..(s + 1) * OBS_DIM]);
            }
        }
        // The final pages of the finished slots, needed by the quirk after the reset.
        let final_pages: Vec<u32> = finished.iter().map(|&s| self.pages[s]).collect();
        self.reset_slots(&finished)?;
        if self.cfg.terminal_obs == TerminalObs::OriginalQuirk {
            for (&s, pages) in finished.iter().zip(final_pages) {
                write_obs(
                    &mut out.next_obs[s * OBS_DIM..(s + 1) * OBS_DIM],
                    &self.users[s * USER_DIM..(s + 1) * USER_DIM],
                    0,
                    0,
                    pages,
                    self.cfg.scale_obs,
                );
            }
        }
        Ok(out)
    }
}

/// One categorical draw from a row of logits with a fresh uniform number.
fn draw(logits: &[f32], rng: &mut ChaCha8Rng, what: &'static str) -> Result<u32> {
    sample_categorical(logits, rng.random::<f64>())
        .map(|k| k as u32)
        .ok_or(VtbError::NonFiniteLogits {
            what,
            max: logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)),
        })
}

/// Writes `[user, clicks, b, page]` (optionally scaled) into a 91-float row.
fn write_obs(row: &mut [f32], user: &[f32], clicks: u32, b: u32, page: u32, scale: bool) {
    row[..USER_DIM].copy_from_slice(user);
    let (c, bb, p) = (clicks as f32, b as f32, page as f32);
    let [sc, sb, sp] = if scale {
        [10.0, 9.0, 100.0]
    } else {
        [1.0, 1.0, 1.0]
    };
    row[USER_DIM] = c / sc;
    row[USER_DIM + 1] = bb / sb;
    row[USER_DIM + 2] = p / sp;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{synthetic_tensors, LEAVE_IF_60, LEAVE_IF_61};
    use candle_core::Device;
    use std::path::Path;

    fn model() -> Arc<VirtualTb> {
        Arc::new(
            VirtualTb::from_tensors(&synthetic_tensors(), Path::new("synthetic"), &Device::Cpu)
                .unwrap(),
        )
    }

    /// The leave count the synthetic leave model gives the user of an observation row.
    fn leave_of(row: &[f32]) -> u32 {
        match (row[60], row[61]) {
            (1.0, 0.0) => LEAVE_IF_60,
            (0.0, 1.0) => LEAVE_IF_61,
            other => panic!("group 6 must be one-hot, got {other:?}"),
        }
    }

    fn row(v: &[f32], s: usize) -> &[f32] {
        &v[s * OBS_DIM..(s + 1) * OBS_DIM]
    }

    #[test]
    fn auto_reset_bookkeeping_on_a_hand_checked_case() {
        let n = 8;
        let mut env = VecEnv::new(model(), n, EnvConfig::default(), 3).unwrap();
        let leaves: Vec<u32> = (0..n).map(|s| leave_of(row(env.obs(), s))).collect();
        assert_eq!(env.leaves(), &leaves[..]);
        assert!(leaves.contains(&LEAVE_IF_60) && leaves.contains(&LEAVE_IF_61));
        for s in 0..n {
            assert_eq!(&row(env.obs(), s)[88..], &[0.0, 0.0, 0.0]);
        }
        let zeros = vec![0.0; n * ACT_DIM];
        let mut users: Vec<Vec<f32>> = (0..n).map(|s| row(env.obs(), s)[..88].to_vec()).collect();
        let mut page = vec![0u32; n];
        let mut leave = leaves;
        let mut finished = 0;
        for _ in 0..12 {
            let out = env.step(&zeros).unwrap();
            assert_eq!(out.rewards, vec![3.0; n]);
            for s in 0..n {
                page[s] += 1;
                let next = row(&out.next_obs, s);
                // The true last (or next) observation: same user, 3 clicks, b = 1, raw page.
                assert_eq!(&next[..88], &users[s][..]);
                assert_eq!(&next[88..], &[3.0, 1.0, page[s] as f32]);
                let done = page[s] == leave[s];
                assert_eq!(out.dones[s], done, "slot {s} page {}", page[s]);
                if done {
                    finished += 1;
                    assert_eq!(
                        out.episodes[s],
                        Some(EpisodeStats {
                            clicks: 3 * leave[s],
                            pages: leave[s],
                        })
                    );
                    // Reset: a new user at page 0, with its own leave.
                    let o = row(env.obs(), s);
                    assert_eq!(&o[88..], &[0.0, 0.0, 0.0]);
                    assert_eq!(env.pages()[s], 0);
                    users[s] = o[..88].to_vec();
                    leave[s] = leave_of(o);
                    page[s] = 0;
                } else {
                    assert_eq!(out.episodes[s], None);
                    assert_eq!(row(env.obs(), s), next);
                }
                assert_eq!(env.leaves()[s], leave[s]);
            }
        }
        assert!(finished >= n, "every slot finished at least once");
    }

    #[test]
    fn original_quirk_shows_the_next_user_and_the_old_page_counter() {
        let n = 8;
        let cfg = EnvConfig {
            terminal_obs: TerminalObs::OriginalQuirk,
            ..EnvConfig::default()
        };
        let mut env = VecEnv::new(model(), n, cfg, 3).unwrap();
        let zeros = vec![0.0; n * ACT_DIM];
        let mut seen_done = false;
        for _ in 0..LEAVE_IF_61 {
            let pages_before = env.pages().to_vec();
            let out = env.step(&zeros).unwrap();
            for (s, &before) in pages_before.iter().enumerate() {
                if out.dones[s] {
                    seen_done = true;
                    let next = row(&out.next_obs, s);
                    let o = row(env.obs(), s);
                    assert_eq!(&next[..88], &o[..88], "the next user is shown");
                    assert_eq!(&next[88..], &[0.0, 0.0, (before + 1) as f32]);
                    assert_eq!(&o[88..], &[0.0, 0.0, 0.0]);
                }
            }
        }
        assert!(seen_done);
    }

    #[test]
    fn clipping_on_and_off() {
        let n = 4;
        let mut a = vec![0.0f32; n * ACT_DIM];
        for s in 0..n {
            a[s * ACT_DIM] = 3.0;
        }
        let mut clipped = VecEnv::new(model(), n, EnvConfig::default(), 5).unwrap();
        assert_eq!(clipped.step(&a).unwrap().rewards, vec![3.0; n]);
        let raw = EnvConfig {
            clip_actions: false,
            ..EnvConfig::default()
        };
        let mut unclipped = VecEnv::new(model(), n, raw, 5).unwrap();
        assert_eq!(unclipped.step(&a).unwrap().rewards, vec![7.0; n]);
    }

    #[test]
    fn scaled_observations() {
        let cfg = EnvConfig {
            scale_obs: true,
            ..EnvConfig::default()
        };
        let mut env = VecEnv::new(model(), 2, cfg, 1).unwrap();
        let out = env.step(&[0.0; 2 * ACT_DIM]).unwrap();
        for s in 0..2 {
            let r = &row(&out.next_obs, s)[88..];
            assert!((r[0] - 0.3).abs() < 1e-7 && (r[1] - 1.0 / 9.0).abs() < 1e-7);
            assert!((r[2] - 0.01).abs() < 1e-7);
        }
    }

    #[test]
    fn bad_actions_and_sizes_are_errors() {
        assert!(VecEnv::new(model(), 0, EnvConfig::default(), 1).is_err());
        let mut env = VecEnv::new(model(), 2, EnvConfig::default(), 1).unwrap();
        let before = env.obs().to_vec();
        let e = env.step(&[0.0; ACT_DIM]).unwrap_err();
        assert!(e.to_string().contains("expected 54 values, got 27"), "{e}");
        let mut a = vec![0.0; 2 * ACT_DIM];
        a[ACT_DIM + 4] = f32::NAN;
        let e = env.step(&a).unwrap_err();
        assert!(e.to_string().contains("action 4 of slot 1"), "{e}");
        assert_eq!(env.obs(), &before[..], "a refused step changes nothing");
        assert_eq!(env.pages(), &[0, 0]);
    }

    #[test]
    fn seeded_runs_repeat_and_seeds_differ() {
        let run = |seed| {
            let mut env = VecEnv::new(model(), 16, EnvConfig::default(), seed).unwrap();
            let mut obs = env.obs().to_vec();
            for _ in 0..6 {
                obs.extend(env.step(&[0.0; 16 * ACT_DIM]).unwrap().next_obs);
            }
            obs
        };
        assert_eq!(run(11), run(11));
        assert_ne!(run(11), run(12));
    }
}
