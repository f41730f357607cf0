//! SIGMA (partially flipped Mamba with a gated GRU branch) adapted to score (history, target)
//! pairs, as an MTRec backbone.
//!
//! Paper: Z. Liu et al., "SIGMA: Selective Gated Mamba for Sequential Recommendation"
//! (arXiv 2408.11451). Reference code: `ziwliu-cityu/SIMGA` @018d73a `model/gated_mamba.py` and
//! `model/config.yaml`, with `state-spaces/mamba` @e9594ce `mamba_ssm/modules/mamba_simple.py`
//! (class `Mamba`) for the Mamba mixer; distilled in `specs/backbones.md` §2.8. Our forward pass
//! matches a plain-PyTorch transcription of that code (`tests/reference/sigma.py`) to 1e-5 in f32
//! and ~1e-12 in f64 (`tests/parity.rs`).
//!
//! ```text
//! x  = LN_{1e-12}(dropout(token_emb(history)))            [B, L, d]      (no positional embedding)
//! x  = SigmaLayer(x)  × num_layers                        crate::block
//! h  = x[b, len_b − 1]                                    right padding (our Align::Left)
//! z  = h ⊙ token_emb(target)                              features [B, d]  (tied table)
//! ```
//!
//! The head ([`mtrec_nn::Head`]) replaces the official dot product `<h, e_target>`: with
//! [`HeadKind::Ctr`](mtrec_nn::HeadKind::Ctr) a linear layer on `z` can express exactly that score
//! (`Σ z`), and the Q / quantile heads read the same `z` (`specs/backbones.md` §4).
//!
//! | module | what |
//! |---|---|
//! | [`scan`] | the selective scan (plain, and gated like mamba_ssm's `selective_scan_fn`): fused CPU `CustomOp3`s with their own backward (default) and op-composed references |
//! | [`mamba`] | the Mamba mixer (`in_proj`, causal depthwise conv, `x_proj`, `dt_proj`, `A_log`, `D`, `out_proj`) |
//! | [`block`] | `GMambaBlock` (PF flip, DS gate, conv + GRU branch, mixing) and `SIGMALayers` |
//! | [`layers`] | PyTorch-named `Dense`, `ConvSame` (k = 3), causal depthwise conv (+ fused conv-SiLU op), bias-free `PtGru`, `FeedForward` |
//!
//! # Parameter names
//!
//! Those of the PyTorch `state_dict` (so the parity fixture loads straight into a `VarBuilder`):
//! `item_embedding.weight`, `cat_embedding.weight` (only with [`Tokens::ItemCategory`]),
//! `LayerNorm.{weight,bias}`, and per layer `i`: `mamba_layers.i.gmamba.{combining_weights,
//! dense1, dense2, projection, conv1d, gru.weight_ih_l0, gru.weight_hh_l0, selective_gate_si.1,
//! selective_gate_sig.1}`, `mamba_layers.i.gmamba.mamba.{in_proj.weight, conv1d.weight,
//! conv1d.bias, x_proj.weight, dt_proj.weight, dt_proj.bias, A_log, D, out_proj.weight}`,
//! `mamba_layers.i.LayerNorm`, `mamba_layers.i.ffn.{w_1, w_2, LayerNorm}`.
//! [`mtrec_nn::Model`] adds `head.weight`, `head.bias`.
//!
//! # Quirks of the official code we keep
//!
//! * **Partial flip.** The flipped branch reverses positions `0 .. L − r` (official: literally
//!   `45` with `L = 50`, i.e. `r = 5`, [`Config::flip_keep`]) and keeps the last `r`, over the
//!   *padded* row. With right padding and short histories the real items land near `L − r` and
//!   the output read at `len − 1` sees mostly padding in that branch. Kept by default
//!   ([`FlipMode::Official`]); [`FlipMode::LengthAware`] flips each row's first `len − r` real
//!   items instead (our option, not in the paper).
//! * **One Mamba for both directions** (same weights), and the flipped output is not un-flipped.
//! * **Gates:** activation *before* the linear layer (`nn.Sequential(SiLU(), Linear)`), and the
//!   second gate's sigmoid branch reads the *first gate's output* `h1g`, not `h2`.
//! * **Mixing weights** `combining_weights` are raw learnable scalars initialised `[0.1, 0.1,
//!   0.8]` (GRU, flipped Mamba, Mamba); the official softmax of them is computed and unused.
//! * The G-GRU branch is a `Conv1d(d, d, 3, padding = 1)` (sees one step ahead) feeding a
//!   bias-free PyTorch GRU; the official second convolution `gru_input` is dead code (skipped).
//! * `num_layers == 1` → no residual around the block (`LN(dropout(y))`), otherwise
//!   `LN(dropout(y) + x)`; FFN `d → 4d → d` with exact GELU; every LayerNorm eps 1e-12.
//! * Init: every Linear and Embedding `N(0, 0.02)`, Linear biases 0 — this **includes Mamba's
//!   `dt_proj`** (SIGMA's `_init_weights` overwrites mamba_ssm's dt init, so `δ ≈ 0.69` at the
//!   start); `A_log = log(1..N)`, `D = 1`; convolutions and the GRU keep PyTorch's default
//!   uniform init.
//!
//! # Deviations (and why)
//!
//! * **Tokens.** The official model embeds item ids only (d = 64). [`Tokens::ItemOnly`] (the
//!   default, official) does the same; [`Tokens::ItemCategory`] uses `[Emb_item ; Emb_cat]` with
//!   `d/2` columns each, for parity with the DIN-family CTR models (`specs/backbones.md` §4). The
//!   target is embedded with the same table(s) (tied, as in the official `predict`).
//! * **Padding token.** The official `nn.Embedding(padding_idx = 0)` row 0 is overwritten by the
//!   `N(0, 0.02)` init and then frozen: padding is a fixed random vector. Ours is exactly zero
//!   ([`mtrec_nn::Embedding`] with a frozen zero row), so `LN` maps padding to the LN bias.
//!   Padding still flows through the non-causal conv, the flip and (with `L` fixed) the GRU, as in
//!   the official code; it is not masked.
//! * **Scoring.** `z = h ⊙ e_target` goes to a head (see above) instead of the official full
//!   softmax over items.
//! * **Empty histories** (length 0, which RecBole never produces): read position 0, i.e. index
//!   `max(len, 1) − 1`. For such a row the whole input is padding, so every empty history gets the
//!   same learned "no history" vector `h`.
//! * **Flip index** for `L ≠ 50`: `L − r` (official hard-codes 45); nothing is flipped if `L ≤ r + 1`.
//! * **Selective scan.** Fused CPU kernels ([`ScanImpl::Fused`]) by default — same maths as
//!   mamba_ssm's `selective_scan_ref` (f32 uses a polynomial `exp`/`log`, relative error < 3e-7);
//!   mamba_ssm's CUDA kernel is not available on CPU. On CUDA devices (feature `cuda`) and for
//!   dtypes other than f32/f64 the op-composed versions run instead (untested: no CUDA toolkit
//!   here).
//! * Dropout masks come from candle's RNG (not reproducible bit-for-bit with PyTorch's).
//!
//! # Batch contract
//!
//! [`Backbone::layout`]: `max_history` = 50 columns, [`PadPolicy::Fixed`] (the flip index and the
//! non-causal conv depend on the padded width), [`Align::Left`] (oldest item in column 0, padding
//! at the end = RecBole's right padding). `forward` rejects other alignments and lengths larger
//! than the batch width. Only `hist_items`, `hist_cats`, `lengths`, `target_items`, `target_cats`
//! are read (`mask` is implied by `lengths`).

pub mod block;
mod kernel;
pub mod layers;
pub mod mamba;
pub mod scan;
#[cfg(test)]
mod testutil;

use candle_core::{Result, Tensor, D};
use candle_nn::VarBuilder;
use mtrec_nn::{
    Align, Backbone, Batch, Embedding, EmbeddingConfig, EmbeddingInit, Features, LayerNorm, Layout,
    PadPolicy, Vocab,
};

pub use block::{BlockConfig, GMambaBlock, SigmaLayer, COMBINING_WEIGHTS_INIT};
pub use mamba::{Mamba, MambaDims};
pub use scan::{
    selective_scan, selective_scan_composed, selective_scan_fused, selective_scan_gated, ScanImpl,
};

/// Registry name of this backbone.
pub const NAME: &str = "sigma";

/// What a history position (and the target) is embedded from.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Tokens {
    /// Item id only, `d` columns (official).
    #[default]
    ItemOnly,
    /// `[Emb_item ; Emb_cat]`, `d/2` columns each (`d` must be even).
    ItemCategory,
}

/// Which positions the flipped branch reverses.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum FlipMode {
    /// Positions `0 .. L − flip_keep` of the padded row, whatever the length (official).
    #[default]
    Official,
    /// Each row's first `len − flip_keep` real items (ours).
    LengthAware,
}

/// Errors in a [`Config`] or a batch that SIGMA cannot read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SigmaError {
    #[error("sigma config: {0}")]
    Config(String),
    #[error("sigma expects Align::Left (oldest item first, padding at the end), got {0:?}")]
    Align(Align),
    #[error("sigma: history length {length} in row {row} exceeds the batch width {width}")]
    Length {
        row: usize,
        length: u32,
        width: usize,
    },
    #[error("sigma: a batch needs at least one history column")]
    EmptyWidth,
}

impl From<SigmaError> for candle_core::Error {
    fn from(e: SigmaError) -> Self {
        candle_core::Error::wrap(e)
    }
}

/// SIGMA's hyper-parameters. Defaults are the official `model/config.yaml` values.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Model width d (`hidden_size`, official 64); also the feature size handed to the head.
    pub hidden_size: usize,
    /// Token embedding: item only (official) or item ‖ category (each `hidden_size / 2`).
    pub tokens: Tokens,
    /// Number of `SIGMALayers` (official 1; with 1 there is no residual around the block).
    pub num_layers: usize,
    /// Dropout of the embedding, the layer output and the FFN (`dropout_prob`, official 0.2).
    pub dropout: f64,
    /// Dropout of the selective gates (hard-coded 0.2 in the official code).
    pub gate_dropout: f64,
    /// Mamba state size N (`d_state`, official 32).
    pub d_state: usize,
    /// Mamba causal depthwise convolution width (`d_conv`, official 4).
    pub d_conv: usize,
    /// Mamba expansion: `d_inner = expand · hidden_size` (official 2).
    pub expand: usize,
    /// Rank of Mamba's δ projection; `None` = mamba_ssm's `ceil(hidden_size / 16)`.
    pub dt_rank: Option<usize>,
    /// History columns of a batch (`MAX_ITEM_LIST_LENGTH`, official 50), padded to exactly this.
    pub max_history: usize,
    /// The flipped branch keeps the last `flip_keep` positions (official `L − 45` = 5).
    pub flip_keep: usize,
    /// Which positions the flipped branch reverses.
    pub flip: FlipMode,
    /// Standard deviation of the `N(0, σ²)` init of Linear and Embedding weights (0.02).
    pub init_std: f64,
    /// Epsilon of every LayerNorm (1e-12).
    pub layer_norm_eps: f64,
    /// Mamba's kernels: `fused` (default) runs the selective scan with softplus, `D` and the
    /// `silu(z)` gate, and the causal conv + SiLU, as CPU custom ops with hand-written backward
    /// passes (`O(B·L·d_inner)` memory); `composed` builds them from candle ops (reference,
    /// `O(B·L·d_inner·N)` memory for the scan). Non-CPU devices always use `composed`.
    pub scan: ScanImpl,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hidden_size: 64,
            tokens: Tokens::ItemOnly,
            num_layers: 1,
            dropout: 0.2,
            gate_dropout: 0.2,
            d_state: 32,
            d_conv: 4,
            expand: 2,
            dt_rank: None,
            max_history: 50,
            flip_keep: 5,
            flip: FlipMode::Official,
            init_std: 0.02,
            layer_norm_eps: 1e-12,
            scan: ScanImpl::Fused,
        }
    }
}

impl Config {
    /// `dt_rank`, or `ceil(hidden_size / 16)`.
    pub fn dt_rank(&self) -> usize {
        self.dt_rank.unwrap_or(self.hidden_size.div_ceil(16))
    }

    /// Checks sizes and rates.
    pub fn validate(&self) -> std::result::Result<(), SigmaError> {
        let bad = |m: String| Err(SigmaError::Config(m));
        let positive = [
            ("hidden_size", self.hidden_size),
            ("num_layers", self.num_layers),
            ("d_state", self.d_state),
            ("d_conv", self.d_conv),
            ("expand", self.expand),
            ("dt_rank", self.dt_rank()),
            ("max_history", self.max_history),
        ];
        for (name, v) in positive {
            if v == 0 {
                return bad(format!("{name} must be positive"));
            }
        }
        if self.tokens == Tokens::ItemCategory && self.hidden_size % 2 != 0 {
            return bad(format!(
                "tokens = item_category needs an even hidden_size, got {}",
                self.hidden_size
            ));
        }
        for (name, p) in [
            ("dropout", self.dropout),
            ("gate_dropout", self.gate_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return bad(format!("{name} must be in [0, 1), got {p}"));
            }
        }
        if !(self.init_std.is_finite() && self.init_std >= 0.0) {
            return bad(format!(
                "init_std must be finite and >= 0, got {}",
                self.init_std
            ));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return bad(format!(
                "layer_norm_eps must be > 0, got {}",
                self.layer_norm_eps
            ));
        }
        Ok(())
    }

    fn block(&self) -> BlockConfig {
        BlockConfig {
            mamba: MambaDims {
                d_model: self.hidden_size,
                d_state: self.d_state,
                d_conv: self.d_conv,
                expand: self.expand,
                dt_rank: self.dt_rank(),
            },
            dropout: self.dropout,
            gate_dropout: self.gate_dropout,
            init_std: self.init_std,
            eps: self.layer_norm_eps,
            num_layers: self.num_layers,
            scan: self.scan,
        }
    }
}

/// The per-row time permutation of the flipped branch: `perm[t]` = source position of `t`.
pub fn flip_permutation(width: usize, length: usize, keep: usize, mode: FlipMode) -> Vec<usize> {
    let span = match mode {
        FlipMode::Official => width.saturating_sub(keep),
        FlipMode::LengthAware => length.min(width).saturating_sub(keep),
    };
    (0..width)
        .map(|t| if t < span { span - 1 - t } else { t })
        .collect()
}

/// The SIGMA backbone (see the crate docs).
#[derive(Debug, Clone)]
pub struct Sigma {
    cfg: Config,
    items: Embedding,
    cats: Option<Embedding>,
    norm: LayerNorm,
    layers: Vec<SigmaLayer>,
}

impl Sigma {
    /// Builds the model under `vb` (parameter names in the crate docs). Needs `vocab.items`
    /// (and `vocab.categories` with [`Tokens::ItemCategory`]); users are not embedded.
    pub fn new(cfg: &Config, vocab: Vocab, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let emb_cfg = EmbeddingConfig {
            init: EmbeddingInit::Normal { std: cfg.init_std },
            // Keep row 0 of weights loaded from safetensors; the output at id 0 is zeroed anyway.
            zero_padding_init: !vb.contains_tensor("item_embedding.weight"),
            freeze_padding: true,
        };
        let (items, cats) = match cfg.tokens {
            Tokens::ItemOnly => (
                Embedding::new(
                    vocab.items,
                    cfg.hidden_size,
                    emb_cfg,
                    vb.pp("item_embedding"),
                )?,
                None,
            ),
            Tokens::ItemCategory => {
                let e = cfg.hidden_size / 2;
                (
                    Embedding::new(vocab.items, e, emb_cfg, vb.pp("item_embedding"))?,
                    Some(Embedding::new(
                        vocab.categories,
                        e,
                        emb_cfg,
                        vb.pp("cat_embedding"),
                    )?),
                )
            }
        };
        let block = cfg.block();
        let layers = (0..cfg.num_layers)
            .map(|i| SigmaLayer::new(&block, vb.pp("mamba_layers").pp(i)))
            .collect::<Result<_>>()?;
        Ok(Sigma {
            cfg: cfg.clone(),
            items,
            cats,
            norm: LayerNorm::new(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("LayerNorm"))?,
            layers,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Token embeddings of `items` / `cats` (same shape) → `[.., d]`.
    fn embed(&self, items: &Tensor, cats: &Tensor) -> Result<Tensor> {
        let e = self.items.forward(items)?;
        match &self.cats {
            Some(c) => Tensor::cat(&[e, c.forward(cats)?], D::Minus1),
            None => Ok(e),
        }
    }

    /// The sequence output `[B, L, d]` before the read-out (all positions).
    pub fn sequence_output(&self, batch: &Batch, train: bool) -> Result<Tensor> {
        let lengths = self.checked_lengths(batch)?;
        self.run_layers(batch, &lengths, train)
    }

    fn checked_lengths(&self, batch: &Batch) -> Result<Vec<usize>> {
        if batch.align != Align::Left {
            return Err(SigmaError::Align(batch.align).into());
        }
        let width = batch.hist_items.dim(1)?;
        if width == 0 {
            return Err(SigmaError::EmptyWidth.into());
        }
        let lengths: Vec<u32> = batch.lengths.to_dtype(candle_core::DType::U32)?.to_vec1()?;
        for (row, &length) in lengths.iter().enumerate() {
            if length as usize > width {
                return Err(SigmaError::Length { row, length, width }.into());
            }
        }
        Ok(lengths.into_iter().map(|l| l as usize).collect())
    }

    fn run_layers(&self, batch: &Batch, lengths: &[usize], train: bool) -> Result<Tensor> {
        let width = batch.hist_items.dim(1)?;
        let x = self.embed(&batch.hist_items, &batch.hist_cats)?;
        let x = layers::dropout(&x, self.cfg.dropout, train)?;
        let mut x = self.norm.forward(&x)?;
        let flip: Vec<Vec<usize>> = lengths
            .iter()
            .map(|&len| flip_permutation(width, len, self.cfg.flip_keep, self.cfg.flip))
            .collect();
        for layer in &self.layers {
            x = layer.forward(&x, &flip, train)?;
        }
        Ok(x)
    }
}

impl Backbone for Sigma {
    fn name(&self) -> &str {
        NAME
    }

    fn feature_dim(&self) -> usize {
        self.cfg.hidden_size
    }

    fn layout(&self) -> Layout {
        Layout {
            max_history: self.cfg.max_history,
            pad: PadPolicy::Fixed,
            align: Align::Left,
        }
    }

    fn forward(&self, batch: &Batch, train: bool) -> Result<Features> {
        let lengths = self.checked_lengths(batch)?;
        let x = self.run_layers(batch, &lengths, train)?;
        let read: Vec<usize> = lengths.iter().map(|&l| l.max(1) - 1).collect();
        let h = layers::gather_rows(&x, &read)?;
        let target = self.embed(&batch.target_items, &batch.target_cats)?;
        Ok(Features::plain((h * target)?))
    }
}

#[cfg(test)]
mod tests;
