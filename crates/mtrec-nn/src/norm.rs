//! Differentiable layer normalisation and (masked) softmax.

use candle_core::{Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

use crate::dense::{add_last, mul_last};

/// Layer normalisation over the last dimension that **passes gradients**:
/// `(x − mean) / sqrt(var + eps) ⊙ weight + bias` (biased variance, like PyTorch and TF).
///
/// Composed from differentiable ops like `candle_nn::ops::layer_norm_slow`, never on
/// `candle_nn::LayerNorm` / `ops::layer_norm`, whose fused kernel has no backward and silently
/// detaches its output. Parameters: `weight` (init 1) and `bias` (init 0), `[C]`.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(dim, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(dim, "bias", Init::Const(0.0))?;
        Ok(Self { weight, bias, eps })
    }

    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// `γ ⊙ (x − mean) / sqrt(var + eps) + β` over the last dimension. On CPU f32/f64 the whole
    /// layer is one fused op with its own backward ([`crate::fused_pointwise`]; the normalisation
    /// alone, `fused_norm`, when the parameters' dtype differs); elsewhere it is composed
    /// from candle ops ([`LayerNorm::forward_composed`]).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // eps rounded through f32, as `candle_nn::ops::layer_norm_slow` does.
        let eps = self.eps as f32 as f64;
        if let Some(y) = crate::fused_pointwise::layer_norm(x, &self.weight, &self.bias, eps)? {
            return Ok(y);
        }
        if !crate::custom_op::fused_ok(x) {
            return self.forward_composed(x);
        }
        let op = crate::fused_norm::NormalizeOp { eps };
        let normed = x.contiguous()?.apply_op1(op)?;
        add_last(&mul_last(&normed, &self.weight)?, &self.bias)
    }

    /// The op-composed form: `candle_nn::ops::layer_norm_slow`'s arithmetic (eps rounded through
    /// f32 as it does), with the weight and bias applied by `mul_last`/`add_last` so their
    /// gradients are matmuls. The reference of the fused op's tests, and the path off the CPU.
    pub fn forward_composed(&self, x: &Tensor) -> Result<Tensor> {
        let c = x.dim(D::Minus1)?;
        let mean = (x.sum_keepdim(D::Minus1)? / c as f64)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = (centred.sqr()?.sum_keepdim(D::Minus1)? / c as f64)?;
        let eps = self.eps as f32 as f64;
        let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
        add_last(&mul_last(&normed, &self.weight)?, &self.bias)
    }
}

impl candle_core::Module for LayerNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        LayerNorm::forward(self, xs)
    }
}

/// Softmax over the last dimension via `candle_nn::ops::softmax(x, D::Minus1)`, which is composed
/// from differentiable ops (`ops::softmax_last_dim` has no backward).
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::softmax(x, D::Minus1)
}

/// Softmax over the last dimension where positions with `mask == 0` get the score `-1e9` first.
/// `mask` has `scores`' shape (any float or integer dtype). An all-masked row gives uniform, finite
/// weights (never NaN); multiply by the mask afterwards if you need zeros there.
pub fn masked_softmax(scores: &Tensor, mask: &Tensor) -> Result<Tensor> {
    masked_softmax_with_fill(scores, mask, -1e9)
}

/// [`masked_softmax`] with a chosen fill value (DIEN / DIN reference codes: `-2^32 + 1`).
pub fn masked_softmax_with_fill(scores: &Tensor, mask: &Tensor, fill: f64) -> Result<Tensor> {
    if mask.dims() != scores.dims() {
        candle_core::bail!(
            "masked_softmax: mask {:?} and scores {:?} differ",
            mask.dims(),
            scores.dims()
        );
    }
    let keep = mask.ne(0.0)?;
    // where_cond does not broadcast: build the fill at the scores' shape.
    let fill = Tensor::full(fill, scores.shape(), scores.device())?.to_dtype(scores.dtype())?;
    let filled = keep.where_cond(scores, &fill)?;
    softmax(&filled)
}
