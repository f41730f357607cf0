//! A uniform replay buffer (a ring over flat host arrays) for SAC.
//!
//! Memory grows with the content up to the capacity rather than being reserved at once: SB3's
//! default capacity (10⁶) with Virtual Taobao's 91-float observations would reserve ~0.8 GB up
//! front for runs that often store far fewer transitions.

use rand::Rng;

use crate::error::{Result, RlError};

/// Transitions `(s, a, r, s', done)` with `done` = true termination (truncated episodes keep
/// `done = false`, so the target bootstraps from `s'`).
#[derive(Debug, Clone)]
pub struct ReplayBuffer {
    capacity: usize,
    obs_dim: usize,
    act_dim: usize,
    obs: Vec<f32>,
    actions: Vec<f32>,
    rewards: Vec<f32>,
    next_obs: Vec<f32>,
    dones: Vec<f32>,
    /// Where the next transition goes.
    pos: usize,
}

/// A sampled minibatch, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayBatch {
    pub len: usize,
    pub obs: Vec<f32>,
    pub actions: Vec<f32>,
    pub rewards: Vec<f32>,
    pub next_obs: Vec<f32>,
    /// 1.0 where the transition terminated, else 0.0.
    pub dones: Vec<f32>,
}

impl ReplayBuffer {
    pub fn new(capacity: usize, obs_dim: usize, act_dim: usize) -> Result<Self> {
        if capacity == 0 || obs_dim == 0 || act_dim == 0 {
            return Err(RlError::Shape(format!(
                "replay buffer of capacity {capacity}, obs_dim {obs_dim}, act_dim {act_dim}: all must be positive"
            )));
        }
        Ok(ReplayBuffer {
            capacity,
            obs_dim,
            act_dim,
            obs: Vec::new(),
            actions: Vec::new(),
            rewards: Vec::new(),
            next_obs: Vec::new(),
            dones: Vec::new(),
            pos: 0,
        })
    }

    /// Transitions held.
    pub fn len(&self) -> usize {
        self.rewards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rewards.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Stores a transition, overwriting the oldest once full.
    pub fn push(
        &mut self,
        obs: &[f32],
        action: &[f32],
        reward: f32,
        next_obs: &[f32],
        done: bool,
    ) -> Result<()> {
        if obs.len() != self.obs_dim
            || next_obs.len() != self.obs_dim
            || action.len() != self.act_dim
        {
            return Err(RlError::Shape(format!(
                "replay push: obs {}, next_obs {}, action {} for obs_dim {} and act_dim {}",
                obs.len(),
                next_obs.len(),
                action.len(),
                self.obs_dim,
                self.act_dim
            )));
        }
        let d = if done { 1.0 } else { 0.0 };
        if self.len() < self.capacity {
            self.obs.extend_from_slice(obs);
            self.actions.extend_from_slice(action);
            self.rewards.push(reward);
            self.next_obs.extend_from_slice(next_obs);
            self.dones.push(d);
        } else {
            let (o, a, p) = (self.obs_dim, self.act_dim, self.pos);
            self.obs[p * o..(p + 1) * o].copy_from_slice(obs);
            self.actions[p * a..(p + 1) * a].copy_from_slice(action);
            self.rewards[p] = reward;
            self.next_obs[p * o..(p + 1) * o].copy_from_slice(next_obs);
            self.dones[p] = d;
        }
        self.pos = (self.pos + 1) % self.capacity;
        Ok(())
    }

    /// `batch` transitions drawn uniformly with replacement (as SB3's `ReplayBuffer.sample`).
    pub fn sample<R: Rng + ?Sized>(&self, batch: usize, rng: &mut R) -> Result<ReplayBatch> {
        if self.is_empty() {
            return Err(RlError::Shape("sampling an empty replay buffer".into()));
        }
        let (o, a) = (self.obs_dim, self.act_dim);
        let mut out = ReplayBatch {
            len: batch,
            obs: Vec::with_capacity(batch * o),
            actions: Vec::with_capacity(batch * a),
            rewards: Vec::with_capacity(batch),
            next_obs: Vec::with_capacity(batch * o),
            dones: Vec::with_capacity(batch),
        };
        let n = self.len();
        for _ in 0..batch {
            let k = rng.random_range(0..n);
            out.obs.extend_from_slice(&self.obs[k * o..(k + 1) * o]);
            out.actions
                .extend_from_slice(&self.actions[k * a..(k + 1) * a]);
            out.rewards.push(self.rewards[k]);
            out.next_obs
                .extend_from_slice(&self.next_obs[k * o..(k + 1) * o]);
            out.dones.push(self.dones[k]);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_around_and_samples_deterministically() {
        let mut b = ReplayBuffer::new(3, 2, 1).unwrap();
        for k in 0..5 {
            let x = k as f32;
            b.push(&[x, -x], &[x * 0.1], x, &[x + 1.0, 0.0], k % 2 == 0)
                .unwrap();
        }
        assert_eq!(b.len(), 3);
        // Slots 0 and 1 were overwritten by transitions 3 and 4; slot 2 holds transition 2.
        assert_eq!(b.rewards, vec![3.0, 4.0, 2.0]);
        assert_eq!(b.obs, vec![3.0, -3.0, 4.0, -4.0, 2.0, -2.0]);
        assert_eq!(b.dones, vec![0.0, 1.0, 1.0]);
        assert_eq!(b.pos, 2);
        let mut r1 = crate::nets::rng(9, 4);
        let mut r2 = crate::nets::rng(9, 4);
        let s1 = b.sample(64, &mut r1).unwrap();
        assert_eq!(s1, b.sample(64, &mut r2).unwrap());
        assert_ne!(s1, b.sample(64, &mut r1).unwrap());
        // Rows stay together, and every stored transition can be drawn.
        for i in 0..64 {
            let r = s1.rewards[i];
            assert_eq!(s1.obs[2 * i], r);
            assert_eq!(s1.next_obs[2 * i], r + 1.0);
            assert!((s1.actions[i] - r * 0.1).abs() < 1e-6);
            assert_eq!(s1.dones[i], if r as i32 % 2 == 0 { 1.0 } else { 0.0 });
        }
        for r in [2.0, 3.0, 4.0] {
            assert!(s1.rewards.contains(&r));
        }
        assert!(b.push(&[0.0], &[0.0], 0.0, &[0.0, 0.0], false).is_err());
        assert!(ReplayBuffer::new(0, 1, 1).is_err());
    }
}
