//! Differentiable layer normalisation and (masked) softmax.

use candle_core::{Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

use crate::dense::{add_last, mul_last};
use crate::fused_pointwise::PointwiseAct;

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
    /// layer is one fused op with its own backward ([`crate::fused_pointwise`]); elsewhere it is
    /// composed from candle ops ([`LayerNorm::forward_composed`]).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // eps rounded through f32, as `candle_nn::ops::layer_norm_slow` does.
        let eps = self.eps as f32 as f64;
        match crate::fused_pointwise::layer_norm(x, &self.weight, &self.bias, eps)? {
            Some(y) => Ok(y),
            None => self.forward_composed(x),
        }
    }

    /// `LN((y + b) ⊙ mask + residual)`: the tail of a post-LN transformer sublayer whose last
    /// dense layer produced `y` without its bias `b` (`mask` its dropout mask, if any). On CPU
    /// f32/f64 one fused op with its own backward (the same values as the composed form, bit
    /// for bit); elsewhere [`bias_act`](crate::fused_pointwise::bias_act), `+` and
    /// [`forward`](Self::forward).
    pub fn forward_residual(
        &self,
        y: &Tensor,
        b: &Tensor,
        mask: Option<&Tensor>,
        residual: &Tensor,
    ) -> Result<Tensor> {
        let eps = self.eps as f32 as f64;
        let fused =
            crate::fused_pointwise::add_norm(y, b, mask, residual, &self.weight, &self.bias, eps)?;
        match fused {
            Some(out) => Ok(out),
            None => {
                let z = crate::fused_pointwise::bias_act(y, b, PointwiseAct::Identity, mask)?;
                self.forward(&(z + residual)?)
            }
        }
    }

    /// `dropout(LN(x + pos))` for `x` `[B, L, C]` and position rows `pos` `[L, C]` (added to
    /// every sample): a transformer's embedding block, dropout with probability `p` when
    /// `train`. On CPU f32/f64 one fused op with its own backward; elsewhere
    /// [`PositionalEmbedding::add_to`](crate::PositionalEmbedding::add_to)'s sum,
    /// [`forward`](Self::forward) and the dropout mask. The mask is drawn after the sum, as
    /// the composed form draws it.
    pub fn forward_positions(
        &self,
        x: &Tensor,
        pos: &Tensor,
        p: f32,
        train: bool,
    ) -> Result<Tensor> {
        let eps = self.eps as f32 as f64;
        let mask = crate::dropout::mask_like(x, p, train)?;
        let fused = crate::fused_pointwise::position_norm(
            x,
            pos,
            &self.weight,
            &self.bias,
            mask.as_ref(),
            eps,
        )?;
        if let Some(out) = fused {
            return Ok(out);
        }
        let (b, l, c) = x.dims3()?;
        let rows = crate::dense::expand_rows(&pos.flatten_all()?, b)?.reshape((b, l, c))?;
        let y = self.forward(&(x + rows)?)?;
        match mask {
            Some(m) => y * m,
            None => Ok(y),
        }
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

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};
    use candle_nn::{VarBuilder, VarMap};

    use super::LayerNorm;
    use crate::testing::assert_gradients_match;

    fn layer_norm(dim: usize, eps: f64, dtype: DType) -> (VarMap, LayerNorm) {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, dtype, &Device::Cpu);
        let ln = LayerNorm::new(dim, eps, vb).unwrap();
        // Non-trivial γ, β.
        for (name, var) in vm.data().lock().unwrap().iter() {
            let n = var.elem_count();
            let v: Vec<f64> = (0..n)
                .map(|i| {
                    if name.contains("weight") {
                        0.5 + 0.1 * i as f64
                    } else {
                        0.05 * i as f64 - 0.1
                    }
                })
                .collect();
            var.set(
                &Tensor::from_vec(v, n, &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap();
        }
        (vm, ln)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        crate::ctr::testkit::max_abs_diff(a, b).unwrap()
    }

    #[test]
    fn fused_matches_composed_values_and_gradients() {
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 2e-5)] {
            let (vm, ln) = layer_norm(7, 1e-8, dtype);
            let x = Var::from_tensor(
                &(Tensor::randn(0f64, 2.0, (3, 5, 7), &Device::Cpu).unwrap() + 0.7)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap();
            let w = Tensor::randn(0f64, 1.0, (3, 5, 7), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let fused = ln.forward(x.as_tensor()).unwrap();
            let composed = ln.forward_composed(x.as_tensor()).unwrap();
            assert!(max_diff(&fused, &composed) < tol, "{dtype:?}");
            let gf = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let gc = (composed * &w)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let mut vars: Vec<Tensor> = vec![x.as_tensor().clone()];
            vars.extend(vm.all_vars().iter().map(|v| v.as_tensor().clone()));
            for v in &vars {
                let (a, b) = (gf.get(v).unwrap(), gc.get(v).unwrap());
                assert!(max_diff(a, b) < 10.0 * tol, "{dtype:?}: {}", max_diff(a, b));
            }
        }
    }

    #[test]
    fn fused_gradient_matches_finite_differences() {
        let (_, ln) = layer_norm(6, 1e-5, DType::F64);
        let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, (4, 6), &Device::Cpu).unwrap()).unwrap();
        let w = Tensor::randn(0f64, 1.0, (4, 6), &Device::Cpu).unwrap();
        assert_gradients_match(&[x], |v| (ln.forward(v[0].as_tensor())? * &w)?.sum_all());
    }

    #[test]
    fn constant_rows_and_one_column_stay_finite() {
        let (_, ln) = layer_norm(4, 1e-8, DType::F32);
        let x = Tensor::ones((2, 4), DType::F32, &Device::Cpu).unwrap();
        let y = ln.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        assert!(y.iter().flatten().all(|v| v.is_finite()));
        let (_, ln1) = layer_norm(1, 1e-8, DType::F32);
        let x = Tensor::new(&[[3f32], [-1.0]], &Device::Cpu).unwrap();
        assert!(ln1
            .forward(&x)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap()
            .iter()
            .flatten()
            .all(|v| v.is_finite()));
    }
}
