//! Transformer pieces shared by the self-attentive sequence backbones (`specs/backbones.md` §2.6,
//! §2.7, §7 item 8):
//!
//! * [`SoftmaxAttention`]: SASRec's multi-head scaled dot-product attention as written in the
//!   official TensorFlow code (`kang205/SASRec`, `modules.py::multihead_attention`): separate
//!   query and key/value inputs, Q/K/V projections with bias, **no output projection**, key +
//!   causal masking by *replacing* scores with `-2^32 + 1`, a query mask after the softmax.
//! * [`LinearAttention`]: LinRec's L2-normalised linear attention
//!   (`Applied-Machine-Learning-Lab/LinRec`, `layers.py::MultiHeadAttention`): `elu` (alpha 1),
//!   per-token L2 normalisation of the query rows and the key rows of each head, then
//!   `Qn · (Knᵀ · V) / sqrt(d_h)`; no mask, no softmax; with RecBole's output projection `dense`.
//! * [`PointwiseFfn`]: the position-wise feed-forward `fc2(act(fc1 x))` with ReLU (SASRec's
//!   kernel-size-1 convolutions) or erf-GELU (RecBole).
//! * [`PositionalEmbedding`], [`TokenEmbedding`] (item ids, optionally concatenated with category
//!   ids: the CTR adaptation of `specs/backbones.md` §4), [`attention_mask`], [`gather_rows`],
//!   [`last_positions`], [`heads_for`] and [`check_layout`].
//! * [`Dense`]: the dense layer all of them use; same parameters and values as
//!   `candle_nn::Linear`, but 1.3–1.6× faster forward + backward on `[1024, 50, d]` inputs on the
//!   CPU (d = 50 / 128).
//!
//! All of it is differentiable (no `candle_nn::LayerNorm`, no `softmax_last_dim`); the tests check
//! every layer against central differences in f64.
//!
//! Heads are laid out like the reference codes: a `[B, L, d]` projection is viewed as
//! `[B, L, h, d_h]` and head `i` owns features `i·d_h .. (i+1)·d_h` (TensorFlow's `tf.split` on the
//! last axis and PyTorch's `view(.., h, d_h)` agree on this).

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::batch::{Align, Batch, Vocab};
use crate::dense::{dense, expand_rows, Dense};
use crate::embedding::{Embedding, EmbeddingConfig, EmbeddingInit};
use crate::fused_pointwise::PointwiseAct;
use crate::mlp::glorot_linear;
use crate::norm::{masked_softmax_with_fill, LayerNorm};

/// The score the SASRec (and DIN/DIEN) reference codes write into masked attention positions:
/// `-2^32 + 1`. A finite fill keeps a fully masked row finite (uniform) instead of NaN.
pub const TF_MASK_FILL: f64 = -4_294_967_295.0;

// ------------------------------------------------------------------ small helpers

/// The number of attention heads actually used for width `d` when `configured` heads were asked
/// for: **the largest `h ≤ configured` that divides `d`** (so `d_h = d / h` is whole).
///
/// Both reference codes simply refuse a width that the head count does not divide (TensorFlow's
/// `tf.split` fails; RecBole raises `ValueError`). We adapt instead, because the CTR adaptation
/// changes `d` (e.g. `d = 2E = 36` with LinRec's 8 heads → 6 heads of 6); set the head count
/// explicitly to get another split. Errors if `d` or `configured` is 0.
pub fn heads_for(d: usize, configured: usize) -> Result<usize> {
    if d == 0 || configured == 0 {
        candle_core::bail!(
            "attention needs d > 0 and at least one head, got d={d}, heads={configured}"
        );
    }
    Ok((1..=configured.min(d))
        .rev()
        .find(|h| d % h == 0)
        .unwrap_or(1))
}

/// How a dense layer's weight is initialised (biases always start at 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LinearInit {
    /// `U(±sqrt(6 / (in + out)))`: TensorFlow 1's default (SASRec's `tf.layers.dense`/`conv1d`).
    GlorotUniform,
    /// `N(0, std²)`: RecBole's `_init_weights` (`initializer_range` 0.02).
    Normal { std: f64 },
}

/// A [`Dense`] `in → out` (parameters `weight`, `bias`) with the given init.
pub fn linear(input: usize, output: usize, init: LinearInit, vb: VarBuilder) -> Result<Dense> {
    match init {
        LinearInit::GlorotUniform => glorot_linear(input, output, vb),
        LinearInit::Normal { std } => {
            let weight = vb.get_with_hints(
                (output, input),
                "weight",
                Init::Randn {
                    mean: 0.0,
                    stdev: std,
                },
            )?;
            let bias = vb.get_with_hints(output, "bias", Init::Const(0.0))?;
            Dense::from_tensors(weight, bias)
        }
    }
}

pub use crate::dropout::dropout;

/// Checks a dropout probability from a config (`[0, 1)`), naming the field in the error.
pub fn check_dropout(name: &str, p: f32) -> Result<()> {
    if !(0.0..1.0).contains(&p) {
        candle_core::bail!("{name} must lie in [0, 1), got {p}");
    }
    Ok(())
}

/// `[B, L, h·d_h]` → `[B, h, L, d_h]` (contiguous).
pub fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, l, d) = x.dims3()?;
    if heads == 0 || d % heads != 0 {
        candle_core::bail!("split_heads: width {d} is not a multiple of {heads} heads");
    }
    x.reshape((b, l, heads, d / heads))?
        .transpose(1, 2)?
        .contiguous()
}

/// `[B, h, L, d_h]` → `[B, L, h·d_h]`.
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, l, dh) = x.dims4()?;
    x.transpose(1, 2)?.contiguous()?.reshape((b, l, h * dh))
}

/// Rows `x[b, pos[b], :]` of a `[B, L, D]` tensor, `pos` `[B]` (u32), as `[B, D]`. Differentiable
/// (an `index_select` on the flattened rows). Errors if a position is out of range.
pub fn gather_rows(x: &Tensor, pos: &Tensor) -> Result<Tensor> {
    let (b, l, d) = x.dims3()?;
    if pos.dims() != [b] {
        candle_core::bail!("gather_rows: positions {:?} for a batch of {b}", pos.dims());
    }
    let pos = pos.to_dtype(DType::U32)?;
    if b > 0 {
        // index_select does not bound-check on every device: refuse out-of-range positions here.
        let max = pos.max(0)?.to_scalar::<u32>()?;
        if max as usize >= l {
            candle_core::bail!("gather_rows: position {max} out of range for length {l}");
        }
    }
    let base: Vec<u32> = (0..b).map(|i| (i * l) as u32).collect();
    let idx = (Tensor::from_vec(base, b, x.device())? + pos)?;
    x.reshape((b * l, d))?.index_select(&idx, 0)
}

/// The column of the most recent item of each row of a **left-aligned** (history first) batch of
/// width `width`: `lengths − 1`, and 0 for an empty history (RecBole's `gather_indexes` would index
/// −1 there; we read position 0 instead, i.e. the representation of the first padding token).
/// `lengths` `[B]` (u32); histories longer than `width` read the last column.
pub fn last_positions(lengths: &Tensor, width: usize) -> Result<Tensor> {
    if width == 0 {
        candle_core::bail!("last_positions: zero-width batch");
    }
    // f32 holds the integers exactly far beyond any history length.
    lengths
        .to_dtype(DType::F32)?
        .clamp(1f32, width as f32)?
        .affine(1.0, -1.0)?
        .to_dtype(DType::U32)
}

/// Fails with a clear message unless `batch` has the alignment `align` and a width that `ok_width`
/// accepts (`expected` describes the accepted widths for the message).
pub fn check_layout(
    model: &str,
    batch: &Batch,
    align: Align,
    ok_width: impl Fn(usize) -> bool,
    expected: &str,
) -> Result<()> {
    if batch.align != align {
        candle_core::bail!(
            "{model}: batch histories are {:?}-aligned but the model needs {align:?}-aligned ones \
             (build batches with the model's `layout()`)",
            batch.align
        );
    }
    if !ok_width(batch.width) {
        candle_core::bail!(
            "{model}: batch width {} does not fit the model ({expected}; build batches with the \
             model's `layout()`)",
            batch.width
        );
    }
    Ok(())
}

/// The `[B, 1, L, L]` 0/1 mask of allowed (query `i`, key `j`) pairs for self-attention over a
/// `[B, L]` key mask (1 = real item): `key_mask[b, j]`, and with `causal` also `j ≤ i`. Broadcasts
/// over heads. Dtype of `key_mask`.
pub fn attention_mask(key_mask: &Tensor, causal: bool) -> Result<Tensor> {
    let (b, l) = key_mask.dims2()?;
    let keys = key_mask.reshape((b, 1, 1, l))?;
    if !causal {
        return keys.broadcast_as((b, 1, l, l))?.contiguous();
    }
    let tril: Vec<f32> = (0..l)
        .flat_map(|i| (0..l).map(move |j| if j <= i { 1.0 } else { 0.0 }))
        .collect();
    let tril =
        Tensor::from_vec(tril, (1, 1, l, l), key_mask.device())?.to_dtype(key_mask.dtype())?;
    keys.broadcast_mul(&tril)
}

// ------------------------------------------------------------------ embeddings

/// Which ids make up a sequence token (`specs/backbones.md` §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenInput {
    /// `[Emb_item(item) ; Emb_cat(category)]`: the item and category tables the CTR models use,
    /// with `d − ⌊d/2⌋` and `⌊d/2⌋` columns (adaptation (b); the sequence and CTR models then see
    /// the same inputs). **Default.**
    #[default]
    ItemCategory,
    /// `Emb_item(item)` with all `d` columns: the official sequence models' input (adaptation (a)).
    Item,
}

/// The token (and target) embedding of a sequence model: an item table and, with
/// [`TokenInput::ItemCategory`], a category table whose rows are concatenated after the item's.
/// Id 0 is padding (zero output, no gradient; see [`Embedding`]). The target item is embedded with
/// the **same** tables (tied, as in the official scoring `<h, Emb_item(target)>`).
#[derive(Debug, Clone)]
pub struct TokenEmbedding {
    item: Embedding,
    cat: Option<Embedding>,
    dim: usize,
}

impl TokenEmbedding {
    /// Tables `vb.pp(item_name)` `[vocab.items, d_item]` and (with categories)
    /// `vb.pp(cat_name)` `[vocab.categories, d_cat]`, both `weight`, initialised with `init`.
    pub fn new(
        input: TokenInput,
        vocab: Vocab,
        dim: usize,
        init: EmbeddingInit,
        names: (&str, &str),
        vb: VarBuilder,
    ) -> Result<Self> {
        let cfg = EmbeddingConfig {
            init,
            ..EmbeddingConfig::default()
        };
        let (item_dim, cat_dim) = match input {
            TokenInput::Item => (dim, 0),
            TokenInput::ItemCategory => (dim - dim / 2, dim / 2),
        };
        if item_dim == 0 || (input == TokenInput::ItemCategory && cat_dim == 0) {
            candle_core::bail!("token width {dim} is too small for {input:?} tokens");
        }
        let item = Embedding::new(vocab.items, item_dim, cfg, vb.pp(names.0))?;
        let cat = match input {
            TokenInput::Item => None,
            TokenInput::ItemCategory => Some(Embedding::new(
                vocab.categories,
                cat_dim,
                cfg,
                vb.pp(names.1),
            )?),
        };
        Ok(Self { item, cat, dim })
    }

    /// The token width `d`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Ids `[..]` (and their categories, same shape) → `[.., d]`.
    pub fn forward(&self, items: &Tensor, cats: &Tensor) -> Result<Tensor> {
        let e = self.item.forward(items)?;
        match &self.cat {
            None => Ok(e),
            Some(c) => Tensor::cat(&[e, c.forward(cats)?], D::Minus1),
        }
    }
}

/// A learned absolute position table `[max_len, d]` (parameter `weight`), no padding row.
#[derive(Debug, Clone)]
pub struct PositionalEmbedding {
    weight: Tensor,
}

impl PositionalEmbedding {
    pub fn new(max_len: usize, dim: usize, init: EmbeddingInit, vb: VarBuilder) -> Result<Self> {
        let init = match init {
            EmbeddingInit::Normal { std } => Init::Randn {
                mean: 0.0,
                stdev: std,
            },
            EmbeddingInit::GlorotUniform => {
                let bound = (6.0 / (max_len + dim).max(1) as f64).sqrt();
                Init::Uniform {
                    lo: -bound,
                    up: bound,
                }
            }
        };
        Ok(Self {
            weight: vb.get_with_hints((max_len, dim), "weight", init)?,
        })
    }

    /// The number of positions.
    pub fn max_len(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Rows `offset .. offset + len` as `[len, d]` (broadcast-add it to a `[B, len, d]` sequence).
    pub fn forward(&self, offset: usize, len: usize) -> Result<Tensor> {
        if offset + len > self.max_len() {
            candle_core::bail!(
                "positions {offset}..{} exceed the table's {} rows",
                offset + len,
                self.max_len()
            );
        }
        self.weight.narrow(0, offset, len)
    }

    /// `x + positions offset..offset+L` for `x` `[B, L, d]`, the positions repeated over the batch
    /// by [`expand_rows`] so that the table's gradient is a matmul rather than candle's strided
    /// reduction over `B` (see [`mod@crate::dense`]).
    pub fn add_to(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let (b, l, d) = x.dims3()?;
        let pos = self.forward(offset, l)?.flatten_all()?;
        x + expand_rows(&pos, b)?.reshape((b, l, d))?
    }
}

// ------------------------------------------------------------------ feed-forward

/// The activation between a [`PointwiseFfn`]'s two layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FfnActivation {
    /// `max(x, 0)` (SASRec).
    Relu,
    /// `x · Φ(x)` with the exact erf (RecBole's `gelu`, BERT's).
    #[default]
    Gelu,
}

/// Position-wise feed-forward `drop_out(fc2(drop_hidden(act(fc1 x))))` on `[.., d]`, without the
/// residual and normalisation (the blocks differ in those). SASRec's kernel-size-1 `conv1d`s are
/// exactly these dense layers.
#[derive(Debug, Clone)]
pub struct PointwiseFfn {
    fc1: Dense,
    fc2: Dense,
    act: FfnActivation,
    dropout_hidden: f32,
    dropout_out: f32,
}

impl PointwiseFfn {
    /// `fc1` = `vb.pp(names.0)` `d → inner`, `fc2` = `vb.pp(names.1)` `inner → d`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dim: usize,
        inner: usize,
        act: FfnActivation,
        init: LinearInit,
        (dropout_hidden, dropout_out): (f32, f32),
        names: (&str, &str),
        vb: VarBuilder,
    ) -> Result<Self> {
        check_dropout("ffn hidden dropout", dropout_hidden)?;
        check_dropout("ffn output dropout", dropout_out)?;
        Ok(Self {
            fc1: linear(dim, inner, init, vb.pp(names.0))?,
            fc2: linear(inner, dim, init, vb.pp(names.1))?,
            act,
            dropout_hidden,
            dropout_out,
        })
    }

    /// Each layer's bias, activation and dropout run as one fused op
    /// ([`crate::fused_pointwise::bias_act`]); the masks are drawn in the order of the composed
    /// form, so a seeded run draws the same masks.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = self
            .fc1
            .forward_act(x, self.pointwise_act(), self.dropout_hidden, train)?;
        self.fc2
            .forward_act(&h, PointwiseAct::Identity, self.dropout_out, train)
    }

    /// `ln(forward(x) + x)`, a post-LN feed-forward sublayer (RecBole's): the second layer's
    /// bias and dropout, the residual add and the LayerNorm as one fused op on the CPU
    /// ([`LayerNorm::forward_residual`]); the masks are drawn as in [`forward`](Self::forward).
    pub fn forward_add_norm(&self, x: &Tensor, ln: &LayerNorm, train: bool) -> Result<Tensor> {
        let h = self
            .fc1
            .forward_act(x, self.pointwise_act(), self.dropout_hidden, train)?;
        self.fc2
            .forward_add_norm(&h, x, ln, self.dropout_out, train)
    }

    fn pointwise_act(&self) -> PointwiseAct {
        match self.act {
            FfnActivation::Relu => PointwiseAct::Relu,
            FfnActivation::Gelu => PointwiseAct::Gelu,
        }
    }
}

// ------------------------------------------------------------------ softmax attention

/// SASRec-TF multi-head attention (`modules.py::multihead_attention`), without the residual:
///
/// ```text
/// Q = queries·W_q + b_q ; K = keys·W_k + b_k ; V = keys·W_v + b_v       (per head: d_h = d / h)
/// S = Q Kᵀ / sqrt(d_h) ; S[mask == 0] = −2^32 + 1                         (replace, not add)
/// P = softmax(S) ⊙ query_mask ; P = dropout(P)
/// out = concat_heads(P V)                                                 (no output projection)
/// ```
///
/// Parameters `query`, `key`, `value` (each `weight` `[d, d]`, `bias` `[d]`).
#[derive(Debug, Clone)]
pub struct SoftmaxAttention {
    query: Dense,
    key: Dense,
    value: Dense,
    heads: usize,
    dropout: f32,
}

impl SoftmaxAttention {
    /// `heads` must divide `dim` (see [`heads_for`]).
    pub fn new(
        dim: usize,
        heads: usize,
        dropout: f32,
        init: LinearInit,
        vb: VarBuilder,
    ) -> Result<Self> {
        if heads == 0 || dim % heads != 0 {
            candle_core::bail!("attention width {dim} is not a multiple of {heads} heads");
        }
        check_dropout("attention dropout", dropout)?;
        Ok(Self {
            query: linear(dim, dim, init, vb.pp("query"))?,
            key: linear(dim, dim, init, vb.pp("key"))?,
            value: linear(dim, dim, init, vb.pp("value"))?,
            heads,
            dropout,
        })
    }

    pub fn heads(&self) -> usize {
        self.heads
    }

    /// `queries` `[B, Lq, d]`, `keys` `[B, Lk, d]`, `mask` broadcastable to `[B, h, Lq, Lk]` (1 =
    /// may attend, e.g. from [`attention_mask`]), `query_mask` `[B, Lq]` (1 = real query) →
    /// `[B, Lq, d]`.
    pub fn forward(
        &self,
        queries: &Tensor,
        keys: &Tensor,
        mask: &Tensor,
        query_mask: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        let (b, lq, d) = queries.dims3()?;
        let lk = keys.dim(1)?;
        let dh = d / self.heads;
        let q = split_heads(&self.query.forward(queries)?, self.heads)?;
        let k = split_heads(&self.key.forward(keys)?, self.heads)?;
        let v = split_heads(&self.value.forward(keys)?, self.heads)?;
        let s = (q.matmul(&k.t()?)? / (dh as f64).sqrt())?;
        let mask = mask
            .to_dtype(s.dtype())?
            .broadcast_as((b, self.heads, lq, lk))?;
        let mut p = masked_softmax_with_fill(&s, &mask, TF_MASK_FILL)?;
        if let Some(qm) = query_mask {
            p = p.broadcast_mul(&qm.to_dtype(p.dtype())?.reshape((b, 1, lq, 1))?)?;
        }
        let p = dropout(&p, self.dropout, train)?;
        merge_heads(&p.matmul(&v)?)
    }
}

// ------------------------------------------------------------------ linear attention

/// LinRec's attention (`layers.py::MultiHeadAttention.forward`, "Elu Norm Attention"), without the
/// residual and LayerNorm that follow it:
///
/// ```text
/// Q, K, V = x·W + b  → heads [B, h, L, d_h]
/// Qn[i] = elu(Q)[i] / ‖elu(Q)[i]‖₂ ; Kn[j] = elu(K)[j] / ‖elu(K)[j]‖₂     (per token and head, over d_h)
/// ctx = Qn · (Knᵀ · V) / sqrt(d_h)                                        (a d_h×d_h state per head)
/// out = concat_heads(ctx)·W_dense + b_dense
/// ```
///
/// `elu` has alpha 1 (`nn.ELU()`; *not* the `elu + 1` feature map of Katharopoulos et al.).
/// No mask and no softmax: padded positions take part like real ones, so the output depends on
/// the amount of padding (feed fixed-width batches). **Deviation:** the norms are
/// `sqrt(Σ x² + eps²)` rather than the official eps-free `‖x‖₂`; this differs from `‖x‖₂` by less
/// than `eps` and keeps value and gradient finite when a head slice is exactly zero.
///
/// Parameters `query`, `key`, `value`, `dense` (each `weight` `[d, d]`, `bias` `[d]`; RecBole's
/// names).
#[derive(Debug, Clone)]
pub struct LinearAttention {
    query: Dense,
    key: Dense,
    value: Dense,
    dense: Dense,
    heads: usize,
    eps: f64,
}

/// `x / sqrt(Σ_last x² + eps²)`.
fn l2_normalize_last(x: &Tensor, eps: f64) -> Result<Tensor> {
    let n = (x.sqr()?.sum_keepdim(D::Minus1)? + eps * eps)?.sqrt()?;
    x.broadcast_div(&n)
}

impl LinearAttention {
    /// `heads` must divide `dim` (see [`heads_for`]); `eps` ≥ 0 goes into the L2 norms.
    pub fn new(
        dim: usize,
        heads: usize,
        eps: f64,
        init: LinearInit,
        vb: VarBuilder,
    ) -> Result<Self> {
        if heads == 0 || dim % heads != 0 {
            candle_core::bail!("attention width {dim} is not a multiple of {heads} heads");
        }
        if !(eps >= 0.0 && eps.is_finite()) {
            candle_core::bail!("the L2-norm eps must be finite and >= 0, got {eps}");
        }
        Ok(Self {
            query: linear(dim, dim, init, vb.pp("query"))?,
            key: linear(dim, dim, init, vb.pp("key"))?,
            value: linear(dim, dim, init, vb.pp("value"))?,
            dense: linear(dim, dim, init, vb.pp("dense"))?,
            heads,
            eps,
        })
    }

    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Self-attention, `[B, L, d]` → `[B, L, d]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_queries(x, x)
    }

    /// The outputs at some query rows only: `queries` `[B, Lq, d]` (rows of `x`, projected with
    /// `query`), keys and values from all of `x` `[B, L, d]` → `[B, Lq, d]`. Each output row
    /// depends only on its own query row, so this equals the matching rows of
    /// [`forward`](Self::forward) at a fraction of the cost.
    ///
    /// On CPU f32/f64 the core (ELUs, L2 norms, `Knᵀ·V`, `Qn·KV`) is one fused op with its own
    /// backward (`fused_linear_attention.rs`); elsewhere it is composed from candle ops
    /// ([`forward_queries_composed`](Self::forward_queries_composed)).
    pub fn forward_queries(&self, queries: &Tensor, x: &Tensor) -> Result<Tensor> {
        self.forward_queries_dropout(queries, x, 0.0, false)
    }

    /// [`forward_queries`](Self::forward_queries) followed by dropout with probability `p` when
    /// `train`, the mask applied with the output projection's bias in one fused op.
    pub fn forward_queries_dropout(
        &self,
        queries: &Tensor,
        x: &Tensor,
        p: f32,
        train: bool,
    ) -> Result<Tensor> {
        self.dense
            .forward_act(&self.context(queries, x)?, PointwiseAct::Identity, p, train)
    }

    /// `ln(dropout(attention) + residual)`: [`forward_queries_dropout`](Self::forward_queries_dropout)
    /// followed by a residual add and a LayerNorm (a post-LN sublayer, as RecBole's), the output
    /// projection's bias, the dropout, the add and the LayerNorm as one fused op on the CPU
    /// ([`LayerNorm::forward_residual`]).
    pub fn forward_queries_add_norm(
        &self,
        queries: &Tensor,
        x: &Tensor,
        residual: &Tensor,
        ln: &LayerNorm,
        p: f32,
        train: bool,
    ) -> Result<Tensor> {
        self.dense
            .forward_add_norm(&self.context(queries, x)?, residual, ln, p, train)
    }

    /// The merged heads' context before the output projection, `[B, Lq, d]`. On CPU f32/f64
    /// with a head width of 4, 8, 16, 32 or 64 the three projections are one matmul (Q, K and V side by side; K and V only when the
    /// queries are a subset) and the core one fused op that adds their biases as it reads
    /// them; elsewhere it is composed from candle ops.
    fn context(&self, queries: &Tensor, x: &Tensor) -> Result<Tensor> {
        let dh = x.dim(D::Minus1)? / self.heads;
        let widths = crate::fused_linear_attention::HEAD_WIDTHS;
        if !(crate::custom_op::fused_ok(queries) && widths.contains(&dh)) {
            return self.context_composed(queries, x);
        }
        let op = crate::fused_linear_attention::LinearAttentionOp {
            heads: self.heads,
            eps: self.eps,
        };
        let bias = Tensor::cat(&[self.query.bias(), self.key.bias(), self.value.bias()], 0)?;
        if queries.id() == x.id() {
            let w = Tensor::cat(
                &[self.query.weight(), self.key.weight(), self.value.weight()],
                0,
            )?;
            dense(x, &w, None)?.contiguous()?.apply_op2(&bias, op)
        } else {
            let q = dense(queries, self.query.weight(), None)?;
            let w = Tensor::cat(&[self.key.weight(), self.value.weight()], 0)?;
            let kv = dense(x, &w, None)?;
            q.contiguous()?.apply_op3(&kv.contiguous()?, &bias, op)
        }
    }

    /// The op-composed form of [`forward_queries`](Self::forward_queries): head split, ELU, L2
    /// norms, `Knᵀ·V` then `Qn·KV` as candle ops. The path off the CPU and the fused op's
    /// reference in tests.
    pub fn forward_queries_composed(&self, queries: &Tensor, x: &Tensor) -> Result<Tensor> {
        self.dense.forward(&self.context_composed(queries, x)?)
    }

    /// [`context`](Self::context) from candle ops.
    fn context_composed(&self, queries: &Tensor, x: &Tensor) -> Result<Tensor> {
        let d = x.dim(D::Minus1)?;
        let dh = d / self.heads;
        let q = split_heads(&self.query.forward(queries)?, self.heads)?.elu(1.0)?;
        let k = split_heads(&self.key.forward(x)?, self.heads)?.elu(1.0)?;
        let v = split_heads(&self.value.forward(x)?, self.heads)?;
        let qn = l2_normalize_last(&q, self.eps)?;
        let kn = l2_normalize_last(&k, self.eps)?;
        // Knᵀ·V first: [B,h,d_h,L]·[B,h,L,d_h] → [B,h,d_h,d_h], linear in L.
        let kv = kn.t()?.contiguous()?.matmul(&v)?;
        let ctx = (qn.matmul(&kv)? / (dh as f64).sqrt())?;
        merge_heads(&ctx)
    }
}

// ------------------------------------------------------------------ test support

/// Test support for the sequence backbone crates: random batches in a model's layout, the
/// heads-and-gradients check, and loading of the parity fixtures that
/// `tests/reference/seq_models.py` writes. Not part of the modelling API.
#[doc(hidden)]
pub mod testkit {
    use std::collections::{BTreeSet, HashMap};
    use std::path::Path;

    use candle_core::{DType, Device, Result, Tensor};
    use candle_nn::{VarBuilder, VarMap};

    use crate::batch::{Align, Batch, HostBatch, Layout, PadPolicy, Vocab};
    use crate::loss::bce_with_logits;
    use crate::model::{Backbone, HeadKind, Model};
    use crate::testing::vars_without_gradient;

    /// A small LCG (no rand dependency).
    struct Lcg(u64);

    impl Lcg {
        fn id(&mut self, vocab: usize) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if vocab <= 1 {
                0
            } else {
                1 + ((self.0 >> 33) % (vocab as u64 - 1)) as u32
            }
        }
    }

    /// One row per entry of `lengths` (0 = empty history), `width` columns, the history placed
    /// as `align` says, random real ids, alternating labels. Lengths above `width` are capped.
    pub fn random_batch(
        vocab: Vocab,
        lengths: &[usize],
        width: usize,
        align: Align,
        seed: u64,
        device: &Device,
    ) -> Result<Batch> {
        let mut rng = Lcg(seed ^ 0x9e37_79b9_7f4a_7c15);
        let mut h = HostBatch::default();
        for (row, &len) in lengths.iter().enumerate() {
            let len = len.min(width);
            let start = match align {
                Align::Left => 0,
                Align::Right => width - len,
            };
            h.users.push(rng.id(vocab.users));
            for t in 0..width {
                let real = t >= start && t < start + len;
                let mut pick = |v: usize| if real { rng.id(v) } else { 0 };
                h.hist_items.push(pick(vocab.items));
                h.hist_cats.push(pick(vocab.categories));
                h.hist_neg_items.push(pick(vocab.items));
                h.hist_neg_cats.push(pick(vocab.categories));
                h.mask.push(if real { 1.0 } else { 0.0 });
            }
            h.lengths.push(len as u32);
            h.target_items.push(rng.id(vocab.items));
            h.target_cats.push(rng.id(vocab.categories));
            h.labels.push((row % 2) as f32);
        }
        h.to_device(width, align, device)
    }

    /// A random batch in `layout` (fixed width = `max_history`, or the longest history).
    pub fn layout_batch(
        vocab: Vocab,
        lengths: &[usize],
        layout: Layout,
        seed: u64,
        device: &Device,
    ) -> Result<Batch> {
        let width = match layout.pad {
            PadPolicy::Fixed => layout.max_history,
            PadPolicy::Longest => lengths
                .iter()
                .map(|&l| l.min(layout.max_history))
                .max()
                .unwrap_or(0)
                .max(1),
        };
        random_batch(vocab, lengths, width, layout.align, seed, device)
    }

    /// Through [`Model`] with a CTR, a Q and a `Quantile(10)` head (f32, CPU) on a batch in the
    /// backbone's own layout with lengths `[3, 0, 5, 1, 2, 4]`: features are `[B, feature_dim]`,
    /// logits have the head's shape and are finite in training and evaluation, and every variable
    /// gets a non-zero gradient in training and in evaluation mode.
    pub fn check_heads_and_gradients<F>(make: F, vocab: Vocab) -> Result<()>
    where
        F: Fn(VarBuilder) -> Result<Box<dyn Backbone>>,
    {
        let dev = Device::Cpu;
        for (kind, shape_tail) in [
            (HeadKind::Ctr, vec![]),
            (HeadKind::Q, vec![2]),
            (HeadKind::Quantile(10), vec![2, 10]),
        ] {
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
            let backbone = make(vb.clone())?;
            let batch = layout_batch(vocab, &[3, 0, 5, 1, 2, 4], backbone.layout(), 7, &dev)?;
            let b = batch.size;
            let mut shape = vec![b];
            shape.extend(&shape_tail);
            let f = backbone.forward(&batch, true)?;
            if f.features.dims() != [b, backbone.feature_dim()] {
                candle_core::bail!(
                    "features {:?}, feature_dim {}",
                    f.features.dims(),
                    backbone.feature_dim()
                );
            }
            let model = Model::new(backbone, kind, vb)?;
            for train in [false, true] {
                let out = model.forward(&batch, train)?;
                if out.logits.dims() != &shape[..] {
                    candle_core::bail!("{kind:?}: logits {:?}, want {shape:?}", out.logits.dims());
                }
                let v: Vec<f32> = out.logits.flatten_all()?.to_vec1()?;
                if v.iter().any(|x| !x.is_finite()) {
                    candle_core::bail!("{kind:?}: non-finite logits {v:?}");
                }
                let loss = match kind {
                    HeadKind::Ctr => bce_with_logits(&out.logits, &batch.labels)?,
                    _ => {
                        let n = out.logits.elem_count();
                        let r: Vec<f32> =
                            (0..n).map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0).collect();
                        let r = Tensor::from_vec(r, out.logits.shape(), &dev)?;
                        (&out.logits * r)?.sum_all()?
                    }
                };
                let missing = vars_without_gradient(&varmap, &loss)?;
                if !missing.is_empty() || varmap.all_vars().is_empty() {
                    candle_core::bail!(
                        "{kind:?} (train {train}): variables without gradient: {missing:?}"
                    );
                }
            }
        }
        Ok(())
    }

    /// All tensors of a parity fixture.
    pub fn load_fixture(path: impl AsRef<Path>) -> Result<HashMap<String, Tensor>> {
        candle_core::safetensors::load(path, &Device::Cpu)
    }

    /// A tensor of the fixture, or an error naming it.
    pub fn get(fx: &HashMap<String, Tensor>, name: &str) -> Result<Tensor> {
        fx.get(name)
            .cloned()
            .ok_or_else(|| candle_core::Error::Msg(format!("fixture has no tensor {name}")))
    }

    /// An integer `meta.<name>` vector.
    pub fn meta(fx: &HashMap<String, Tensor>, name: &str) -> Result<Vec<usize>> {
        let v: Vec<i64> = get(fx, &format!("meta.{name}"))?
            .flatten_all()?
            .to_dtype(DType::I64)?
            .to_vec1()?;
        Ok(v.into_iter().map(|x| x.max(0) as usize).collect())
    }

    /// The fixture's `input.*` batch, which it wrote with alignment `align`, on the CPU.
    pub fn fixture_batch(fx: &HashMap<String, Tensor>, align: Align) -> Result<Batch> {
        let ids = |n: &str| -> Result<Vec<u32>> {
            let v: Vec<i64> = get(fx, &format!("input.{n}"))?
                .flatten_all()?
                .to_dtype(DType::I64)?
                .to_vec1()?;
            Ok(v.into_iter().map(|x| x as u32).collect())
        };
        let floats = |n: &str| -> Result<Vec<f32>> {
            get(fx, &format!("input.{n}"))?
                .flatten_all()?
                .to_dtype(DType::F32)?
                .to_vec1()
        };
        let (_, width) = get(fx, "input.hist_items")?.dims2()?;
        HostBatch {
            users: ids("users")?,
            hist_items: ids("hist_items")?,
            hist_cats: ids("hist_cats")?,
            hist_neg_items: ids("hist_neg_items")?,
            hist_neg_cats: ids("hist_neg_cats")?,
            mask: floats("mask")?,
            lengths: ids("lengths")?,
            target_items: ids("target_items")?,
            target_cats: ids("target_cats")?,
            labels: floats("labels")?,
        }
        .to_device(width, align, &Device::Cpu)
    }

    /// Fails unless the fixture's weights (everything but `input.*`, `expected.*`, `meta.*`) and
    /// the VarMap's variables have the same names; then copies them in, cast to each variable's
    /// dtype.
    pub fn load_weights(varmap: &VarMap, fx: &HashMap<String, Tensor>) -> Result<()> {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
        let vars: BTreeSet<&String> = data.keys().collect();
        let weights: BTreeSet<&String> = fx
            .keys()
            .filter(|k| {
                !["input.", "expected.", "meta."]
                    .iter()
                    .any(|p| k.starts_with(p))
            })
            .collect();
        if vars != weights {
            candle_core::bail!(
                "names differ: only in the model {:?}, only in the fixture {:?}",
                vars.difference(&weights).collect::<Vec<_>>(),
                weights.difference(&vars).collect::<Vec<_>>()
            );
        }
        for (name, var) in data.iter() {
            var.set(&get(fx, name)?.to_dtype(var.dtype())?)?;
        }
        Ok(())
    }

    /// `max |a − b|` over all elements (shapes must agree; NaN propagates).
    pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
        if a.dims() != b.dims() {
            candle_core::bail!("shapes differ: {:?} vs {:?}", a.dims(), b.dims());
        }
        let d: Vec<f64> = (a.to_dtype(DType::F64)? - b.to_dtype(DType::F64)?)?
            .abs()?
            .flatten_all()?
            .to_vec1()?;
        Ok(d.into_iter().fold(0.0, |m, x| {
            if x.is_nan() || m.is_nan() {
                f64::NAN
            } else {
                m.max(x)
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::norm::LayerNorm;
    use crate::testing::{assert_gradients_match, check_gradients, GradCheckConfig};
    use candle_core::{Device, Var};
    use candle_nn::VarMap;

    fn vb64(vm: &VarMap) -> VarBuilder<'_> {
        VarBuilder::from_varmap(vm, DType::F64, &Device::Cpu)
    }

    /// Deterministic pseudo-random values in (-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect()
    }

    fn randomize(vm: &VarMap, seed: u64) {
        let mut data: Vec<(String, Var)> = vm
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        data.sort_by(|a, b| a.0.cmp(&b.0));
        for (i, (_, v)) in data.iter().enumerate() {
            let n = v.elem_count();
            let t = Tensor::from_vec(values(n, seed + i as u64), v.shape(), &Device::Cpu)
                .unwrap()
                .to_dtype(v.dtype())
                .unwrap();
            v.set(&t).unwrap();
        }
    }

    fn input(shape: &[usize], seed: u64) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_vec(values(n, seed), shape, &Device::Cpu).unwrap()
    }

    /// A fixed random projection of the output to a scalar (so every output element matters).
    fn project(y: &Tensor, seed: u64) -> candle_core::Result<Tensor> {
        let w = input(y.dims(), seed);
        (y * w)?.sum_all()
    }

    #[test]
    fn linear_attention_query_rows_match_full_forward() {
        let vm = VarMap::new();
        let att = LinearAttention::new(4, 2, 1e-6, LinearInit::GlorotUniform, vb64(&vm)).unwrap();
        randomize(&vm, 51);
        let x = input(&[2, 3, 4], 10);
        let full = att.forward(&x).unwrap();
        let rows = Tensor::new(&[2u32, 0], &Device::Cpu).unwrap();
        let q = gather_rows(&x, &rows).unwrap().unsqueeze(1).unwrap();
        let part = att.forward_queries(&q, &x).unwrap().squeeze(1).unwrap();
        let want = gather_rows(&full, &rows).unwrap();
        let diff = (part - want)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(diff < 1e-12, "{diff}");
    }

    #[test]
    fn heads_rule() {
        assert_eq!(heads_for(128, 8).unwrap(), 8);
        assert_eq!(heads_for(36, 8).unwrap(), 6);
        assert_eq!(heads_for(50, 1).unwrap(), 1);
        assert_eq!(heads_for(50, 4).unwrap(), 2);
        assert_eq!(heads_for(7, 8).unwrap(), 7);
        assert_eq!(heads_for(13, 8).unwrap(), 1);
        assert_eq!(heads_for(72, 8).unwrap(), 8);
        assert!(heads_for(0, 1).is_err());
        assert!(heads_for(8, 0).is_err());
    }

    #[test]
    fn causal_key_mask() {
        let km = Tensor::new(&[[0f32, 1., 1.]], &Device::Cpu).unwrap();
        let m: Vec<Vec<f32>> = attention_mask(&km, true)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2()
            .unwrap();
        assert_eq!(
            m,
            vec![vec![0., 0., 0.], vec![0., 1., 0.], vec![0., 1., 1.]]
        );
        let m = attention_mask(&km, false).unwrap();
        assert_eq!(m.dims(), &[1, 1, 3, 3]);
    }

    #[test]
    fn gather_and_last_positions() {
        let x = Tensor::arange(0f32, 24., &Device::Cpu)
            .unwrap()
            .reshape((2, 3, 4))
            .unwrap();
        let lengths = Tensor::new(&[0u32, 3], &Device::Cpu).unwrap();
        let pos = last_positions(&lengths, 3).unwrap();
        assert_eq!(pos.to_vec1::<u32>().unwrap(), vec![0, 2]);
        let g: Vec<Vec<f32>> = gather_rows(&x, &pos).unwrap().to_vec2().unwrap();
        assert_eq!(g, vec![vec![0., 1., 2., 3.], vec![20., 21., 22., 23.]]);
        let long = Tensor::new(&[7u32, 1], &Device::Cpu).unwrap();
        assert_eq!(
            last_positions(&long, 3).unwrap().to_vec1::<u32>().unwrap(),
            vec![2, 0]
        );
        assert!(gather_rows(&x, &Tensor::new(&[0u32, 3], &Device::Cpu).unwrap()).is_err());
    }

    #[test]
    fn softmax_attention_matches_hand_computation() {
        // One head, d = 2, identity projections: out_i = Σ_j softmax_j(q_i·k_j/√2) k_j over allowed j.
        let vm = VarMap::new();
        let att = SoftmaxAttention::new(2, 1, 0.0, LinearInit::GlorotUniform, vb64(&vm)).unwrap();
        for (name, v) in vm.data().lock().unwrap().iter() {
            let t = if name.ends_with("weight") {
                Tensor::eye(2, DType::F64, &Device::Cpu).unwrap()
            } else {
                v.zeros_like().unwrap()
            };
            v.set(&t).unwrap();
        }
        let x = Tensor::new(&[[[0.0f64, 0.0], [1.0, 2.0], [3.0, -1.0]]], &Device::Cpu).unwrap();
        let km = Tensor::new(&[[0f64, 1., 1.]], &Device::Cpu).unwrap();
        let mask = attention_mask(&km, true).unwrap();
        let out = att.forward(&x, &x, &mask, Some(&km), false).unwrap();
        let o: Vec<Vec<f64>> = out.squeeze(0).unwrap().to_vec2().unwrap();
        // Query 0 is masked out entirely.
        assert_eq!(o[0], vec![0.0, 0.0]);
        // Query 1 sees only key 1.
        assert!((o[1][0] - 1.0).abs() < 1e-12 && (o[1][1] - 2.0).abs() < 1e-12);
        // Query 2 sees keys 1 and 2.
        let s1 = (3.0 * 1.0 - 2.0) / 2f64.sqrt();
        let s2 = (9.0 + 1.0) / 2f64.sqrt();
        let (e1, e2) = ((s1 - s2).exp(), 1.0);
        let w1 = e1 / (e1 + e2);
        let want = [w1 * 1.0 + (1.0 - w1) * 3.0, w1 * 2.0 - (1.0 - w1)];
        assert!((o[2][0] - want[0]).abs() < 1e-12 && (o[2][1] - want[1]).abs() < 1e-12);
    }

    #[test]
    fn softmax_attention_gradients() {
        // Pre-LN SASRec-style path: q = LN(x); out = attn(q, x) + q, causal + key mask, 2 heads.
        let vm = VarMap::new();
        let vb = vb64(&vm);
        let att =
            SoftmaxAttention::new(4, 2, 0.0, LinearInit::GlorotUniform, vb.pp("att")).unwrap();
        let ln = LayerNorm::new(4, 1e-8, vb.pp("ln")).unwrap();
        randomize(&vm, 11);
        let x = Var::from_tensor(&input(&[2, 3, 4], 5)).unwrap();
        let km = Tensor::new(&[[0f64, 1., 1.], [1., 1., 1.]], &Device::Cpu).unwrap();
        let mask = attention_mask(&km, true).unwrap();
        let mut vars = vm.all_vars();
        vars.push(x.clone());
        assert_gradients_match(&vars, |_| {
            let q = ln.forward(x.as_tensor())?;
            let y = (att.forward(&q, x.as_tensor(), &mask, Some(&km), false)? + &q)?;
            project(&y.broadcast_mul(&km.unsqueeze(2)?)?, 99)
        });
    }

    #[test]
    fn linear_attention_matches_hand_computation() {
        // One head, d = 2, identity projections: ctx_i = Σ_j (qn_i·kn_j) v_j / √2.
        let vm = VarMap::new();
        let att = LinearAttention::new(2, 1, 0.0, LinearInit::GlorotUniform, vb64(&vm)).unwrap();
        for (name, v) in vm.data().lock().unwrap().iter() {
            let t = if name.ends_with("weight") {
                Tensor::eye(2, DType::F64, &Device::Cpu).unwrap()
            } else {
                v.zeros_like().unwrap()
            };
            v.set(&t).unwrap();
        }
        let rows = [[0.5f64, -1.0], [2.0, 1.0]];
        let x = Tensor::new(&[rows], &Device::Cpu).unwrap();
        let o: Vec<Vec<f64>> = att
            .forward(&x)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2()
            .unwrap();
        let elu = |v: f64| if v > 0.0 { v } else { v.exp() - 1.0 };
        let unit = |r: [f64; 2]| {
            let e = [elu(r[0]), elu(r[1])];
            let n = (e[0] * e[0] + e[1] * e[1]).sqrt();
            [e[0] / n, e[1] / n]
        };
        for i in 0..2 {
            let qi = unit(rows[i]);
            let mut want = [0.0; 2];
            for r in rows {
                let kj = unit(r);
                let w = (qi[0] * kj[0] + qi[1] * kj[1]) / 2f64.sqrt();
                want[0] += w * r[0];
                want[1] += w * r[1];
            }
            assert!((o[i][0] - want[0]).abs() < 1e-12, "{o:?} {want:?}");
            assert!((o[i][1] - want[1]).abs() < 1e-12, "{o:?} {want:?}");
        }
    }

    #[test]
    fn linear_attention_gradients() {
        // Post-LN RecBole-style path: y = LN(attn(x) + x), 2 heads of 4 (the fused op), eps
        // 1e-6 in the L2 norms; once composed, once through the fused residual + LayerNorm with
        // a dropout mask, and once with queries at some rows only.
        let vm = VarMap::new();
        let vb = vb64(&vm);
        let att = LinearAttention::new(8, 2, 1e-6, LinearInit::Normal { std: 0.02 }, vb.pp("att"))
            .unwrap();
        let ln = LayerNorm::new(8, 1e-12, vb.pp("ln")).unwrap();
        randomize(&vm, 21);
        let x = Var::from_tensor(&input(&[2, 3, 8], 6)).unwrap();
        let mut vars = vm.all_vars();
        vars.push(x.clone());
        assert_gradients_match(&vars, |_| {
            let y = ln.forward(&(att.forward(x.as_tensor())? + x.as_tensor())?)?;
            project(&y, 98)
        });
        crate::seed_dropout(3);
        let mask = crate::dropout::mask_like(x.as_tensor(), 0.3, true)
            .unwrap()
            .unwrap();
        assert_gradients_match(&vars, |_| {
            let x = x.as_tensor();
            let ctx = att.context(x, x)?;
            let y = dense(&ctx, att.dense.weight(), None)?;
            let y = ln.forward_residual(&y, att.dense.bias(), Some(&mask), x)?;
            project(&y, 98)
        });
        assert_gradients_match(&vars, |_| {
            let x = x.as_tensor();
            let rows = x.narrow(1, 1, 2)?;
            let y = att.forward_queries_add_norm(&rows, x, &rows, &ln, 0.0, false)?;
            project(&y, 97)
        });
    }

    #[test]
    fn fused_linear_attention_equals_the_composed_form() {
        // Full self-attention and a query subset, f64 and f32, heads of 4, 8 and 16 (compiled
        // widths, so the fused op runs): values and the gradients of every parameter and input
        // agree with the op-composed form.
        for (dtype, d, heads) in [
            (DType::F64, 16, 4),
            (DType::F32, 16, 4),
            (DType::F64, 16, 2),
            (DType::F32, 32, 2),
        ] {
            assert!(crate::fused_linear_attention::HEAD_WIDTHS.contains(&(d / heads)));
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, dtype, &Device::Cpu);
            let att =
                LinearAttention::new(d, heads, 1e-6, LinearInit::Normal { std: 0.5 }, vb).unwrap();
            randomize(&vm, 5);
            let x = Var::from_tensor(&input(&[3, 7, d], 8).to_dtype(dtype).unwrap()).unwrap();
            let rows = x.as_tensor().narrow(1, 4, 2).unwrap();
            for queries in [x.as_tensor().clone(), rows] {
                let fused = att.forward_queries(&queries, x.as_tensor()).unwrap();
                let composed = att
                    .forward_queries_composed(&queries, x.as_tensor())
                    .unwrap();
                let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
                let d = crate::ctr::testkit::max_abs_diff(&fused, &composed).unwrap();
                assert!(d < tol, "{dtype:?}: values differ by {d}");
                let w = input(fused.dims(), 3).to_dtype(dtype).unwrap();
                let gf = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
                let gc = (composed * &w)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let mut vars = vm.all_vars();
                vars.push(x.clone());
                for v in &vars {
                    let d =
                        crate::ctr::testkit::max_abs_diff(gf.get(v).unwrap(), gc.get(v).unwrap())
                            .unwrap();
                    assert!(d < 10.0 * tol, "{dtype:?}: gradients differ by {d}");
                }
            }
        }
    }

    #[test]
    fn fused_linear_attention_keeps_empty_batches() {
        // No samples, or queries at no rows: empty outputs and zero parameter gradients.
        let vm = VarMap::new();
        let att = LinearAttention::new(8, 2, 1e-6, LinearInit::GlorotUniform, vb64(&vm)).unwrap();
        let x = Tensor::zeros((0, 3, 8), DType::F64, &Device::Cpu).unwrap();
        let y = att.forward(&x).unwrap();
        assert_eq!(y.dims(), &[0, 3, 8]);
        let x = input(&[2, 3, 8], 4);
        let rows = x.narrow(1, 0, 0).unwrap();
        let y = att.forward_queries(&rows, &x).unwrap();
        assert_eq!(y.dims(), &[2, 0, 8]);
        let g = y.sum_all().unwrap().backward().unwrap();
        for v in vm.all_vars() {
            let s = g.get(v.as_tensor()).map(|t| {
                t.abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            });
            assert_eq!(s.unwrap_or(0.0), 0.0);
        }
    }

    #[test]
    fn linear_attention_zero_input_has_finite_gradient() {
        // A token whose projections are exactly zero: the eps keeps the L2 norm differentiable
        // (width 2 runs the composed form, width 4 the fused op).
        for d in [2, 4] {
            zero_input_has_finite_gradient(d);
        }
    }

    fn zero_input_has_finite_gradient(d: usize) {
        let vm = VarMap::new();
        let att = LinearAttention::new(d, 1, 1e-6, LinearInit::GlorotUniform, vb64(&vm)).unwrap();
        let x =
            Var::from_tensor(&Tensor::zeros((1, 2, d), DType::F64, &Device::Cpu).unwrap()).unwrap();
        let y = att.forward(x.as_tensor()).unwrap().sum_all().unwrap();
        let g = y.backward().unwrap();
        for v in vm.all_vars() {
            let s = g
                .get(v.as_tensor())
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert!(s.is_finite());
        }
    }

    #[test]
    fn ffn_and_positions_gradients() {
        let vm = VarMap::new();
        let vb = vb64(&vm);
        for (i, act) in [FfnActivation::Relu, FfnActivation::Gelu]
            .into_iter()
            .enumerate()
        {
            let ffn = PointwiseFfn::new(
                3,
                5,
                act,
                LinearInit::GlorotUniform,
                (0.0, 0.0),
                ("fc1", "fc2"),
                vb.pp(format!("ffn{i}")),
            )
            .unwrap();
            let pos =
                PositionalEmbedding::new(4, 3, EmbeddingInit::GlorotUniform, vb.pp("pos")).unwrap();
            randomize(&vm, 31 + i as u64);
            let x = input(&[2, 3, 3], 7);
            let vars = vm.all_vars();
            let report = check_gradients(
                &vars,
                |_| {
                    let h = x.broadcast_add(&pos.forward(1, 3)?)?;
                    project(&ffn.forward(&h, false)?, 97)
                },
                GradCheckConfig::default(),
            )
            .unwrap();
            report.assert_ok();
        }
    }

    #[test]
    fn dropout_only_in_training() {
        let x = Tensor::ones((4, 50), DType::F32, &Device::Cpu).unwrap();
        let y = dropout(&x, 0.5, false).unwrap();
        assert_eq!(y.sum_all().unwrap().to_scalar::<f32>().unwrap(), 200.0);
        let y = dropout(&x, 0.5, true).unwrap();
        let v: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|&a| a == 0.0 || a == 2.0));
        assert!(v.contains(&0.0));
        assert!(check_dropout("p", 1.0).is_err());
        assert!(check_dropout("p", -0.1).is_err());
    }

    #[test]
    fn token_embedding_split_and_tied_target() {
        let vm = VarMap::new();
        let vocab = Vocab {
            users: 3,
            items: 5,
            categories: 3,
        };
        let te = TokenEmbedding::new(
            TokenInput::ItemCategory,
            vocab,
            5,
            EmbeddingInit::GlorotUniform,
            ("item", "cat"),
            vb64(&vm),
        )
        .unwrap();
        let shapes: Vec<(String, Vec<usize>)> = {
            let d = vm.data().lock().unwrap();
            let mut s: Vec<_> = d
                .iter()
                .map(|(k, v)| (k.clone(), v.dims().to_vec()))
                .collect();
            s.sort();
            s
        };
        assert_eq!(
            shapes,
            vec![
                ("cat.weight".to_string(), vec![3, 2]),
                ("item.weight".to_string(), vec![5, 3])
            ]
        );
        let ids = Tensor::new(&[[0u32, 4]], &Device::Cpu).unwrap();
        let cats = Tensor::new(&[[0u32, 2]], &Device::Cpu).unwrap();
        let e = te.forward(&ids, &cats).unwrap();
        assert_eq!(e.dims(), &[1, 2, 5]);
        let v: Vec<Vec<f64>> = e.squeeze(0).unwrap().to_vec2().unwrap();
        assert!(v[0].iter().all(|&a| a == 0.0));
        assert!(TokenEmbedding::new(
            TokenInput::ItemCategory,
            vocab,
            1,
            EmbeddingInit::GlorotUniform,
            ("a", "b"),
            vb64(&VarMap::new())
        )
        .is_err());
    }
}
