//! Small layers SIGMA needs, each differentiable and named like its PyTorch counterpart so a
//! PyTorch `state_dict` loads straight into a `VarBuilder` (see `tests/reference/sigma.py`).

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, D};
use candle_nn::{Init, VarBuilder};
use mtrec_nn::LayerNorm;

use crate::kernel::{self, Real};
use crate::scan::{contiguous, fused_ok, with_cpu_slices, ScanImpl};

/// `N(0, std²)`: SIGMA's `_init_weights` for every `nn.Linear` / `nn.Embedding`.
pub(crate) fn normal(std: f64) -> Init {
    Init::Randn {
        mean: 0.0,
        stdev: std,
    }
}

/// PyTorch's default `nn.Conv1d` / `nn.GRU` init: `U(±bound)`.
pub(crate) fn uniform(bound: f64) -> Init {
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// Fetches `name` with `shape`, filling it with `values` only when the backend creates it (a
/// `VarMap`): weights loaded from safetensors are left alone.
pub(crate) fn get_with_values(
    vb: &VarBuilder,
    shape: &[usize],
    name: &str,
    values: &[f64],
) -> Result<Tensor> {
    if vb.contains_tensor(name) {
        return vb.get(shape, name);
    }
    let t = vb.get_with_hints(shape, name, Init::Const(0.0))?;
    let v = Tensor::from_slice(values, shape, t.device())?.to_dtype(t.dtype())?;
    // In-place write into the variable's storage (shared with the VarMap's Var).
    t.slice_set(&v, 0, 0)?;
    Ok(t)
}

/// Dropout that is the identity outside training or at `p = 0` (the seeded
/// [`mtrec_nn::dropout`]).
pub(crate) fn dropout(x: &Tensor, p: f64, train: bool) -> Result<Tensor> {
    mtrec_nn::dropout::dropout(x, p as f32, train)
}

/// `x W^T (+ b)` over the last dimension of a tensor of any rank, as one 2-D matmul (PyTorch
/// `nn.Linear`). Parameters `weight [out, in]` (`N(0, std²)`) and optional `bias [out]` (zeros).
#[derive(Debug, Clone)]
pub struct Dense {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Dense {
    pub fn new(input: usize, output: usize, bias: bool, std: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints((output, input), "weight", normal(std))?;
        let bias = if bias {
            Some(vb.get_with_hints(output, "bias", Init::Const(0.0))?)
        } else {
            None
        };
        Ok(Dense { weight, bias })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        mtrec_nn::dense(x, &self.weight, self.bias.as_ref())
    }

    /// `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

/// Causal depthwise convolution over time, Mamba's `conv1d(groups = C, padding = K − 1)[..L]`:
/// `y[b, t, c] = bias[c] + Σ_j w[c, 0, j] · x[b, t + j − (K − 1), c]` (zeros before `t = 0`).
/// `x: [B, L, C]`, `w: [C, 1, K]`, `bias: [C]`. Built from shifted slices (differentiable).
pub fn causal_depthwise_conv(x: &Tensor, w: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (b, l, c) = x.dims3()?;
    let (wc, one, k) = w.dims3()?;
    if wc != c || one != 1 || k == 0 {
        candle_core::bail!(
            "causal conv: weight {:?} does not fit {c} channels",
            w.dims()
        );
    }
    let xp = if k > 1 {
        let pad = Tensor::zeros((b, k - 1, c), x.dtype(), x.device())?;
        Tensor::cat(&[&pad, x], 1)?
    } else {
        x.clone()
    };
    let w = w.squeeze(1)?.t()?; // [K, C]
                                // Per-channel parameters enter through `mul_last`/`add_last`, whose gradients are matmuls.
    let mut y: Option<Tensor> = None;
    for j in 0..k {
        let tap = w.narrow(0, j, 1)?.reshape(c)?;
        let term = mtrec_nn::mul_last(&xp.narrow(1, j, l)?.contiguous()?, &tap)?;
        y = Some(match y {
            Some(acc) => (acc + term)?,
            None => term,
        });
    }
    match y {
        Some(y) => mtrec_nn::add_last(&y, bias),
        None => candle_core::bail!("causal conv: no taps"),
    }
}

/// `silu(causal_depthwise_conv(x, w, bias))`, Mamba's conv step. With [`ScanImpl::Fused`] on CPU
/// (f32/f64) one [`CustomOp3`] with its own backward (the composed version's shifted slices cost
/// a full-size zero gradient per tap in the backward pass); otherwise composed ops.
pub fn causal_conv_silu(x: &Tensor, w: &Tensor, bias: &Tensor, imp: ScanImpl) -> Result<Tensor> {
    let (b, l, c) = x.dims3()?;
    let (wc, one, k) = w.dims3()?;
    if wc != c || one != 1 || k == 0 || bias.dims() != [c] {
        candle_core::bail!(
            "causal conv: weight {:?} / bias {:?} do not fit {c} channels",
            w.dims(),
            bias.dims()
        );
    }
    match imp {
        ScanImpl::Fused if fused_ok(x) => x.contiguous()?.apply_op3(
            &w.reshape((c, k))?.contiguous()?,
            &bias.contiguous()?,
            ConvSiluOp { dims: (b, l, c, k) },
        ),
        _ => causal_depthwise_conv(x, w, bias)?.silu(),
    }
}

/// The fused causal depthwise conv + SiLU on `(x [B, L, C], w [C, K], bias [C])`.
struct ConvSiluOp {
    dims: (usize, usize, usize, usize),
}

impl ConvSiluOp {
    fn check(&self, x: usize, w: usize, bias: usize) -> Result<()> {
        let (b, l, c, k) = self.dims;
        if x != b * l * c || w != c * k || bias != c {
            candle_core::bail!("causal conv: operand sizes do not match {:?}", self.dims);
        }
        Ok(())
    }

    fn bwd_typed<T: Real>(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: &Tensor,
        grad: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let grad = grad.contiguous()?;
        let (gx, gw, gb) = with_cpu_slices::<T, _, 4>([x, w, bias, &grad], |[x_, w_, b_, g_]| {
            self.check(x_.len(), w_.len(), b_.len())?;
            if g_.len() != x_.len() {
                candle_core::bail!("causal conv: gradient size does not match {:?}", self.dims);
            }
            Ok(kernel::conv_silu_backward(x_, w_, b_, g_, self.dims))
        })?;
        Ok((
            Tensor::from_vec(gx, x.shape(), x.device())?,
            Tensor::from_vec(gw, w.shape(), w.device())?,
            Tensor::from_vec(gb, bias.shape(), bias.device())?,
        ))
    }
}

impl CustomOp3 for ConvSiluOp {
    fn name(&self) -> &'static str {
        "mtrec-causal-conv-silu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, l, c, _) = self.dims;
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(bias)) => {
                let (x, w, bias) = (
                    contiguous(x, l1)?,
                    contiguous(w, l2)?,
                    contiguous(bias, l3)?,
                );
                self.check(x.len(), w.len(), bias.len())?;
                CpuStorage::F32(kernel::conv_silu_forward(x, w, bias, self.dims))
            }
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(bias)) => {
                let (x, w, bias) = (
                    contiguous(x, l1)?,
                    contiguous(w, l2)?,
                    contiguous(bias, l3)?,
                );
                self.check(x.len(), w.len(), bias.len())?;
                CpuStorage::F64(kernel::conv_silu_forward(x, w, bias, self.dims))
            }
            _ => candle_core::bail!(
                "causal conv: the fused op supports f32 and f64 operands of one dtype"
            ),
        };
        Ok((out, Shape::from((b, l, c))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (gx, gw, gb) = match x.dtype() {
            DType::F32 => self.bwd_typed::<f32>(x, w, bias, grad)?,
            DType::F64 => self.bwd_typed::<f64>(x, w, bias, grad)?,
            dt => candle_core::bail!("causal conv: no fused backward for {dt:?}"),
        };
        Ok((Some(gx), Some(gw), Some(gb)))
    }
}

/// PyTorch `nn.Conv1d(C_in, C_out, K, padding = (K − 1) / 2)` applied over time to `[B, L, C_in]`
/// (odd `K`: output length `L`). Unfolds `K` shifted copies into `[B·L, K·C_in]` and multiplies
/// once. Parameters `weight [C_out, C_in, K]`, `bias [C_out]`, PyTorch's default init
/// `U(±1/sqrt(C_in·K))`.
#[derive(Debug, Clone)]
pub struct ConvSame {
    weight: Tensor,
    bias: Tensor,
}

impl ConvSame {
    pub fn new(input: usize, output: usize, kernel: usize, vb: VarBuilder) -> Result<Self> {
        if kernel % 2 == 0 {
            candle_core::bail!("ConvSame needs an odd kernel, got {kernel}");
        }
        let bound = 1.0 / ((input * kernel) as f64).sqrt();
        let weight = vb.get_with_hints((output, input, kernel), "weight", uniform(bound))?;
        let bias = vb.get_with_hints(output, "bias", uniform(bound))?;
        Ok(ConvSame { weight, bias })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv_same(x, &self.weight, &self.bias)
    }
}

/// The function behind [`ConvSame`]: `y[b, t, o] = bias[o] + Σ_{i, j} w[o, i, j] x[b, t + j − p, i]`
/// with `p = (K − 1) / 2` and zeros outside `[0, L)`.
pub fn conv_same(x: &Tensor, w: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (b, l, c) = x.dims3()?;
    let (out, wc, k) = w.dims3()?;
    if wc != c || k % 2 == 0 {
        candle_core::bail!("conv: weight {:?} does not fit {c} channels", w.dims());
    }
    let p = (k - 1) / 2;
    let xp = if p > 0 {
        let pad = Tensor::zeros((b, p, c), x.dtype(), x.device())?;
        Tensor::cat(&[&pad, x, &pad], 1)?
    } else {
        x.clone()
    };
    let taps: Vec<Tensor> = (0..k).map(|j| xp.narrow(1, j, l)).collect::<Result<_>>()?;
    let u = Tensor::cat(&taps, 2)?.reshape((b * l, k * c))?; // u[., j·C + i] = x[t + j − p, i]
    let w2 = w.permute((0, 2, 1))?.reshape((out, k * c))?; // w2[o, j·C + i] = w[o, i, j]
    mtrec_nn::dense(&u, &w2, Some(bias))?.reshape((b, l, out))
}

/// PyTorch `nn.GRU(d, H, bias = False, batch_first = True)`, one layer, zero initial state:
/// ```text
/// r = σ(W_ir x + W_hr h)   z = σ(W_iz x + W_hz h)   n = tanh(W_in x + r ⊙ (W_hn h))
/// h' = (1 − z) ⊙ n + z ⊙ h
/// ```
/// Parameters `weight_ih_l0 [3H, d]`, `weight_hh_l0 [3H, H]` (gate order r, z, n), PyTorch's
/// init `U(±1/sqrt(H))`. Unlike `candle_nn::GRU` the input projection of all steps is one matmul,
/// and the output is `[B, L, H]` (candle's `GRU::states_to_tensor` concatenates to `[B, L·H]`).
#[derive(Debug, Clone)]
pub struct PtGru {
    w_ih: Tensor,
    w_hh: Tensor,
    hidden: usize,
}

impl PtGru {
    pub fn new(input: usize, hidden: usize, vb: VarBuilder) -> Result<Self> {
        let bound = 1.0 / (hidden.max(1) as f64).sqrt();
        let w_ih = vb.get_with_hints((3 * hidden, input), "weight_ih_l0", uniform(bound))?;
        let w_hh = vb.get_with_hints((3 * hidden, hidden), "weight_hh_l0", uniform(bound))?;
        Ok(PtGru { w_ih, w_hh, hidden })
    }

    /// All hidden states `[B, L, H]` of the input `[B, L, d]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, l, d) = x.dims3()?;
        let h_dim = self.hidden;
        if l == 0 {
            return Tensor::zeros((b, 0, h_dim), x.dtype(), x.device());
        }
        // Time-major so each step's slice is contiguous.
        let x_tm = x.transpose(0, 1)?.contiguous()?; // [L, B, d]
        let w_ih_t = self.w_ih.t()?;
        let w_hh_t = self.w_hh.t()?;
        // candle's `narrow` backward materialises a zero gradient of the whole sliced tensor, so
        // slicing L steps out of one [L, ·] tensor costs O(L²) in the backward pass. Two levels
        // (√L chunks, then steps within a chunk) cut that to O(L^1.5).
        let chunk = (l as f64).sqrt().ceil() as usize;
        let mut h = Tensor::zeros((b, h_dim), x.dtype(), x.device())?;
        let mut hs = Vec::with_capacity(l);
        for start in (0..l).step_by(chunk) {
            let len = chunk.min(l - start);
            let xw = x_tm
                .narrow(0, start, len)?
                .reshape((len * b, d))?
                .matmul(&w_ih_t)?
                .reshape((len, b, 3 * h_dim))?;
            for t in 0..len {
                let xt = xw.get(t)?;
                let hw = h.matmul(&w_hh_t)?;
                let r =
                    candle_nn::ops::sigmoid(&(xt.narrow(1, 0, h_dim)? + hw.narrow(1, 0, h_dim)?)?)?;
                let z = candle_nn::ops::sigmoid(
                    &(xt.narrow(1, h_dim, h_dim)? + hw.narrow(1, h_dim, h_dim)?)?,
                )?;
                let n = (xt.narrow(1, 2 * h_dim, h_dim)?
                    + (r * hw.narrow(1, 2 * h_dim, h_dim)?)?)?
                .tanh()?;
                // (1 − z) n + z h = n + z (h − n)
                h = (&n + (z * (&h - &n)?)?)?;
                hs.push(h.clone());
            }
        }
        Tensor::stack(&hs, 1)
    }
}

/// RecBole/SIGMA `FeedForward`: `LN(dropout(W₂ dropout(gelu(W₁ x + b₁)) + b₂) + x)` with exact
/// (erf) GELU. Parameters `w_1`, `w_2`, `LayerNorm`.
#[derive(Debug, Clone)]
pub struct FeedForward {
    w_1: Dense,
    w_2: Dense,
    norm: LayerNorm,
    dropout: f64,
}

impl FeedForward {
    pub fn new(
        d: usize,
        inner: usize,
        dropout: f64,
        eps: f64,
        std: f64,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(FeedForward {
            w_1: Dense::new(d, inner, true, std, vb.pp("w_1"))?,
            w_2: Dense::new(inner, d, true, std, vb.pp("w_2"))?,
            norm: LayerNorm::new(d, eps, vb.pp("LayerNorm"))?,
            dropout,
        })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.w_1.forward(x)?.gelu_erf()?;
        let h = dropout(&h, self.dropout, train)?;
        let h = dropout(&self.w_2.forward(&h)?, self.dropout, train)?;
        self.norm.forward(&(h + x)?)
    }
}

/// Reads row `index[b]` of each sequence: `x: [B, L, d]`, `index: B` positions → `[B, d]`
/// (one `index_select` on the flattened `[B·L, d]`; differentiable).
pub(crate) fn gather_rows(x: &Tensor, index: &[usize]) -> Result<Tensor> {
    let (b, l, d) = x.dims3()?;
    if index.len() != b || index.iter().any(|&i| i >= l) {
        candle_core::bail!("gather_rows: {} indices for [{b}, {l}, _]", index.len());
    }
    let flat: Vec<u32> = index
        .iter()
        .enumerate()
        .map(|(row, &i)| (row * l + i) as u32)
        .collect();
    let idx = Tensor::from_vec(flat, b, x.device())?;
    x.reshape((b * l, d))?.index_select(&idx, 0)
}

/// Permutes the time axis of each row: `y[b, t] = x[b, perm[b][t]]` (`x: [B, L, d]`).
pub(crate) fn permute_rows(x: &Tensor, perm: &[Vec<usize>]) -> Result<Tensor> {
    let (b, l, d) = x.dims3()?;
    if perm.len() != b || perm.iter().any(|p| p.len() != l) {
        candle_core::bail!("permute_rows: permutation does not fit [{b}, {l}, _]");
    }
    let flat: Vec<u32> = perm
        .iter()
        .enumerate()
        .flat_map(|(row, p)| p.iter().map(move |&t| (row * l + t) as u32))
        .collect();
    let idx = Tensor::from_vec(flat, b * l, x.device())?;
    x.reshape((b * l, d))?
        .index_select(&idx, 0)?
        .reshape((b, l, d))
}

/// `x[.., i]` of a 1-D parameter as a broadcastable scalar tensor.
pub(crate) fn pick(w: &Tensor, i: usize) -> Result<Tensor> {
    w.narrow(D::Minus1, i, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{rand_tensor, Lcg};
    use candle_core::{Device, Var};
    use candle_nn::VarMap;
    use mtrec_nn::testing::assert_gradients_match;

    fn dev() -> Device {
        Device::Cpu
    }

    fn flat(t: &Tensor) -> Vec<f64> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn causal_conv_matches_definition_and_is_causal() {
        let mut rng = Lcg::new(10);
        let (b, l, c, k) = (2, 6, 3, 4);
        let x = rand_tensor(&mut rng, (b, l, c), -1.0, 1.0, DType::F64, &dev());
        let w = rand_tensor(&mut rng, (c, 1, k), -1.0, 1.0, DType::F64, &dev());
        let bias = rand_tensor(&mut rng, c, -1.0, 1.0, DType::F64, &dev());
        let y = flat(&causal_depthwise_conv(&x, &w, &bias).unwrap());
        let (xv, wv, bv) = (flat(&x), flat(&w), flat(&bias));
        for bi in 0..b {
            for t in 0..l {
                for ch in 0..c {
                    let mut want = bv[ch];
                    for j in 0..k {
                        let src = t as isize + j as isize - (k as isize - 1);
                        if src >= 0 {
                            want += wv[ch * k + j] * xv[(bi * l + src as usize) * c + ch];
                        }
                    }
                    let got = y[(bi * l + t) * c + ch];
                    assert!((got - want).abs() < 1e-12, "{bi} {t} {ch}");
                }
            }
        }
    }

    #[test]
    fn causal_conv_gradients() {
        let mut rng = Lcg::new(11);
        let vars: Vec<Var> = [
            rand_tensor(&mut rng, (2, 5, 3), -1.0, 1.0, DType::F64, &dev()),
            rand_tensor(&mut rng, (3, 1, 4), -1.0, 1.0, DType::F64, &dev()),
            rand_tensor(&mut rng, 3, -1.0, 1.0, DType::F64, &dev()),
        ]
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
        let w = rand_tensor(&mut rng, (2, 5, 3), -1.0, 1.0, DType::F64, &dev());
        assert_gradients_match(&vars, |v| {
            (causal_depthwise_conv(v[0].as_tensor(), v[1].as_tensor(), v[2].as_tensor())? * &w)?
                .sum_all()
        });
    }

    #[test]
    fn fused_causal_conv_silu_matches_composed_and_differences() {
        let mut rng = Lcg::new(16);
        for (b, l, c, k) in [(2, 6, 3, 4), (3, 2, 5, 4), (1, 5, 2, 1)] {
            let x = rand_tensor(&mut rng, (b, l, c), -1.0, 1.0, DType::F64, &dev());
            let w = rand_tensor(&mut rng, (c, 1, k), -1.0, 1.0, DType::F64, &dev());
            let bias = rand_tensor(&mut rng, c, -1.0, 1.0, DType::F64, &dev());
            let gw = rand_tensor(&mut rng, (b, l, c), -1.0, 1.0, DType::F64, &dev());
            let mut grads = Vec::new();
            for imp in [ScanImpl::Fused, ScanImpl::Composed] {
                let vars: Vec<Var> = [&x, &w, &bias]
                    .iter()
                    .map(|t| Var::from_tensor(t).unwrap())
                    .collect();
                let f = |v: &[Var]| {
                    (causal_conv_silu(v[0].as_tensor(), v[1].as_tensor(), v[2].as_tensor(), imp)?
                        * &gw)?
                        .sum_all()
                };
                assert_gradients_match(&vars, f);
                let g = f(&vars).unwrap().backward().unwrap();
                let y = causal_conv_silu(&x, &w, &bias, imp).unwrap();
                let mut all = flat(&y);
                for v in &vars {
                    all.extend(flat(g.get(v.as_tensor()).unwrap()));
                }
                grads.push(all);
            }
            for (f, c) in grads[0].iter().zip(&grads[1]) {
                assert!((f - c).abs() < 1e-12, "{f} vs {c}");
            }
        }
    }

    #[test]
    fn conv_same_matches_definition() {
        let mut rng = Lcg::new(12);
        let (b, l, c, o, k) = (2, 5, 3, 4, 3);
        let x = rand_tensor(&mut rng, (b, l, c), -1.0, 1.0, DType::F64, &dev());
        let w = rand_tensor(&mut rng, (o, c, k), -1.0, 1.0, DType::F64, &dev());
        let bias = rand_tensor(&mut rng, o, -1.0, 1.0, DType::F64, &dev());
        let y = flat(&conv_same(&x, &w, &bias).unwrap());
        let (xv, wv, bv) = (flat(&x), flat(&w), flat(&bias));
        for bi in 0..b {
            for t in 0..l {
                for oc in 0..o {
                    let mut want = bv[oc];
                    for i in 0..c {
                        for j in 0..k {
                            let src = t as isize + j as isize - 1;
                            if (0..l as isize).contains(&src) {
                                want +=
                                    wv[(oc * c + i) * k + j] * xv[(bi * l + src as usize) * c + i];
                            }
                        }
                    }
                    assert!((y[(bi * l + t) * o + oc] - want).abs() < 1e-12);
                }
            }
        }
    }

    #[test]
    fn conv_same_gradients() {
        let mut rng = Lcg::new(13);
        let vars: Vec<Var> = [
            rand_tensor(&mut rng, (2, 4, 3), -1.0, 1.0, DType::F64, &dev()),
            rand_tensor(&mut rng, (2, 3, 3), -1.0, 1.0, DType::F64, &dev()),
            rand_tensor(&mut rng, 2, -1.0, 1.0, DType::F64, &dev()),
        ]
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
        let w = rand_tensor(&mut rng, (2, 4, 2), -1.0, 1.0, DType::F64, &dev());
        assert_gradients_match(&vars, |v| {
            (conv_same(v[0].as_tensor(), v[1].as_tensor(), v[2].as_tensor())? * &w)?.sum_all()
        });
    }

    #[test]
    fn gru_matches_pytorch_equations_and_gradients() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &dev());
        let gru = PtGru::new(3, 2, vb).unwrap();
        crate::testutil::reseed(&vm, 15, 0.7);
        let mut rng = Lcg::new(14);
        let x = rand_tensor(&mut rng, (2, 7, 3), -1.0, 1.0, DType::F64, &dev());
        let y = gru.forward(&x).unwrap();
        assert_eq!(y.dims(), &[2, 7, 2]);
        // Scalar re-computation of the equations.
        let (wi, wh, xv) = (flat(&gru.w_ih), flat(&gru.w_hh), flat(&x));
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        let yv = flat(&y);
        for bi in 0..2 {
            let mut h = [0.0f64; 2];
            for t in 0..7 {
                let xt = &xv[(bi * 7 + t) * 3..(bi * 7 + t + 1) * 3];
                let dot = |w: &[f64], row: usize, v: &[f64]| -> f64 {
                    v.iter()
                        .enumerate()
                        .map(|(i, vi)| w[row * v.len() + i] * vi)
                        .sum()
                };
                let mut next = [0.0; 2];
                for j in 0..2 {
                    let r = sig(dot(&wi, j, xt) + dot(&wh, j, &h));
                    let z = sig(dot(&wi, 2 + j, xt) + dot(&wh, 2 + j, &h));
                    let n = (dot(&wi, 4 + j, xt) + r * dot(&wh, 4 + j, &h)).tanh();
                    next[j] = (1.0 - z) * n + z * h[j];
                }
                h = next;
                for j in 0..2 {
                    assert!((yv[(bi * 7 + t) * 2 + j] - h[j]).abs() < 1e-12);
                }
            }
        }
        let xs = Var::from_tensor(&x).unwrap();
        let mut vars = vm.all_vars();
        vars.push(xs);
        let w = rand_tensor(&mut rng, (2, 7, 2), -1.0, 1.0, DType::F64, &dev());
        assert_gradients_match(&vars, |v| {
            (gru.forward(v.last().unwrap().as_tensor())? * &w)?.sum_all()
        });
    }

    #[test]
    fn gather_and_permute_rows() {
        let x = Tensor::arange(0f64, 12.0, &dev())
            .unwrap()
            .reshape((2, 3, 2))
            .unwrap();
        let g: Vec<Vec<f64>> = gather_rows(&x, &[2, 0]).unwrap().to_vec2().unwrap();
        assert_eq!(g, vec![vec![4.0, 5.0], vec![6.0, 7.0]]);
        assert!(gather_rows(&x, &[3, 0]).is_err());
        let p = permute_rows(&x, &[vec![1, 0, 2], vec![2, 1, 0]]).unwrap();
        let p: Vec<Vec<Vec<f64>>> = p.to_vec3().unwrap();
        assert_eq!(p[0][0], vec![2.0, 3.0]);
        assert_eq!(p[1][0], vec![10.0, 11.0]);
        assert_eq!(p[1][2], vec![6.0, 7.0]);
    }
}
