//! Padded tensors from states. Histories are gathered from the dataset's flat arrays into reusable
//! host buffers and moved to the device in one copy per tensor.

use candle_core::{Device, Result, Tensor};
use mtrec_data::PreparedDataset;

use crate::{State, Transition};

/// How wide a batch's history tensors are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadPolicy {
    /// Always `max_history` columns (fixed shapes).
    Fixed,
    /// As many columns as the longest history in the batch (what DIN's and DIEN's input code does);
    /// much less work when histories are short.
    Longest,
}

/// Where a history sits inside its padded row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Oldest item in column 0, padding at the end (DIN, DIEN).
    Left,
    /// Most recent item in the last column, padding at the start (SASRec-style models).
    Right,
}

/// Tensors of a batch of states. `B` = batch size, `T` = padded history length.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[B, T]` u32 item ids of the history, 0 = padding.
    pub hist_items: Tensor,
    /// `[B, T]` u32 category ids of the history, 0 = padding.
    pub hist_cats: Tensor,
    /// `[B, T]` f32, 1 for real history positions, 0 for padding.
    pub mask: Tensor,
    /// `[B]` u32 true history lengths (after the cap).
    pub lengths: Tensor,
    /// `[B]` u32 shown item ids.
    pub target_items: Tensor,
    /// `[B]` u32 shown item categories.
    pub target_cats: Tensor,
    /// `[B]` f32 labels: 1 for the logged positive, 0 for the negative.
    pub labels: Tensor,
    /// B.
    pub size: usize,
    /// T.
    pub width: usize,
}

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
        let b = states.len();
        let width = match self.pad {
            PadPolicy::Fixed => self.max_history,
            PadPolicy::Longest => states
                .iter()
                .map(|s| (s.step as usize).min(self.max_history))
                .max()
                .unwrap_or(0)
                .max(1),
        };
        let cats = self.ds.item_category();
        let mut hist_items = vec![0u32; b * width];
        let mut hist_cats = vec![0u32; b * width];
        let mut mask = vec![0f32; b * width];
        let mut lengths = Vec::with_capacity(b);
        let mut target_items = Vec::with_capacity(b);
        let mut target_cats = Vec::with_capacity(b);
        let mut labels = Vec::with_capacity(b);
        for (row, s) in states.iter().enumerate() {
            let hist = s.history(self.ds, self.max_history.min(width));
            let start = match self.align {
                Align::Left => row * width,
                Align::Right => row * width + width - hist.len(),
            };
            hist_items[start..start + hist.len()].copy_from_slice(hist);
            for (k, &it) in hist.iter().enumerate() {
                hist_cats[start + k] = cats[it as usize];
                mask[start + k] = 1.0;
            }
            lengths.push(hist.len() as u32);
            let item = s.item(self.ds);
            target_items.push(item);
            target_cats.push(cats[item as usize]);
            labels.push(s.label() as f32);
        }
        Ok(Batch {
            hist_items: Tensor::from_vec(hist_items, (b, width), device)?,
            hist_cats: Tensor::from_vec(hist_cats, (b, width), device)?,
            mask: Tensor::from_vec(mask, (b, width), device)?,
            lengths: Tensor::from_vec(lengths, b, device)?,
            target_items: Tensor::from_vec(target_items, b, device)?,
            target_cats: Tensor::from_vec(target_cats, b, device)?,
            labels: Tensor::from_vec(labels, b, device)?,
            size: b,
            width,
        })
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
