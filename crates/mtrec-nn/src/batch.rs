//! The input contract between the data side and every model: padded `[B, T]` histories plus the
//! shown item, as candle tensors. `mtrec-mdp` builds these from a prepared dataset; models only
//! read them, so a user can also build one by hand for their own data.

use candle_core::{Device, Result, Tensor};

/// How wide a batch's history tensors are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PadPolicy {
    /// Always `max_history` columns (fixed shapes; LinRec needs this because its attention sees
    /// padded positions).
    Fixed,
    /// As many columns as the longest history in the batch (what DIN's and DIEN's input code does);
    /// much less work when histories are short.
    Longest,
}

/// Where a history sits inside its padded row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Align {
    /// Oldest item in column 0, padding at the end (DIN, DIEN, RecBole models).
    Left,
    /// Most recent item in the last column, padding at the start (SASRec's official layout).
    Right,
}

/// The batch layout a model wants. The trainer asks the model and configures its batcher with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Layout {
    pub max_history: usize,
    pub pad: PadPolicy,
    pub align: Align,
}

impl Default for Layout {
    /// DIEN's: at most 100 items, padded to the batch's longest, oldest first.
    fn default() -> Self {
        Layout {
            max_history: 100,
            pad: PadPolicy::Longest,
            align: Align::Left,
        }
    }
}

/// Tensors of a batch of samples `(user, history, shown item, label)`. `B` = batch size, `T` =
/// padded history length. Ids are `u32` with 0 = padding.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[B]` u32 user ids (1-based).
    pub users: Tensor,
    /// `[B, T]` u32 item ids of the history.
    pub hist_items: Tensor,
    /// `[B, T]` u32 category ids of the history.
    pub hist_cats: Tensor,
    /// `[B, T]` u32 ids of an item the user did *not* pick at each history position (the logged
    /// step's negative); DIEN's auxiliary loss contrasts them with the real next item.
    pub hist_neg_items: Tensor,
    /// `[B, T]` u32 categories of `hist_neg_items`.
    pub hist_neg_cats: Tensor,
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
    /// How the history columns are laid out.
    pub align: Align,
}

/// Host-side columns of a [`Batch`], row-major, for building one by hand.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostBatch {
    pub users: Vec<u32>,
    pub hist_items: Vec<u32>,
    pub hist_cats: Vec<u32>,
    pub hist_neg_items: Vec<u32>,
    pub hist_neg_cats: Vec<u32>,
    pub mask: Vec<f32>,
    pub lengths: Vec<u32>,
    pub target_items: Vec<u32>,
    pub target_cats: Vec<u32>,
    pub labels: Vec<f32>,
}

impl HostBatch {
    /// Moves the columns to `device` as a `[B, width]` batch. Fails (candle shape error) if a
    /// column's length does not match `B` or `B * width`.
    pub fn to_device(self, width: usize, align: Align, device: &Device) -> Result<Batch> {
        let b = self.users.len();
        Ok(Batch {
            users: Tensor::from_vec(self.users, b, device)?,
            hist_items: Tensor::from_vec(self.hist_items, (b, width), device)?,
            hist_cats: Tensor::from_vec(self.hist_cats, (b, width), device)?,
            hist_neg_items: Tensor::from_vec(self.hist_neg_items, (b, width), device)?,
            hist_neg_cats: Tensor::from_vec(self.hist_neg_cats, (b, width), device)?,
            mask: Tensor::from_vec(self.mask, (b, width), device)?,
            lengths: Tensor::from_vec(self.lengths, b, device)?,
            target_items: Tensor::from_vec(self.target_items, b, device)?,
            target_cats: Tensor::from_vec(self.target_cats, b, device)?,
            labels: Tensor::from_vec(self.labels, b, device)?,
            size: b,
            width,
            align,
        })
    }
}

/// Vocabulary sizes a model's embedding tables need (largest id + 1; id 0 is padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Vocab {
    pub users: usize,
    pub items: usize,
    pub categories: usize,
}
