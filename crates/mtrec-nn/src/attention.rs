//! DIN's local activation unit (Zhou et al. 2018, §4.3 and Fig. 2; DIEN code `din_attention`).

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::dense::dense;
use crate::mlp::{Activation, Mlp, MlpConfig};
use crate::norm::masked_softmax_with_fill;
use crate::packed::PackedHistory;

/// How the attention scores `s_t` become the pooling weights `w_t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttentionNorm {
    /// `w = softmax_t(mask ? s : fill)`: the DIEN repository's `din_attention` (`softmax_stag=1`,
    /// fill `-2^32+1`) and also the DIN repository's `din/model.py::attention`. The weights sum to 1
    /// over real positions; an empty history gives uniform weights over the (zero) padding keys.
    Softmax,
    /// `w = mask ⊙ s`: the DIN paper's choice (§4.3, "normalization with softmax ∘ is abandoned")
    /// to keep the intensity of the user's interests; the weighted sum is unnormalised.
    None,
}

/// Configuration of a [`DinAttention`].
#[derive(Debug, Clone, PartialEq)]
pub struct DinAttentionConfig {
    /// Dimension `D` of the query and of each key.
    pub dim: usize,
    /// Hidden sizes of the score MLP (DIN / DIEN codes: `[80, 40]`), followed by `Linear(·, 1)`.
    pub hidden: Vec<usize>,
    /// Activation of the hidden layers (both official codes: sigmoid; the paper mentions PReLU/Dice).
    pub activation: Activation,
    pub norm: AttentionNorm,
    /// Divide the scores by `sqrt(D)` before masking/normalising (DIN repo: yes; DIEN repo: no).
    pub scale: bool,
    /// Fill of masked scores under [`AttentionNorm::Softmax`] (reference codes: `-2^32 + 1`).
    pub fill: f64,
}

impl DinAttentionConfig {
    /// The DIEN repository's setting (our DIN backbone, `specs/backbones.md` §2.4): hidden `[80, 40]`,
    /// sigmoid, softmax with the `-2^32+1` fill, no scaling.
    pub fn dien(dim: usize) -> Self {
        Self {
            dim,
            hidden: vec![80, 40],
            activation: Activation::Sigmoid,
            norm: AttentionNorm::Softmax,
            scale: false,
            fill: -4_294_967_295.0,
        }
    }

    /// The DIN paper's setting: hidden `[80, 40]`, sigmoid, no softmax, no scaling.
    pub fn din_paper(dim: usize) -> Self {
        Self {
            norm: AttentionNorm::None,
            ..Self::dien(dim)
        }
    }
}

/// DIN's local activation unit: for a query `q` `[B, D]` (the candidate item) and keys `k`
/// `[B, T, D]` (the behaviour history) with a `[B, T]` mask, the score of position `t` is
/// `s_t = MLP([q ; k_t ; q − k_t ; q ⊙ k_t])` (input `4D`, hidden layers, then `Linear(·, 1)`), the
/// weights follow [`AttentionNorm`], and the output is `Σ_t w_t k_t` `[B, D]`.
///
/// Parameters live under `mlp.*` (see [`Mlp`]: `mlp.fc0`, `mlp.fc1`, …, `mlp.out`). Under
/// [`AttentionNorm::Softmax`] the final bias `mlp.out.bias` is redundant (softmax is shift-invariant)
/// and always gets a zero gradient, as in the reference codes; under [`AttentionNorm::None`] every
/// parameter is trained.
///
/// Weights are **softmax-normalised by default** ([`DinAttentionConfig::dien`], the code our DIN
/// backbone follows); [`DinAttentionConfig::din_paper`] gives the paper's unnormalised weights.
/// The softmax uses `ops::softmax` (differentiable), and the fill is finite, so an empty history
/// never produces NaN.
#[derive(Debug, Clone)]
pub struct DinAttention {
    mlp: Mlp,
    cfg: DinAttentionConfig,
}

impl DinAttention {
    pub fn new(cfg: &DinAttentionConfig, vb: VarBuilder) -> Result<Self> {
        let mlp_cfg = MlpConfig::new(4 * cfg.dim, &cfg.hidden, cfg.activation).with_output(1);
        let mlp = Mlp::new(&mlp_cfg, vb.pp("mlp"))?;
        Ok(Self {
            mlp,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &DinAttentionConfig {
        &self.cfg
    }

    /// The raw scores `s` `[B, T]` (scaled if configured, not masked).
    pub fn scores(&self, query: &Tensor, keys: &Tensor) -> Result<Tensor> {
        let (b, t, d) = keys.dims3()?;
        let (qb, qd) = query.dims2()?;
        if (qb, qd) != (b, d) {
            candle_core::bail!("DinAttention: query [{qb}, {qd}] vs keys [{b}, {t}, {d}]");
        }
        let every = PackedHistory::dense(b, t, keys.device())?;
        self.scores_packed(query, &keys.reshape((b * t, d))?, &every)?
            .reshape((b, t))
    }

    /// The raw scores `[N]` of keys given as rows `[N, D]`, row `i` belonging to sample
    /// `pk.segments()[i]` (see [`PackedHistory`]).
    ///
    /// The first layer is computed as `W·[q ; k ; q − k ; q ⊙ k] + b
    /// = ((W_q + W_d)·q + b) + [W_k − W_d, W_p]·[k ; q ⊙ k]`, where `W_q, W_k, W_d, W_p` are the four
    /// `D`-column blocks of `W`: the query's part is computed once per sample instead of once per
    /// position, and the per-position product has `2D` inputs instead of `4D`, with no `[N, 4D]`
    /// concatenation. Equal to the direct form up to the order of float sums (the parity fixtures
    /// check it to 1e-5); the gradients reach `W` through the same blocks.
    pub fn scores_packed(
        &self,
        query: &Tensor,
        keys: &Tensor,
        pk: &PackedHistory,
    ) -> Result<Tensor> {
        let (b, d) = query.dims2()?;
        let (n, kd) = keys.dims2()?;
        if kd != d || b != pk.batch() || n != pk.len() {
            candle_core::bail!(
                "DinAttention: query [{b}, {d}] and keys [{n}, {kd}] for {} positions of {} samples",
                pk.len(),
                pk.batch()
            );
        }
        let Some(first) = self.mlp.first_layer() else {
            candle_core::bail!("DinAttention: the score MLP has no layer");
        };
        let w = first.weight();
        let block = |i: usize| w.narrow(1, i * d, d);
        let (w_q, w_k, w_d, w_p) = (block(0)?, block(1)?, block(2)?, block(3)?);
        let per_query = dense(query, &(w_q + &w_d)?, Some(first.bias()))?; // [B, H]
        let q = pk.expand(query)?; // [N, D]
        let inputs = Tensor::cat(&[keys, &(&q * keys)?], 1)?; // [N, 2D]
        let w_kp = Tensor::cat(&[&(w_k - &w_d)?, &w_p], 1)?; // [H, 2D]
        let z = (pk.expand(&per_query)? + dense(&inputs, &w_kp, None)?)?;
        let s = self.mlp.forward_after_first(&z)?.squeeze(1)?; // [N]
        if self.cfg.scale {
            s / (d as f64).sqrt()
        } else {
            Ok(s)
        }
    }

    /// Scores `[N]` of real positions to weights, per [`AttentionNorm`] within each sample.
    fn normalise_packed(&self, s: Tensor, pk: &PackedHistory) -> Result<Tensor> {
        match self.cfg.norm {
            AttentionNorm::Softmax => pk.segment_softmax(&s),
            AttentionNorm::None => Ok(s),
        }
    }

    /// The pooling weights `[B, T]` over padded keys `[B, T, D]`, computed on the real positions
    /// `pk` only: equal to [`Self::weights`] there, and 0 at padding (where [`Self::weights`] gives
    /// 0 too, except for an empty history, which it spreads uniformly over the zero keys).
    pub fn weights_packed(
        &self,
        query: &Tensor,
        keys: &Tensor,
        pk: &PackedHistory,
    ) -> Result<Tensor> {
        let s = self.scores_packed(query, &pk.gather(keys)?, pk)?;
        pk.scatter(&self.normalise_packed(s, pk)?)
    }

    /// The weights `[N]` and the weighted sums `[B, D]` over keys given as rows `[N, D]` (the real
    /// history positions, [`PackedHistory`]): the same values as [`Self::forward_with_weights`] on
    /// the padded `[B, T, D]` keys, where masked positions get exact zero weight, at the cost of the
    /// `N` real positions only. An empty history pools to zeros, as in the padded form.
    pub fn forward_packed(
        &self,
        query: &Tensor,
        keys: &Tensor,
        pk: &PackedHistory,
    ) -> Result<(Tensor, Tensor)> {
        let w = self.normalise_packed(self.scores_packed(query, keys, pk)?, pk)?;
        let pooled = pk.segment_sum(&keys.broadcast_mul(&w.unsqueeze(1)?)?)?;
        Ok((w, pooled))
    }

    /// The pooling weights `w` `[B, T]`.
    pub fn weights(&self, query: &Tensor, keys: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let s = self.scores(query, keys)?;
        let mask = mask.to_dtype(s.dtype())?;
        match self.cfg.norm {
            AttentionNorm::Softmax => masked_softmax_with_fill(&s, &mask, self.cfg.fill),
            AttentionNorm::None => s * mask,
        }
    }

    /// The weights `[B, T]` and the weighted sum `[B, D]`.
    pub fn forward_with_weights(
        &self,
        query: &Tensor,
        keys: &Tensor,
        mask: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let w = self.weights(query, keys, mask)?;
        // Σ_t w_t k_t as a batched matmul `[B, 1, T]·[B, T, D]`: both gradients are matmuls too.
        let pooled = w.unsqueeze(1)?.matmul(&keys.contiguous()?)?.squeeze(1)?;
        Ok((w, pooled))
    }

    /// The weighted sum `Σ_t w_t k_t` `[B, D]`.
    pub fn forward(&self, query: &Tensor, keys: &Tensor, mask: &Tensor) -> Result<Tensor> {
        Ok(self.forward_with_weights(query, keys, mask)?.1)
    }
}
