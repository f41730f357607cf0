//! SASRec (W.-C. Kang and J. McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018) as an
//! MTRec backbone, following the **official TensorFlow code** `kang205/SASRec` (`model.py`,
//! `modules.py`, `main.py`; `specs/backbones.md` §2.6) and adapted to score (history, shown item)
//! pairs (§4).
//!
//! ```text
//! x = (Emb(hist) · sqrt(d) + Emb_pos(0..L−1)) ; x = dropout(x) ⊙ m          m = 1[real item]
//! repeat num_blocks:
//!     q = LN(x)                                                             pre-LN query
//!     x = Attn(queries = q, keys = values = x) + q                          residual from q
//!     f = LN(x) ; x = (dropout(W2 · dropout(relu(W1 f + b1)) + b2) + f) ⊙ m
//! h = LN(x)[:, L−1]                                                         most recent position
//! e = Emb(target)                                                           tied, unscaled
//! features z = h ⊙ e   (so Σ z = <h, e>, the official `predict` score)
//! ```
//!
//! The attention ([`mtrec_nn::SoftmaxAttention`]) has Q/K/V projections with bias, no output
//! projection, `S = QKᵀ/sqrt(d/h)`, key and causal masks that *replace* scores with `−2^32+1`, and
//! a query mask after the softmax. LayerNorm eps 1e-8 (`modules.py::normalize`); all dense layers
//! and tables Glorot-uniform with zero biases (TF 1 defaults). The two kernel-size-1 `conv1d`s of
//! `feedforward` are dense layers `d → d → d`.
//!
//! # Input layout
//!
//! The official sequences are *left-padded* (padding first, most recent item in the last column):
//! our [`Align::Right`]. The model asks for fixed-width batches of `maxlen` columns
//! ([`Backbone::layout`]) and rejects a batch of another alignment. Because padded keys are masked,
//! padded queries are zeroed and positions are counted from the right (a width-`W` batch uses
//! positions `maxlen − W .. maxlen − 1`), a narrower batch gives exactly the same result; with
//! [`Config::pad_to_longest`] the model asks for batches padded only to their longest history,
//! which is much cheaper on short histories.
//!
//! # Parameters (names under the builder's prefix)
//!
//! `item_emb.weight` `[items, d_item]`, `cat_emb.weight` `[categories, d_cat]` (only with
//! [`TokenInput::ItemCategory`]), `pos_emb.weight` `[maxlen, d]`, and for block `i`:
//! `attention_layernorms.{i}.{weight,bias}`, `attention_layers.{i}.{query,key,value}.{weight,bias}`,
//! `forward_layernorms.{i}.{weight,bias}`, `forward_layers.{i}.{conv1,conv2}.{weight,bias}`; then
//! `last_layernorm.{weight,bias}` (the names of the endorsed PyTorch port `pmixer/SASRec.pytorch`,
//! with the fused `in_proj` split into `query`/`key`/`value`). Linear weights are `[out, in]`.
//!
//! # Deviations from the official code, and why
//!
//! * **Token = `[Emb_item ; Emb_cat]`** by default ([`TokenInput::ItemCategory`]; the item gets
//!   `d − ⌊d/2⌋` columns, the category `⌊d/2⌋`): the CTR backbones see the same item and category
//!   inputs. [`TokenInput::Item`] is the official item-only token.
//! * **Masks from the batch mask.** The official code derives the key mask from
//!   `sign(|Σ_features keys|)` and the query mask from the normalised queries. Keys at padded
//!   positions are exactly zero there (`x ⊙ m`), so its key mask equals the batch mask (up to a
//!   real key whose features sum to exactly 0); the query mask only touches padded rows, which the
//!   block zeroes afterwards anyway. The parity test's PyTorch reference uses the official
//!   derivation and agrees.
//! * **Head count rule:** if `num_heads` does not divide `d`, the largest count below it that does
//!   is used ([`mtrec_nn::heads_for`]); the official code would fail.
//! * **CTR scoring:** the backbone stops before the dot product; the head is a linear layer on
//!   `z = h ⊙ e_target` (`specs/backbones.md` §4), which contains the official score `Σ z` as the
//!   all-ones weight. The official BCE over sampled negatives, `l2_emb` and Adam β2 = 0.98 belong
//!   to the trainer.
//! * An empty history gives `h = β` of the last LayerNorm (every position is padding): defined,
//!   finite, the same for every such row.
//!
//! # Cost
//!
//! **Length groups** ([`Config::length_groups`], on by default): a row's features depend only on
//! its own real items (padded keys are masked, positions count from the right), so
//! [`SasRec::encode`] sorts the batch's rows into groups of similar history length
//! ([`mtrec_nn::plan_length_groups`], which minimises an estimate of the work plus a fixed cost
//! per group), runs each group padded only to its own longest history and puts the rows back in
//! order. Features and gradients equal those of one pass at the full width (tested to 1e-12 in
//! f64); only the dropout masks differ, since they are drawn per group. With Amazon's history
//! lengths (median 4) a training step at batch 1024 does about a sixth of the fixed-width work.
//! On the CPU only: on a GPU the groups' extra kernels and host round trip cost more than the
//! padding they save (an H100 trained the default model at 5,608 samples/s in groups and 18,429
//! in one pass), so there the batch runs in one pass.
//!
//! Only the last column is read, so the last block runs its query side (LayerNorm, attention
//! row, feed-forward) for that column alone; keys and values still cover the whole history. The
//! result is the same as running the full block (the parity test covers it). Forward + backward of
//! the default model (d = 50, L = 50, Amazon Electronics vocabulary) with a CTR head at B = 1024
//! took 0.9–1.2 s in the best runs on the shared 2-core development machine (more under load;
//! `examples/bench_sasrec.rs`, release), against ≈ 3.5 s before these savings and
//! `candle_nn::Linear`'s slow bias gradient were avoided. 28.5 K dense parameters, ≈ 3.5 MFLOP per
//! sample forward for the full-sequence model.

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;
use mtrec_nn::transformer::{
    attention_mask, check_dropout, check_layout, dropout, heads_for, FfnActivation, LinearInit,
    PointwiseFfn, PositionalEmbedding, SoftmaxAttention, TokenEmbedding,
};
use mtrec_nn::{
    plan_length_groups, Align, Backbone, Batch, EmbeddingInit, Features, LayerNorm, Layout,
    LengthGroup, PadPolicy, Vocab,
};
use serde::{Deserialize, Serialize};

pub use mtrec_nn::transformer::TokenInput;

/// The registry name.
pub const NAME: &str = "sasrec";

/// The fixed cost of one more length group, as the cost of that many one-item rows: a group adds
/// about a hundred small ops forward and backward (≈ 1.5 ms on 2 cores), a one-item row costs
/// ≈ 15 µs (a training step at batch 1024, width 50 takes ≈ 0.85 s).
const GROUP_OVERHEAD_ROWS: f64 = 96.0;

/// SASRec hyper-parameters; the defaults are the official ones (`kang205/SASRec` `main.py`,
/// Amazon Beauty / Games settings). Field names follow the official command-line flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Token and hidden width `d` (`--hidden_units`, official 50).
    pub hidden_units: usize,
    /// Number of self-attention blocks (`--num_blocks`, official 2).
    pub num_blocks: usize,
    /// Requested attention heads (`--num_heads`, official 1); reduced to the largest count that
    /// divides `hidden_units` if needed ([`mtrec_nn::heads_for`]).
    pub num_heads: usize,
    /// History length the model sees, and the size of the position table (`--maxlen`, official 50;
    /// 200 for MovieLens-1M).
    pub maxlen: usize,
    /// Dropout on the embeddings, attention weights and both feed-forward layers
    /// (`--dropout_rate`, official 0.5; 0.2 for MovieLens-1M). Active only when `train`.
    pub dropout_rate: f32,
    /// LayerNorm epsilon (`modules.py::normalize`, 1e-8).
    pub layer_norm_eps: f64,
    /// What a token is made of (default: item and category embeddings; `item` = official).
    pub token: TokenInput,
    /// Ask for batches padded to their longest history instead of `maxlen` (same results, less
    /// work; default false = the official fixed width).
    pub pad_to_longest: bool,
    /// Run a batch as groups of rows of similar history length, each padded only to its own
    /// longest history ([`mtrec_nn::plan_length_groups`]): the same features (padding is masked
    /// and positions count from the right), a fraction of the work on short histories. Default
    /// true; applies on the CPU only (on a GPU one padded pass is faster). False runs the whole
    /// batch at its width, as the official code does.
    pub length_groups: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            hidden_units: 50,
            num_blocks: 2,
            num_heads: 1,
            maxlen: 50,
            dropout_rate: 0.5,
            layer_norm_eps: 1e-8,
            token: TokenInput::ItemCategory,
            pad_to_longest: false,
            length_groups: true,
        }
    }
}

/// One pre-LN block of `model.py`.
#[derive(Debug, Clone)]
struct Block {
    attn_ln: LayerNorm,
    attn: SoftmaxAttention,
    ffn_ln: LayerNorm,
    ffn: PointwiseFfn,
}

impl Block {
    /// `model.py`'s block for the query rows `rows` `[B, Lq, d]` of the sequence `x` `[B, L, d]`
    /// (keys and values come from all of `x`); `mask` `[B, 1, Lq, L]` (causal + key), `m` `[B, Lq]`
    /// the query rows' padding mask.
    fn forward(
        &self,
        rows: &Tensor,
        x: &Tensor,
        mask: &Tensor,
        m: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let q = self.attn_ln.forward(rows)?; // pre-LN query
        let x = (self.attn.forward(&q, x, mask, Some(m), train)? + &q)?; // residual from q
        let f = self.ffn_ln.forward(&x)?;
        (self.ffn.forward(&f, train)? + &f)?.broadcast_mul(&m.unsqueeze(2)?)
    }
}

/// The SASRec trunk; see the crate docs.
#[derive(Debug, Clone)]
pub struct SasRec {
    cfg: Config,
    heads: usize,
    dtype: DType,
    tokens: TokenEmbedding,
    pos: PositionalEmbedding,
    blocks: Vec<Block>,
    last_ln: LayerNorm,
}

impl SasRec {
    /// Builds the trunk with the official initialisation (Glorot-uniform tables and kernels, zero
    /// biases, LayerNorm γ = 1, β = 0). Errors on an unusable config (zero sizes, dropout outside
    /// `[0, 1)`, a token too narrow for its parts).
    pub fn new(cfg: &Config, vocab: Vocab, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden_units;
        if cfg.maxlen == 0 {
            candle_core::bail!("sasrec: maxlen must be at least 1");
        }
        check_dropout("sasrec dropout_rate", cfg.dropout_rate)?;
        let heads = heads_for(d, cfg.num_heads)?;
        let init = EmbeddingInit::GlorotUniform;
        let tokens = TokenEmbedding::new(
            cfg.token,
            vocab,
            d,
            init,
            ("item_emb", "cat_emb"),
            vb.clone(),
        )?;
        let pos = PositionalEmbedding::new(cfg.maxlen, d, init, vb.pp("pos_emb"))?;
        let p = cfg.dropout_rate;
        let blocks = (0..cfg.num_blocks)
            .map(|i| {
                Ok(Block {
                    attn_ln: LayerNorm::new(
                        d,
                        cfg.layer_norm_eps,
                        vb.pp("attention_layernorms").pp(i),
                    )?,
                    attn: SoftmaxAttention::new(
                        d,
                        heads,
                        p,
                        LinearInit::GlorotUniform,
                        vb.pp("attention_layers").pp(i),
                    )?,
                    ffn_ln: LayerNorm::new(
                        d,
                        cfg.layer_norm_eps,
                        vb.pp("forward_layernorms").pp(i),
                    )?,
                    ffn: PointwiseFfn::new(
                        d,
                        d,
                        FfnActivation::Relu,
                        LinearInit::GlorotUniform,
                        (p, p),
                        ("conv1", "conv2"),
                        vb.pp("forward_layers").pp(i),
                    )?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let last_ln = LayerNorm::new(d, cfg.layer_norm_eps, vb.pp("last_layernorm"))?;
        Ok(Self {
            cfg: cfg.clone(),
            heads,
            dtype: vb.dtype(),
            tokens,
            pos,
            blocks,
            last_ln,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The number of attention heads in use (see [`Config::num_heads`]).
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// The sequence representation `h` `[B, d]`: the last block's output at the most recent
    /// position, after the final LayerNorm. With [`Config::length_groups`] the rows run in groups
    /// of similar length, each at its own width, and come back in the batch's order.
    pub fn encode(&self, batch: &Batch, train: bool) -> Result<Tensor> {
        let maxlen = self.cfg.maxlen;
        check_layout(
            NAME,
            batch,
            Align::Right,
            |w| (1..=maxlen).contains(&w),
            &format!("1 to maxlen = {maxlen} columns"),
        )?;
        let groups = self.length_groups(batch)?;
        if let [only] = groups.as_slice() {
            if only.width == batch.width {
                return self.encode_padded(batch, train);
            }
        }
        let mut parts = Vec::with_capacity(groups.len());
        let mut position = vec![0u32; batch.size];
        let mut next = 0u32;
        for g in &groups {
            parts.push(self.encode_padded(&batch.subset(&g.rows, g.width)?, train)?);
            for &r in &g.rows {
                position[r as usize] = next;
                next += 1;
            }
        }
        let order = Tensor::new(position, batch.users.device())?;
        Tensor::cat(&parts, 0)?.index_select(&order, 0)
    }

    /// How [`encode`](Self::encode) splits `batch`: groups of rows by history length, each run
    /// at its own width (one group of all rows at the batch width when
    /// [`Config::length_groups`] is off, the batch has fewer than two rows or is not on the
    /// CPU). The plan reads
    /// `batch.lengths`, which must count each row's real items (the [`Batch`] contract): a row
    /// whose length understates its history would lose its oldest items.
    pub fn length_groups(&self, batch: &Batch) -> Result<Vec<LengthGroup>> {
        // Off the CPU each group costs a host round trip (the plan reads the lengths) and its
        // own run of small kernels, which outweighs the padding saved: on an H100 the default
        // model trained at 5,608 samples/s in groups against 18,429 in one padded pass.
        if !self.cfg.length_groups || batch.size < 2 || !batch.lengths.device().is_cpu() {
            return Ok(vec![LengthGroup {
                rows: (0..batch.size as u32).collect(),
                width: batch.width,
            }]);
        }
        let lengths = batch.lengths.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        Ok(plan_length_groups(
            &lengths,
            batch.width,
            |w| self.row_cost(w),
            GROUP_OVERHEAD_ROWS * self.row_cost(1),
        ))
    }

    /// The relative work of one row at width `w` (multiply-adds over `d`): every block but the
    /// last runs projections (`5d`) and attention (`2w`) for all `w` tokens, the last one only
    /// projects keys and values (`2d`).
    fn row_cost(&self, w: usize) -> f64 {
        let (d, w) = (self.cfg.hidden_units as f64, w as f64);
        let full = self.cfg.num_blocks.saturating_sub(1) as f64;
        w * (full * (5.0 * d + 2.0 * w) + 2.0 * d) + 1.0
    }

    /// [`encode`](Self::encode) of the whole batch at its width (checked by the caller).
    fn encode_padded(&self, batch: &Batch, train: bool) -> Result<Tensor> {
        let maxlen = self.cfg.maxlen;
        let l = batch.width;
        let d = self.cfg.hidden_units;
        // The [B, L] padding mask.
        let m = batch.mask.to_dtype(self.dtype)?;
        // model.py: seq = Emb(seq)·sqrt(d) + pos; dropout; ⊙ mask. Positions count from the right.
        let x = self.pos.add_to(
            &(self.tokens.forward(&batch.hist_items, &batch.hist_cats)? * (d as f64).sqrt())?,
            maxlen - l,
        )?;
        let mut x = dropout(&x, self.cfg.dropout_rate, train)?.broadcast_mul(&m.unsqueeze(2)?)?;
        let mask = attention_mask(&m, true)?; // [B, 1, L, L]
        let n = self.blocks.len();
        for (i, blk) in self.blocks.iter().enumerate() {
            if i + 1 < n {
                x = blk.forward(&x, &x, &mask, &m, train)?;
            } else {
                // Only the last position is read, and in the last block every position's output
                // depends on its own query row only: run the queries of column L−1 against all
                // keys (same values as the full block, a fraction of the work).
                let last = |t: &Tensor, dim: usize| t.narrow(dim, l - 1, 1);
                x = blk.forward(&last(&x, 1)?, &x, &last(&mask, 2)?, &last(&m, 1)?, train)?;
            }
        }
        self.last_ln
            .forward(&x.narrow(1, x.dim(1)? - 1, 1)?.squeeze(1)?)
    }

    /// The shown item's embedding `[B, d]` from the same (unscaled) tables as the tokens.
    pub fn target_embedding(&self, batch: &Batch) -> Result<Tensor> {
        self.tokens.forward(&batch.target_items, &batch.target_cats)
    }
}

impl Backbone for SasRec {
    fn name(&self) -> &str {
        NAME
    }

    fn feature_dim(&self) -> usize {
        self.cfg.hidden_units
    }

    fn layout(&self) -> Layout {
        Layout {
            max_history: self.cfg.maxlen,
            pad: if self.cfg.pad_to_longest {
                PadPolicy::Longest
            } else {
                PadPolicy::Fixed
            },
            align: Align::Right,
        }
    }

    /// `z = h ⊙ e_target` `[B, d]`.
    fn forward(&self, batch: &Batch, train: bool) -> Result<Features> {
        let h = self.encode(batch, train)?;
        let e = self.target_embedding(batch)?;
        Ok(Features::plain((h * e)?))
    }
}
