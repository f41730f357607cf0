//! # mtrec-mdp
//!
//! The user-centric MDP of MTRec (paper §4.1, `specs/method.md` §7) over a [`PreparedDataset`]:
//!
//! - a **state** `s = (h, i)` is a user's history `h` (her previous positive items, the most recent
//!   `max_history` of them) and a shown item `i`, either her logged positive or the fixed negative of
//!   that step;
//! - a **sample** `(h, i, y)` is a state with its label (1 = positive, 0 = negative): two per step
//!   `t >= 2` (1-based; the first step has no history), as DIN and DIEN build them;
//! - a **transition** `(s, a, s', done)` follows the logged behaviour: after engaging with `pos_t`
//!   (a = P = 1) the user is shown `pos_{t+1}` with `pos_t` appended to her history, and `done` marks the
//!   last step; after declining `neg_t` (a = N = 0) she is shown `pos_t` with the same history.
//!
//! The [`Batcher`] turns a list of states into padded candle tensors from the flat id arrays of the
//! dataset, so batching costs a few memory copies per sample.

mod batch;

pub use batch::{Align, Batch, Batcher, HostBatch, Layout, PadPolicy, TransitionBatch};

use mtrec_data::PreparedDataset;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Action index of a positive engagement (P), everywhere in mtrec.
pub const ACTION_POSITIVE: u32 = 1;
/// Action index of a declined item (N).
pub const ACTION_NEGATIVE: u32 = 0;

/// Which users a set of samples or transitions comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Users outside the test split.
    Train,
    /// The held-out test users.
    Test,
    /// Everybody.
    All,
}

impl Split {
    fn admits(&self, ds: &PreparedDataset, user: usize) -> bool {
        match self {
            Split::Train => !ds.is_test(user),
            Split::Test => ds.is_test(user),
            Split::All => true,
        }
    }
}

/// A state: the user, the 0-based step `t` whose item is shown (the history is steps `..t`), and
/// whether the shown item is the logged positive or the step's negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct State {
    pub user: u32,
    pub step: u32,
    pub positive: bool,
}

impl State {
    /// The label of the state read as a sample: 1 for the logged positive, 0 for the negative.
    pub fn label(&self) -> u32 {
        if self.positive {
            ACTION_POSITIVE
        } else {
            ACTION_NEGATIVE
        }
    }

    /// The shown item's id.
    pub fn item(&self, ds: &PreparedDataset) -> u32 {
        let u = self.user as usize;
        let t = self.step as usize;
        if self.positive {
            ds.sequence(u)[t]
        } else {
            ds.negatives(u)[t]
        }
    }

    /// The history as a slice of item ids, capped to the `max_history` most recent.
    pub fn history<'a>(&self, ds: &'a PreparedDataset, max_history: usize) -> &'a [u32] {
        let t = self.step as usize;
        &ds.sequence(self.user as usize)[t.saturating_sub(max_history)..t]
    }
}

/// A logged transition `(s, a, s', done)`; `a` is the label of `s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub state: State,
    pub action: u32,
    pub next: State,
    pub done: bool,
}

/// All samples of a split in a fixed order: per user (by id), per step, positive then negative.
pub fn samples(ds: &PreparedDataset, split: Split) -> Vec<State> {
    let mut out = Vec::new();
    for u in 1..=ds.n_users() {
        if !split.admits(ds, u) {
            continue;
        }
        for t in 1..ds.sequence(u).len() {
            for positive in [true, false] {
                out.push(State {
                    user: u as u32,
                    step: t as u32,
                    positive,
                });
            }
        }
    }
    out
}

/// The last-step sample pair of every user in the split (DIN/DIEN's test protocol).
pub fn last_step_samples(ds: &PreparedDataset, split: Split) -> Vec<State> {
    let mut out = Vec::new();
    for u in 1..=ds.n_users() {
        let n = ds.sequence(u).len();
        if !split.admits(ds, u) || n < 2 {
            continue;
        }
        for positive in [true, false] {
            out.push(State {
                user: u as u32,
                step: (n - 1) as u32,
                positive,
            });
        }
    }
    out
}

/// The transition that starts in sample state `s`.
pub fn transition_of(ds: &PreparedDataset, s: State) -> Transition {
    let n = ds.sequence(s.user as usize).len() as u32;
    if s.positive {
        if s.step + 1 < n {
            Transition {
                state: s,
                action: ACTION_POSITIVE,
                next: State {
                    user: s.user,
                    step: s.step + 1,
                    positive: true,
                },
                done: false,
            }
        } else {
            // The user stops here; s' is masked by (1 - done), so s itself stands in for it.
            Transition {
                state: s,
                action: ACTION_POSITIVE,
                next: s,
                done: true,
            }
        }
    } else {
        Transition {
            state: s,
            action: ACTION_NEGATIVE,
            next: State {
                positive: true,
                ..s
            },
            done: false,
        }
    }
}

/// All transitions of a split, in the order of [`samples`] (transition `k` starts in sample `k`).
pub fn transitions(ds: &PreparedDataset, split: Split) -> Vec<Transition> {
    samples(ds, split)
        .into_iter()
        .map(|s| transition_of(ds, s))
        .collect()
}

/// A seeded permutation of `0..n` for one epoch; each epoch has its own ChaCha stream, so epoch `e`
/// is the same permutation whatever happened before it (which makes resuming exact).
pub fn shuffled_indices(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch);
    let mut idx: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        idx.swap(i, j);
    }
    idx
}

#[cfg(test)]
mod tests;
