//! LinRec (L. Liu et al., "LinRec: Linear Attention Mechanism for Long-term Sequential Recommender
//! Systems", SIGIR 2023) as an MTRec backbone, following the **official code**
//! `Applied-Machine-Learning-Lab/LinRec` (`layers.py`, `run.py`, `overall.yaml`), which is
//! RecBole's SASRec (`recbole/model/sequential_recommender/sasrec.py`) with the attention of
//! `layers.py::MultiHeadAttention` replaced (`specs/backbones.md` §2.7), adapted to score
//! (history, shown item) pairs (§4).
//!
//! ```text
//! x = dropout(LN(Emb(hist) + Emb_pos(0..L−1)))                              [B, L, d]
//! repeat n_layers (post-LN):
//!     x = LN(dropout(dense(LinAttn(x))) + x)
//!     x = LN(dropout(W2 · gelu(W1 x + b1) + b2) + x)                        d → inner → d
//! h = x[b, len_b − 1]                                                       RecBole gather_indexes
//! e = Emb(target)                                                           tied tables
//! features z = h ⊙ e   (so Σ z = <h, e>, the official full-softmax logit of the target)
//! ```
//!
//! `LinAttn` ([`mtrec_nn::LinearAttention`]): `elu` (alpha 1, not `elu + 1`), per-token L2
//! normalisation of the query rows and key rows of each head over `d_h`, then
//! `Qn · (Knᵀ · V) / sqrt(d_h)`; **no mask and no softmax**. LayerNorm eps 1e-12, GELU with erf,
//! all linear layers and tables `N(0, 0.02)` with zero biases (RecBole `_init_weights`).
//!
//! # Input layout
//!
//! RecBole sequences are right-padded (history first, padding at the end): our [`Align::Left`],
//! read at column `lengths − 1`. Since the attention sees padded positions, the result depends on
//! the amount of padding, so the model asks for **fixed-width** batches of `max_seq_length`
//! columns and rejects any other width or alignment.
//!
//! # Parameters (RecBole's names, under the builder's prefix)
//!
//! `item_embedding.weight` `[items, d_item]`, `cat_embedding.weight` `[categories, d_cat]` (only
//! with [`TokenInput::ItemCategory`]), `position_embedding.weight` `[max_seq_length, d]`,
//! `LayerNorm.{weight,bias}`, and for layer `i` under `trm_encoder.layer.{i}.`:
//! `multi_head_attention.{query,key,value,dense}.{weight,bias}`,
//! `multi_head_attention.LayerNorm.{weight,bias}`, `feed_forward.{dense_1,dense_2}.{weight,bias}`,
//! `feed_forward.LayerNorm.{weight,bias}`. Linear weights are `[out, in]` (PyTorch's layout), so a
//! RecBole/LinRec item-only checkpoint maps 1:1.
//!
//! # Deviations from the official code, and why
//!
//! * **Token = `[Emb_item ; Emb_cat]`** by default ([`TokenInput::ItemCategory`]; item `d − ⌊d/2⌋`
//!   columns, category `⌊d/2⌋`) so that the CTR backbones and this one see the same inputs;
//!   [`TokenInput::Item`] is the official item-only token.
//! * **`max_seq_length` 50** by default instead of the official 200 (`overall.yaml`; 100 for
//!   Gowalla): the Amazon CTR histories average about 8 items, so 200 columns would be almost all
//!   padding (which this unmasked attention would mix in) and 4× the work.
//! * **L2-norm eps:** the norms are `sqrt(Σ x² + eps²)` with `norm_eps` 1e-6 (the official code
//!   divides by the bare norm); this keeps value and gradient finite for an all-zero head slice
//!   and moves the result by less than `eps`.
//! * **Padding token = position only.** RecBole's `nn.Embedding(padding_idx=0)` row is overwritten
//!   by its `normal_` init, so its padding tokens carry a fixed random vector; ours embed id 0 as
//!   exactly zero (frozen), so a padding token is `LN(Emb_pos)`.
//! * **Empty history** (length 0): RecBole would gather index −1; we read position 0 (the first
//!   padding token's representation).
//! * **Head count rule:** if `n_heads` does not divide `d`, the largest count below it that does is
//!   used ([`mtrec_nn::heads_for`], e.g. d = 36 with 8 heads → 6); RecBole raises an error.
//! * **CTR scoring:** the backbone stops before the dot product; the head is a linear layer on
//!   `z = h ⊙ e_target` (`specs/backbones.md` §4). `attn_dropout_prob` has no use in linear
//!   attention (as in the official code) and is not a field.
//!
//! # Cost
//!
//! On the CPU a layer is a handful of graph nodes: one matmul for the query, key and value
//! projections, the attention core (biases, ELUs, L2 norms, `Knᵀ·V`, `Qn·KV`) as one fused op,
//! the output projection, then its bias, dropout, residual add and LayerNorm as one op; the
//! feed-forward likewise (dense, bias + GELU, dense, bias + dropout + residual + LayerNorm); the
//! embedding block `dropout(LN(tokens + positions))` is one op too (`mtrec_nn`'s
//! `fused_linear_attention` and [`mtrec_nn::fused_pointwise`]). Fewer nodes matter because
//! candle's backward pays a zero-filled buffer and an add for every big intermediate tensor. The
//! f32 GELU evaluates erf with a vectorisable approximation within 1e-6 of libm's. The padded
//! positions take part in the attention, so the model cannot skip them as SASRec does.
//!
//! Only column `len − 1` is read, so the last layer runs its query side (query projection,
//! output projection, LayerNorms, feed-forward) for that row alone; keys and values still cover
//! the whole (padded) history. The result is the same as running the full layer (the parity test
//! covers it). A training step (forward, backward, Adam) of the default model (d = 128, 8 heads,
//! inner 256, L = 50, Amazon Electronics vocabulary) with a CTR head at B = 1024 takes 1.2–1.4 s
//! on the shared 2-core development machine at 2 threads, about 1.6x the PyTorch reference's
//! speed there (`cargo xtask bench --models linrec`; `examples/bench_linrec_parts.rs` times the
//! fused pieces one by one).

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use mtrec_nn::transformer::{
    check_dropout, check_layout, gather_rows, heads_for, last_positions, LinearAttention,
    LinearInit, PointwiseFfn, PositionalEmbedding, TokenEmbedding,
};
use mtrec_nn::{
    Align, Backbone, Batch, EmbeddingInit, Features, LayerNorm, Layout, PadPolicy, Vocab,
};
use serde::{Deserialize, Serialize};

pub use mtrec_nn::transformer::{FfnActivation, TokenInput};

/// The registry name.
pub const NAME: &str = "linrec";

/// LinRec hyper-parameters; the defaults are the official ones (`run.py`, `overall.yaml`) except
/// `max_seq_length` (see the crate docs). Field names follow RecBole's config keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Token and hidden width `d` (`hidden_size`, official 128).
    pub hidden_size: usize,
    /// Feed-forward inner width (`inner_size`, official 256).
    pub inner_size: usize,
    /// Number of transformer layers (`n_layers`, official 2).
    pub n_layers: usize,
    /// Requested attention heads (`n_heads`, official 8); reduced to the largest count that
    /// divides `hidden_size` if needed ([`mtrec_nn::heads_for`]).
    pub n_heads: usize,
    /// Fixed history width and position-table size (`MAX_ITEM_LIST_LENGTH`; official 200, ours 50).
    pub max_seq_length: usize,
    /// Dropout after the embedding LayerNorm, the attention output and the feed-forward output
    /// (`hidden_dropout_prob`, official 0.2). Active only when `train`.
    pub hidden_dropout_prob: f32,
    /// Feed-forward activation (`hidden_act`, official `gelu` = erf form).
    pub hidden_act: FfnActivation,
    /// LayerNorm epsilon (`layer_norm_eps`, official 1e-12).
    pub layer_norm_eps: f64,
    /// Standard deviation of the normal init of tables and linear weights (`initializer_range`,
    /// official 0.02).
    pub initializer_range: f64,
    /// Epsilon in the per-token L2 norms of the linear attention (ours; the official code has none).
    pub norm_eps: f64,
    /// What a token is made of (default: item and category embeddings; `item` = official).
    pub token: TokenInput,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            hidden_size: 128,
            inner_size: 256,
            n_layers: 2,
            n_heads: 8,
            max_seq_length: 50,
            hidden_dropout_prob: 0.2,
            hidden_act: FfnActivation::Gelu,
            layer_norm_eps: 1e-12,
            initializer_range: 0.02,
            norm_eps: 1e-6,
            token: TokenInput::ItemCategory,
        }
    }
}

/// One post-LN layer of RecBole's `TransformerEncoder` with LinRec's attention.
#[derive(Debug, Clone)]
struct Layer {
    attn: LinearAttention,
    attn_ln: LayerNorm,
    ffn: PointwiseFfn,
    ffn_ln: LayerNorm,
}

/// The LinRec trunk; see the crate docs.
#[derive(Debug, Clone)]
pub struct LinRec {
    cfg: Config,
    heads: usize,
    tokens: TokenEmbedding,
    pos: PositionalEmbedding,
    emb_ln: LayerNorm,
    layers: Vec<Layer>,
}

impl LinRec {
    /// Builds the trunk with RecBole's initialisation. Errors on an unusable config (zero sizes,
    /// dropout outside `[0, 1)`, a negative eps, a token too narrow for its parts).
    pub fn new(cfg: &Config, vocab: Vocab, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        if cfg.max_seq_length == 0 || cfg.inner_size == 0 {
            candle_core::bail!("linrec: max_seq_length and inner_size must be at least 1");
        }
        check_dropout("linrec hidden_dropout_prob", cfg.hidden_dropout_prob)?;
        let heads = heads_for(d, cfg.n_heads)?;
        let std = cfg.initializer_range;
        let tokens = TokenEmbedding::new(
            cfg.token,
            vocab,
            d,
            EmbeddingInit::Normal { std },
            ("item_embedding", "cat_embedding"),
            vb.clone(),
        )?;
        let pos = PositionalEmbedding::new(
            cfg.max_seq_length,
            d,
            EmbeddingInit::Normal { std },
            vb.pp("position_embedding"),
        )?;
        let emb_ln = LayerNorm::new(d, cfg.layer_norm_eps, vb.pp("LayerNorm"))?;
        let init = LinearInit::Normal { std };
        let p = cfg.hidden_dropout_prob;
        let layers = (0..cfg.n_layers)
            .map(|i| {
                let vb = vb.pp("trm_encoder").pp("layer").pp(i);
                let mha = vb.pp("multi_head_attention");
                let ff = vb.pp("feed_forward");
                Ok(Layer {
                    attn: LinearAttention::new(d, heads, cfg.norm_eps, init, mha.clone())?,
                    attn_ln: LayerNorm::new(d, cfg.layer_norm_eps, mha.pp("LayerNorm"))?,
                    // RecBole's FeedForward: dropout only after dense_2.
                    ffn: PointwiseFfn::new(
                        d,
                        cfg.inner_size,
                        cfg.hidden_act,
                        init,
                        (0.0, p),
                        ("dense_1", "dense_2"),
                        ff.clone(),
                    )?,
                    ffn_ln: LayerNorm::new(d, cfg.layer_norm_eps, ff.pp("LayerNorm"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            heads,
            tokens,
            pos,
            emb_ln,
            layers,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The number of attention heads in use (see [`Config::n_heads`]).
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// The sequence representation `h` `[B, d]`: the last layer's output at column `len − 1`
    /// (column 0 for an empty history).
    pub fn encode(&self, batch: &Batch, train: bool) -> Result<Tensor> {
        let l = self.cfg.max_seq_length;
        check_layout(
            NAME,
            batch,
            Align::Left,
            |w| w == l,
            &format!("exactly max_seq_length = {l} columns"),
        )?;
        let p = self.cfg.hidden_dropout_prob;
        // dropout(LN(tokens + positions)), one fused op on the CPU.
        let tokens = self.tokens.forward(&batch.hist_items, &batch.hist_cats)?;
        let mut x = self
            .emb_ln
            .forward_positions(&tokens, &self.pos.forward(0, l)?, p, train)?;
        let last = last_positions(&batch.lengths, l)?;
        let n = self.layers.len();
        for (i, layer) in self.layers.iter().enumerate() {
            // LN(dropout(sublayer) + residual) as one fused op per sublayer on the CPU.
            if i + 1 < n {
                x = layer
                    .attn
                    .forward_queries_add_norm(&x, &x, &x, &layer.attn_ln, p, train)?;
            } else {
                // Only column len − 1 is read, and each output row of the last layer depends on
                // its own query row only: run just those queries against all keys and values
                // (same values as the full layer, a fraction of the work).
                let rows = gather_rows(&x, &last)?.unsqueeze(1)?; // [B, 1, d]
                x = layer.attn.forward_queries_add_norm(
                    &rows,
                    &x,
                    &rows,
                    &layer.attn_ln,
                    p,
                    train,
                )?;
            }
            x = layer.ffn.forward_add_norm(&x, &layer.ffn_ln, train)?;
        }
        if n == 0 {
            return gather_rows(&x, &last);
        }
        x.squeeze(1)
    }

    /// The shown item's embedding `[B, d]` from the same tables as the tokens.
    pub fn target_embedding(&self, batch: &Batch) -> Result<Tensor> {
        self.tokens.forward(&batch.target_items, &batch.target_cats)
    }
}

impl Backbone for LinRec {
    fn name(&self) -> &str {
        NAME
    }

    fn feature_dim(&self) -> usize {
        self.cfg.hidden_size
    }

    fn layout(&self) -> Layout {
        Layout {
            max_history: self.cfg.max_seq_length,
            pad: PadPolicy::Fixed,
            align: Align::Left,
        }
    }

    /// `z = h ⊙ e_target` `[B, d]`.
    fn forward(&self, batch: &Batch, train: bool) -> Result<Features> {
        let h = self.encode(batch, train)?;
        let e = self.target_embedding(batch)?;
        Ok(Features::plain((h * e)?))
    }
}
