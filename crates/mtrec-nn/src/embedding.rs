//! Embedding tables with id 0 as padding, and masked pooling over a padded sequence.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

/// The distribution of an [`Embedding`] table's initial rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EmbeddingInit {
    /// `N(0, std²)`: PyTorch / candle use 1.0, transformers (SASRec ports, RecBole) 0.02.
    Normal { std: f64 },
    /// `U(±sqrt(6 / (vocab + dim)))`: TensorFlow 1's default for `tf.get_variable`, which the DIN
    /// and DIEN reference codes use for their tables (tiny values for large vocabularies).
    GlorotUniform,
}

/// How an [`Embedding`] table is initialised and how it treats the padding id 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EmbeddingConfig {
    /// How the rows are initialised.
    pub init: EmbeddingInit,
    /// Whether row 0 is overwritten with zeros when the table is built. Only use `false` to keep
    /// row 0 of weights loaded through a safetensors-backed `VarBuilder` (with a `VarMap`, `load`
    /// after construction overwrites the table anyway).
    pub zero_padding_init: bool,
    /// Whether the output at id 0 is multiplied by zero (PyTorch's `padding_idx`): the padding
    /// output is then exactly zero and row 0 never receives a gradient, so it stays at its initial
    /// zeros under SGD and Adam(W). With `false`, row 0 is an ordinary trainable row (as in the DIN
    /// and DIEN reference codes, which rely on masks downstream instead).
    pub freeze_padding: bool,
}

impl Default for EmbeddingConfig {
    fn default() -> Self {
        Self {
            init: EmbeddingInit::Normal { std: 1.0 },
            zero_padding_init: true,
            freeze_padding: true,
        }
    }
}

/// An embedding table `[vocab, dim]` looked up with `index_select` (like `candle_nn::Embedding`),
/// where id 0 is padding.
///
/// Row 0 starts at zero (by default) and, with [`EmbeddingConfig::freeze_padding`] (the default),
/// is **not trainable in effect**: the lookup output at id 0 is masked to zero, so row 0 gets a zero
/// gradient and keeps its zeros. The table itself is one `Var` (named `weight`), so optimisers still
/// see it; there are no sparse gradients in candle, the gradient is dense `[vocab, dim]`.
#[derive(Debug, Clone)]
pub struct Embedding {
    weight: Tensor,
    dim: usize,
    freeze_padding: bool,
}

impl Embedding {
    /// Builds a `[vocab, dim]` table named `vb.pp(..)` + `weight`.
    pub fn new(vocab: usize, dim: usize, cfg: EmbeddingConfig, vb: VarBuilder) -> Result<Self> {
        let init = match cfg.init {
            EmbeddingInit::Normal { std } => Init::Randn {
                mean: 0.0,
                stdev: std,
            },
            EmbeddingInit::GlorotUniform => {
                let bound = (6.0 / (vocab + dim).max(1) as f64).sqrt();
                Init::Uniform {
                    lo: -bound,
                    up: bound,
                }
            }
        };
        let weight = vb.get_with_hints((vocab, dim), "weight", init)?;
        if cfg.zero_padding_init && vocab > 0 {
            // In-place write into the variable's storage (shared with the VarMap's Var).
            let zeros = Tensor::zeros((1, dim), weight.dtype(), weight.device())?;
            weight.slice_set(&zeros, 0, 0)?;
        }
        Ok(Self {
            weight,
            dim,
            freeze_padding: cfg.freeze_padding,
        })
    }

    /// Builds a table with [`EmbeddingConfig::default`].
    pub fn with_defaults(vocab: usize, dim: usize, vb: VarBuilder) -> Result<Self> {
        Self::new(vocab, dim, EmbeddingConfig::default(), vb)
    }

    /// The table `[vocab, dim]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The embedding dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Looks up integer ids of any shape `[..]` (u32 or i64), giving `[.., dim]`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let mut out_dims = ids.dims().to_vec();
        out_dims.push(self.dim);
        let flat = ids.flatten_all()?;
        let mut out = self.weight.index_select(&flat, 0)?;
        if self.freeze_padding {
            let keep = flat.ne(0u32)?.to_dtype(out.dtype())?.unsqueeze(1)?;
            out = out.broadcast_mul(&keep)?;
        }
        out.reshape(out_dims)
    }
}

impl Module for Embedding {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Embedding::forward(self, xs)
    }
}

/// The mask as a `[B, T, 1]` tensor of `x`'s dtype.
fn mask3(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let (b, t, _) = x.dims3()?;
    let (mb, mt) = mask.dims2()?;
    if (b, t) != (mb, mt) {
        candle_core::bail!("mask shape [{mb}, {mt}] does not match x [{b}, {t}, _]");
    }
    mask.to_dtype(x.dtype())?.unsqueeze(2)
}

/// Masked sum pooling: `Σ_t mask[b,t] · x[b,t,:]`, `[B,T,D]` with `[B,T]` → `[B,D]`.
pub fn masked_sum(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    // `[B, 1, T]·[B, T, D]`: a batched matmul, whose backward is matmuls too (a broadcast
    // multiply and a sum over `T` cost candle's CPU backend a strided reduction each way).
    let (b, t, _) = x.dims3()?;
    mask3(x, mask)?
        .reshape((b, 1, t))?
        .matmul(&x.contiguous()?)?
        .squeeze(1)
}

/// Masked mean pooling: `masked_sum / max(Σ_t mask, 1e-12)`, `[B,T,D]` with `[B,T]` → `[B,D]`.
/// A row whose mask is all zero gives a zero vector (not NaN).
pub fn masked_mean(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let m = mask3(x, mask)?;
    let sum = x.broadcast_mul(&m)?.sum(1)?;
    let count = m.sum(1)?.maximum(1e-12)?; // [B, 1]
    sum.broadcast_div(&count)
}

/// A float `[B,T]` mask (1 = real) from `[B,T]` integer ids: `ids != 0`.
pub fn mask_from_ids(ids: &Tensor, dtype: DType) -> Result<Tensor> {
    ids.ne(0u32)?.to_dtype(dtype)
}

/// A float `[B,T]` mask with `mask[b,t] = t < lengths[b]` (right padding), lengths `[B]` u32/i64.
pub fn mask_from_lengths(lengths: &Tensor, t: usize, dtype: DType) -> Result<Tensor> {
    let pos = Tensor::arange(0u32, t as u32, lengths.device())?
        .to_dtype(DType::F64)?
        .unsqueeze(0)?;
    let len = lengths.to_dtype(DType::F64)?.unsqueeze(D::Minus1)?;
    pos.broadcast_lt(&len)?.to_dtype(dtype)
}
