//! Padded tensors from states. Histories are gathered from the dataset's flat arrays into reusable
//! host buffers and moved to the device in one copy per tensor.

use candle_core::{Device, Result, Tensor};
use mtrec_data::PreparedDataset;
pub use mtrec_nn::batch::{Align, Batch, HostBatch, Layout, PadPolicy};

use crate::{State, Transition};

/// A batch of transitions: the states, the next states, the actions and the done flags.
#[derive(Debug, Clone)]
pub struct TransitionBatch {
    pub state: Batch,
    pub next: Batch,
    /// `[B]` u32 actions (1 = P, 0 = N).
    pub actions: Tensor,
    /// `[B]` f32, 1 where the trajectory ends.
    pub done: Tensor,
}

/// Builds batches from one dataset.
#[derive(Debug, Clone)]
pub struct Batcher<'a> {
    ds: &'a PreparedDataset,
    max_history: usize,
    pad: PadPolicy,
    align: Align,
}

impl<'a> Batcher<'a> {
    /// A batcher with the dataset's own history cap, padding to the longest history, left-aligned.
    pub fn new(ds: &'a PreparedDataset) -> Self {
        Batcher {
            ds,
            max_history: ds.manifest.rules.prepare.max_history.max(1),
            pad: PadPolicy::Longest,
            align: Align::Left,
        }
    }

    /// Takes cap, padding and alignment from a model's [`Layout`].
    pub fn with_layout(self, layout: Layout) -> Self {
        self.with_max_history(layout.max_history)
            .with_pad(layout.pad)
            .with_align(layout.align)
    }

    /// Overrides the history cap.
    pub fn with_max_history(mut self, max_history: usize) -> Self {
        self.max_history = max_history.max(1);
        self
    }

    /// Sets the padding policy.
    pub fn with_pad(mut self, pad: PadPolicy) -> Self {
        self.pad = pad;
        self
    }

    /// Sets the alignment.
    pub fn with_align(mut self, align: Align) -> Self {
        self.align = align;
        self
    }

    /// The history cap in use.
    pub fn max_history(&self) -> usize {
        self.max_history
    }

    /// Padded tensors of `states` on `device`.
    pub fn batch(&self, states: &[State], device: &Device) -> Result<Batch> {
        self.build(
            states.len(),
            states
                .iter()
                .map(|s| (*s, s.item(self.ds), s.label() as f32)),
            device,
        )
    }

    /// Padded tensors that pair each state's history with an arbitrary target item (for ranking
    /// candidates the user was never shown). The item's category comes from the dataset; the label
    /// is 1 when the item is the step's logged positive, else 0. The state's `positive` flag is not
    /// used. Items must be ids of the dataset (`1..item_vocab`).
    pub fn batch_items(&self, rows: &[(State, u32)], device: &Device) -> Result<Batch> {
        let vocab = self.ds.item_category().len();
        if let Some((_, bad)) = rows
            .iter()
            .find(|(_, it)| *it == 0 || *it as usize >= vocab)
        {
            candle_core::bail!("item {bad} is not an item of the dataset (ids 1..{vocab})");
        }
        self.build(
            rows.len(),
            rows.iter().map(|&(s, item)| {
                let logged = self.ds.sequence(s.user as usize)[s.step as usize];
                (s, item, if item == logged { 1.0 } else { 0.0 })
            }),
            device,
        )
    }

    /// Padded tensors of `(state, target item, label)` rows.
    fn build(
        &self,
        b: usize,
        rows: impl Iterator<Item = (State, u32, f32)> + Clone,
        device: &Device,
    ) -> Result<Batch> {
        let width = match self.pad {
            PadPolicy::Fixed => self.max_history,
            PadPolicy::Longest => rows
                .clone()
                .map(|(s, _, _)| (s.step as usize).min(self.max_history))
                .max()
                .unwrap_or(0)
                .max(1),
        };
        let cats = self.ds.item_category();
        let mut h = HostBatch {
            users: Vec::with_capacity(b),
            hist_items: vec![0u32; b * width],
            hist_cats: vec![0u32; b * width],
            hist_neg_items: vec![0u32; b * width],
            hist_neg_cats: vec![0u32; b * width],
            mask: vec![0f32; b * width],
            lengths: Vec::with_capacity(b),
            target_items: Vec::with_capacity(b),
            target_cats: Vec::with_capacity(b),
            labels: Vec::with_capacity(b),
        };
        for (row, (s, item, label)) in rows.enumerate() {
            let hist = s.history(self.ds, self.max_history.min(width));
            // The negatives logged at the same steps as the history items.
            let t = s.step as usize;
            let negs = &self.ds.negatives(s.user as usize)[t - hist.len()..t];
            let start = match self.align {
                Align::Left => row * width,
                Align::Right => row * width + width - hist.len(),
            };
            h.hist_items[start..start + hist.len()].copy_from_slice(hist);
            h.hist_neg_items[start..start + hist.len()].copy_from_slice(negs);
            for (k, (&it, &neg)) in hist.iter().zip(negs).enumerate() {
                h.hist_cats[start + k] = cats[it as usize];
                h.hist_neg_cats[start + k] = cats[neg as usize];
                h.mask[start + k] = 1.0;
            }
            h.users.push(s.user);
            h.lengths.push(hist.len() as u32);
            h.target_items.push(item);
            h.target_cats.push(cats[item as usize]);
            h.labels.push(label);
        }
        h.to_device(width, self.align, device)
    }

    /// Tensors of a list of transitions.
    pub fn transitions(&self, ts: &[Transition], device: &Device) -> Result<TransitionBatch> {
        let states: Vec<State> = ts.iter().map(|t| t.state).collect();
        let next: Vec<State> = ts.iter().map(|t| t.next).collect();
        Ok(TransitionBatch {
            state: self.batch(&states, device)?,
            next: self.batch(&next, device)?,
            actions: Tensor::from_vec(
                ts.iter().map(|t| t.action).collect::<Vec<_>>(),
                ts.len(),
                device,
            )?,
            done: Tensor::from_vec(
                ts.iter()
                    .map(|t| if t.done { 1f32 } else { 0.0 })
                    .collect::<Vec<_>>(),
                ts.len(),
                device,
            )?,
        })
    }
}
