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

impl Batch {
    /// The rows `rows` (in that order) of this batch, keeping only the `width` history columns
    /// nearest the history's anchor: the last `width` for [`Align::Right`], the first `width` for
    /// [`Align::Left`]. Meant for rows whose histories fit in `width` (see
    /// [`plan_length_groups`]); a longer history is cut like the cap cuts it. Errors on a row out
    /// of range, an empty `rows`, or a width of 0 or above the batch's.
    pub fn subset(&self, rows: &[u32], width: usize) -> Result<Batch> {
        if rows.is_empty() {
            candle_core::bail!("batch subset: no rows");
        }
        if width == 0 || width > self.width {
            candle_core::bail!(
                "batch subset: width {width} for a batch of width {}",
                self.width
            );
        }
        if let Some(&r) = rows.iter().find(|&&r| r as usize >= self.size) {
            candle_core::bail!("batch subset: row {r} of a batch of {}", self.size);
        }
        let idx = Tensor::new(rows, self.users.device())?;
        let first = match self.align {
            Align::Right => self.width - width,
            Align::Left => 0,
        };
        let rows_of = |t: &Tensor| t.index_select(&idx, 0);
        let cols_of = |t: &Tensor| {
            t.index_select(&idx, 0)?
                .narrow(1, first, width)?
                .contiguous()
        };
        Ok(Batch {
            users: rows_of(&self.users)?,
            hist_items: cols_of(&self.hist_items)?,
            hist_cats: cols_of(&self.hist_cats)?,
            hist_neg_items: cols_of(&self.hist_neg_items)?,
            hist_neg_cats: cols_of(&self.hist_neg_cats)?,
            mask: cols_of(&self.mask)?,
            lengths: rows_of(&self.lengths)?.clamp(0u32, width as u32)?,
            target_items: rows_of(&self.target_items)?,
            target_cats: rows_of(&self.target_cats)?,
            labels: rows_of(&self.labels)?,
            size: rows.len(),
            width,
            align: self.align,
        })
    }
}

/// Rows of a batch to run together at one width: see [`plan_length_groups`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LengthGroup {
    /// Batch rows, ascending.
    pub rows: Vec<u32>,
    /// The longest history among them (at least 1).
    pub width: usize,
}

/// Splits a batch into groups of similar history length, each to be padded only to its own
/// longest history, for models whose result for a row does not depend on how much padding it has
/// or on the other rows (SASRec: masked keys, positions counted from the right).
///
/// `lengths` are the rows' history lengths (capped at `max_width`; 0 counts as 1, since a model
/// needs at least one column). `row_cost(w)` is the work of one row at width `w` and
/// `group_cost` the fixed work of one more group (kernel launches, small-matrix overheads), in the
/// same unit. The plan minimises `Σ_groups (n_g · row_cost(w_g) + group_cost)` exactly (a dynamic
/// programme over the distinct lengths, so at most `max_width²` steps). Groups come in ascending
/// width; every row is in exactly one group.
pub fn plan_length_groups(
    lengths: &[u32],
    max_width: usize,
    row_cost: impl Fn(usize) -> f64,
    group_cost: f64,
) -> Vec<LengthGroup> {
    let max_width = max_width.max(1);
    let width_of = |l: u32| (l as usize).clamp(1, max_width);
    // Row counts by width 1..=max_width, and the distinct widths present.
    let mut count = vec![0usize; max_width + 1];
    for &l in lengths {
        count[width_of(l)] += 1;
    }
    let widths: Vec<usize> = (1..=max_width).filter(|&w| count[w] > 0).collect();
    let k = widths.len();
    if k == 0 {
        return Vec::new();
    }
    // best[j]: least cost of covering the j smallest distinct widths; cut[j]: where its last
    // group starts.
    let mut best = vec![0.0f64; k + 1];
    let mut cut = vec![0usize; k + 1];
    for j in 1..=k {
        let w = widths[j - 1];
        let (mut rows, mut choice) = (0usize, (f64::INFINITY, 0));
        for i in (1..=j).rev() {
            rows += count[widths[i - 1]];
            let c = best[i - 1] + rows as f64 * row_cost(w) + group_cost;
            if c < choice.0 {
                choice = (c, i - 1);
            }
        }
        best[j] = choice.0;
        cut[j] = choice.1;
    }
    // Walk the cuts back into width ranges (lo, hi], then hand out the rows.
    let mut bounds = Vec::new();
    let mut j = k;
    while j > 0 {
        let i = cut[j];
        bounds.push((if i == 0 { 0 } else { widths[i - 1] }, widths[j - 1]));
        j = i;
    }
    bounds.reverse();
    let mut group_of = vec![0usize; max_width + 1];
    for (g, &(lo, hi)) in bounds.iter().enumerate() {
        for slot in &mut group_of[lo + 1..=hi] {
            *slot = g;
        }
    }
    let mut groups: Vec<LengthGroup> = bounds
        .iter()
        .map(|&(_, hi)| LengthGroup {
            rows: Vec::new(),
            width: hi,
        })
        .collect();
    for (r, &l) in lengths.iter().enumerate() {
        groups[group_of[width_of(l)]].rows.push(r as u32);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_groups_by_cost() {
        let tokens = |w: usize| w as f64;
        // No overhead: every distinct length is its own group.
        let g = plan_length_groups(&[3, 1, 3, 5, 0], 5, tokens, 0.0);
        assert_eq!(
            g,
            vec![
                LengthGroup {
                    rows: vec![1, 4],
                    width: 1
                },
                LengthGroup {
                    rows: vec![0, 2],
                    width: 3
                },
                LengthGroup {
                    rows: vec![3],
                    width: 5
                },
            ]
        );
        // A huge overhead: one group at the longest width.
        let g = plan_length_groups(&[3, 1, 3, 5, 0], 5, tokens, 1e9);
        assert_eq!(
            g,
            vec![LengthGroup {
                rows: vec![0, 1, 2, 3, 4],
                width: 5
            }]
        );
        // Hand-computed middle case, lengths 1×4, 2×1, 10×4, overhead 5: {1,2}@2 + {10}@10 costs
        // 10 + 5 + 40 + 5 = 60; {1}@1, {2}@2, {10}@10 costs 4 + 2 + 40 + 15 = 61; all at 10 costs
        // 90 + 5 = 95.
        let lengths = [1, 1, 1, 1, 2, 10, 10, 10, 10];
        let g = plan_length_groups(&lengths, 10, tokens, 5.0);
        assert_eq!(g.iter().map(|g| g.width).collect::<Vec<_>>(), vec![2, 10]);
        assert_eq!(g[0].rows, vec![0, 1, 2, 3, 4]);
        // Lengths above the cap count as the cap; empty input, empty plan.
        let g = plan_length_groups(&[7, 2], 4, tokens, 0.0);
        assert_eq!(g.last().map(|g| g.width), Some(4));
        assert!(plan_length_groups(&[], 4, tokens, 0.0).is_empty());
    }

    #[test]
    fn subset_keeps_the_history_side() {
        let dev = Device::Cpu;
        let host = HostBatch {
            users: vec![1, 2, 3],
            hist_items: vec![0, 0, 7, 0, 8, 9, 4, 5, 6],
            hist_cats: vec![0, 0, 1, 0, 1, 1, 1, 1, 1],
            hist_neg_items: vec![0; 9],
            hist_neg_cats: vec![0; 9],
            mask: vec![0., 0., 1., 0., 1., 1., 1., 1., 1.],
            lengths: vec![1, 2, 3],
            target_items: vec![11, 12, 13],
            target_cats: vec![1, 1, 1],
            labels: vec![1., 0., 1.],
        };
        let b = host.to_device(3, Align::Right, &dev).unwrap();
        let s = b.subset(&[1, 0], 2).unwrap();
        assert_eq!(s.size, 2);
        assert_eq!(s.width, 2);
        assert_eq!(
            s.hist_items.to_vec2::<u32>().unwrap(),
            vec![vec![8, 9], vec![0, 7]]
        );
        assert_eq!(s.users.to_vec1::<u32>().unwrap(), vec![2, 1]);
        assert_eq!(s.target_items.to_vec1::<u32>().unwrap(), vec![12, 11]);
        assert!(b.subset(&[3], 2).is_err());
        assert!(b.subset(&[0], 4).is_err());
        assert!(b.subset(&[], 2).is_err());
        let left = HostBatch {
            hist_items: vec![7, 0, 0, 8, 9, 0, 4, 5, 6],
            ..b_host()
        }
        .to_device(3, Align::Left, &dev)
        .unwrap();
        let s = left.subset(&[2], 1).unwrap();
        assert_eq!(s.hist_items.to_vec2::<u32>().unwrap(), vec![vec![4]]);
        assert_eq!(s.lengths.to_vec1::<u32>().unwrap(), vec![1]);
    }

    fn b_host() -> HostBatch {
        HostBatch {
            users: vec![1, 2, 3],
            hist_items: vec![0; 9],
            hist_cats: vec![0; 9],
            hist_neg_items: vec![0; 9],
            hist_neg_cats: vec![0; 9],
            mask: vec![0.; 9],
            lengths: vec![1, 2, 3],
            target_items: vec![11, 12, 13],
            target_cats: vec![1, 1, 1],
            labels: vec![1., 0., 1.],
        }
    }
}
