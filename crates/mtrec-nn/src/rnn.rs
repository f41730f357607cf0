//! DIEN's recurrent layers: the TensorFlow-1.x `GRUCell` of the interest extractor
//! ([`TfGruCell`]), the attention-gated `VecAttGRUCell` of the interest-evolving layer
//! ([`AugruCell`]), and a length-aware runner with `tf.nn.dynamic_rnn` semantics ([`run_gru`],
//! [`run_augru`]); `specs/backbones.md` §2.5.
//!
//! `candle_nn::rnn::GRU` cannot stand in for these: it is PyTorch's GRU (gate order r, z, n; the
//! reset gate multiplies `W_hn h + b_hn` *after* the matmul; bias 0). TF applies the reset gate
//! *before* the matmul (`W_c [x ; r ⊙ h]`) and starts the gate bias at 1.0, which keeps the update
//! gate near-open early in training.
//!
//! # Speed
//!
//! Both weight matrices act on a concatenation `[x ; ·]`, so they split into an x-part and an
//! h-part. The runner multiplies the x-part for **all time steps in one matmul** up front
//! (`[B·T, D] × [D, 2H]` and `[B·T, D] × [D, H]`) and per step only does the small `[B, H] × [H, ·]`
//! products (`specs/backbones.md` §3). The per-step slices of those projections are cut in two
//! levels (blocks of `⌈√T⌉` steps, then steps): candle's backward of `narrow` materialises a
//! zero-padded gradient of the *whole* sliced tensor, so slicing a `[B, T, ·]` tensor `T` times
//! directly would cost `O(T²·B·H)` in the backward pass; two levels cost `O(T^{3/2}·B·H)`.

use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::custom_op::fused_ok;
use crate::fused_gru::GruSequenceOp;
use crate::packed::PackedHistory;

/// TensorFlow 1.x `tf.nn.rnn_cell.GRUCell` as DIEN uses it (input `D`, hidden `H`):
///
/// ```text
/// [r ; u] = σ(W_g [x ; h] + b_g)        r, u ∈ R^H  (r first, then u: TF's split order)
/// c       = tanh(W_c [x ; r ⊙ h] + b_c) (reset applied before the matmul)
/// h'      = u ⊙ h + (1 − u) ⊙ c
/// ```
///
/// # Parameters (names under the `VarBuilder` prefix, TF layout `[in, out]`)
///
/// | name | shape | init | TF 1.x variable |
/// |---|---|---|---|
/// | `gates.kernel` | `[D + H, 2H]` | Glorot-uniform `U(±sqrt(6 / (D + 3H)))` | `gru_cell/gates/kernel` |
/// | `gates.bias` | `[2H]` | 1.0 | `gru_cell/gates/bias` |
/// | `candidate.kernel` | `[D + H, H]` | Glorot-uniform `U(±sqrt(6 / (D + 2H)))` | `gru_cell/candidate/kernel` |
/// | `candidate.bias` | `[H]` | 0.0 | `gru_cell/candidate/bias` |
///
/// The kernels are stored **input-major** (`y = [x ; h] · kernel + bias`), exactly as TF's fused
/// kernels, *not* transposed like a PyTorch / candle `Linear.weight` `[out, in]`: rows `0..D` act on
/// `x`, rows `D..D+H` on `h` (resp. `r ⊙ h`); columns `0..H` of `gates.*` give `r`, columns `H..2H`
/// give `u`. The names say `kernel` rather than `weight` for that reason. A PyTorch reference
/// loads them as `gates_kernel = sd["gates.kernel"]` and computes `torch.cat([x, h], -1) @ gates_kernel
/// + sd["gates.bias"]`.
#[derive(Debug, Clone)]
pub struct TfGruCell {
    gates_kernel: Tensor,
    gates_bias: Tensor,
    candidate_kernel: Tensor,
    candidate_bias: Tensor,
    input_dim: usize,
    hidden: usize,
}

/// `U(±sqrt(6 / (fan_in + fan_out)))`, TF 1.x's default `tf.get_variable` initialiser.
fn glorot_uniform(fan_in: usize, fan_out: usize) -> Init {
    let bound = (6.0 / (fan_in + fan_out).max(1) as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

impl TfGruCell {
    /// Builds a cell for `input_dim`-dimensional inputs and `hidden` units, with TF 1.x's
    /// initialisation (see the table above).
    pub fn new(input_dim: usize, hidden: usize, vb: VarBuilder) -> Result<Self> {
        let fan_in = input_dim + hidden;
        let gates = vb.pp("gates");
        let candidate = vb.pp("candidate");
        let gates_kernel = gates.get_with_hints(
            (fan_in, 2 * hidden),
            "kernel",
            glorot_uniform(fan_in, 2 * hidden),
        )?;
        let gates_bias = gates.get_with_hints(2 * hidden, "bias", Init::Const(1.0))?;
        let candidate_kernel =
            candidate.get_with_hints((fan_in, hidden), "kernel", glorot_uniform(fan_in, hidden))?;
        let candidate_bias = candidate.get_with_hints(hidden, "bias", Init::Const(0.0))?;
        Ok(Self {
            gates_kernel,
            gates_bias,
            candidate_kernel,
            candidate_bias,
            input_dim,
            hidden,
        })
    }

    /// `D`.
    pub fn input_dim(&self) -> usize {
        self.input_dim
    }

    /// `H`.
    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// `gates.kernel` `[D + H, 2H]`.
    pub fn gates_kernel(&self) -> &Tensor {
        &self.gates_kernel
    }

    /// `gates.bias` `[2H]`.
    pub fn gates_bias(&self) -> &Tensor {
        &self.gates_bias
    }

    /// `candidate.kernel` `[D + H, H]`.
    pub fn candidate_kernel(&self) -> &Tensor {
        &self.candidate_kernel
    }

    /// `candidate.bias` `[H]`.
    pub fn candidate_bias(&self) -> &Tensor {
        &self.candidate_bias
    }

    fn check_step(&self, x: &Tensor, h: &Tensor) -> Result<usize> {
        let (b, d) = x.dims2()?;
        let (hb, hh) = h.dims2()?;
        if d != self.input_dim || hb != b || hh != self.hidden {
            candle_core::bail!(
                "TfGruCell(D={}, H={}): x {:?} and h {:?} must be [B, D] and [B, H]",
                self.input_dim,
                self.hidden,
                x.dims(),
                h.dims()
            );
        }
        Ok(b)
    }

    /// `(r, u, c)` of one step, computed literally as TF does (fused kernels over the
    /// concatenations). Used by [`TfGruCell::step`] / [`AugruCell::step`]; the runner uses the
    /// equivalent split form.
    fn gates_and_candidate(&self, x: &Tensor, h: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        self.check_step(x, h)?;
        let xh = Tensor::cat(&[x, h], 1)?;
        let g = candle_nn::ops::sigmoid(
            &xh.matmul(&self.gates_kernel)?
                .broadcast_add(&self.gates_bias)?,
        )?;
        let r = g.narrow(1, 0, self.hidden)?;
        let u = g.narrow(1, self.hidden, self.hidden)?;
        let xrh = Tensor::cat(&[x, &(&r * h)?], 1)?;
        let c = xrh
            .matmul(&self.candidate_kernel)?
            .broadcast_add(&self.candidate_bias)?
            .tanh()?;
        Ok((r, u, c))
    }

    /// One step `h' = u ⊙ h + (1 − u) ⊙ c` for `x` `[B, D]` and `h` `[B, H]` (no masking). For whole
    /// sequences use [`run_gru`], which is faster and handles lengths.
    pub fn step(&self, x: &Tensor, h: &Tensor) -> Result<Tensor> {
        let (_r, u, c) = self.gates_and_candidate(x, h)?;
        &c + (u * (h - &c)?)?
    }
}

/// DIEN's AUGRU (`utils.py::VecAttGRUCell`): a [`TfGruCell`] whose update gate is scaled by the
/// attention score `a_t` of the step:
///
/// ```text
/// [r ; u] = σ(W_g [x ; h] + b_g);  c = tanh(W_c [x ; r ⊙ h] + b_c)
/// u'      = (1 − a_t) ⊙ u
/// h'      = u' ⊙ h + (1 − u') ⊙ c
/// ```
///
/// A step with `a_t = 0` is a plain GRU step; `a_t = 1` replaces the state by the candidate.
/// Parameters: exactly those of [`TfGruCell`] (`gates.kernel`, `gates.bias`, `candidate.kernel`,
/// `candidate.bias`, same layout and inits), directly under the `VarBuilder` prefix.
#[derive(Debug, Clone)]
pub struct AugruCell {
    gru: TfGruCell,
}

impl AugruCell {
    pub fn new(input_dim: usize, hidden: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            gru: TfGruCell::new(input_dim, hidden, vb)?,
        })
    }

    /// The underlying GRU weights.
    pub fn gru(&self) -> &TfGruCell {
        &self.gru
    }

    pub fn input_dim(&self) -> usize {
        self.gru.input_dim
    }

    pub fn hidden_size(&self) -> usize {
        self.gru.hidden
    }

    /// One step for `x` `[B, D]`, `h` `[B, H]` and attention scores `att` `[B]` (no masking).
    pub fn step(&self, x: &Tensor, h: &Tensor, att: &Tensor) -> Result<Tensor> {
        let b = self.gru.check_step(x, h)?;
        if att.dims() != [b] {
            candle_core::bail!("AugruCell: att {:?} must be [B] = [{b}]", att.dims());
        }
        let (_r, u, c) = self.gru.gates_and_candidate(x, h)?;
        let keep = att.to_dtype(x.dtype())?.affine(-1.0, 1.0)?.unsqueeze(1)?;
        let u = u.broadcast_mul(&keep)?;
        &c + (u * (h - &c)?)?
    }
}

/// Runs a [`TfGruCell`] over `x` `[B, T, D]` from a zero state with `tf.nn.dynamic_rnn`
/// semantics, returning `(outputs [B, T, H], final state [B, H])`.
///
/// `mask` `[B, T]` (any float or integer dtype, values 0/1; e.g. from
/// [`mask_from_lengths`](crate::embedding::mask_from_lengths)): where `mask = 0` the output is 0
/// and the state is carried through unchanged. For right-padded histories (real items first, as DIN
/// and DIEN lay them out) this is exactly `dynamic_rnn(..., sequence_length=len)`: outputs are zero
/// for `t ≥ len` and the final state is `h_{len−1}` (zeros when `len = 0`). With padding elsewhere
/// (e.g. left padding) it runs the GRU over the real items only, in order.
pub fn run_gru(cell: &TfGruCell, x: &Tensor, mask: &Tensor) -> Result<(Tensor, Tensor)> {
    run(cell, x, None, mask)
}

/// Runs an [`AugruCell`] like [`run_gru`], with the attention score `att[:, t]` gating step `t`.
/// `att` is `[B, T]` (or `[B, T, 1]`, DIEN's `expand_dims` form). DIEN feeds the interest
/// extractor's outputs as `x` and the final state `h'` `[B, H]` to its output MLP.
pub fn run_augru(
    cell: &AugruCell,
    x: &Tensor,
    att: &Tensor,
    mask: &Tensor,
) -> Result<(Tensor, Tensor)> {
    run(&cell.gru, x, Some(att), mask)
}

/// Splits `x` along `dim` into its `n = x.dim(dim)` unit slices (each keeping `dim` with size 1),
/// through blocks of `⌈√n⌉` (see the module docs: this bounds the backward cost of `narrow`).
fn split_steps(x: &Tensor, dim: usize) -> Result<Vec<Tensor>> {
    let n = x.dim(dim)?;
    let block = (n as f64).sqrt().ceil().max(1.0) as usize;
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    while start < n {
        let len = block.min(n - start);
        let chunk = x.narrow(dim, start, len)?;
        for i in 0..len {
            out.push(chunk.narrow(dim, i, 1)?);
        }
        start += len;
    }
    Ok(out)
}

/// The shared runner: `att = None` gives the plain GRU, `Some` the AUGRU.
fn run(
    cell: &TfGruCell,
    x: &Tensor,
    att: Option<&Tensor>,
    mask: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let (b, t, d) = x.dims3()?;
    let hd = cell.hidden;
    if d != cell.input_dim {
        candle_core::bail!(
            "TF GRU runner: x {:?} has D = {d}, the cell expects D = {}",
            x.dims(),
            cell.input_dim
        );
    }
    if mask.dims() != [b, t] {
        candle_core::bail!(
            "TF GRU runner: mask {:?} must be [B, T] = [{b}, {t}]",
            mask.dims()
        );
    }
    let dtype = x.dtype();
    let device = x.device();
    let att = match att {
        Some(a) => {
            let a = match a.dims() {
                [ab, at, 1] if (*ab, *at) == (b, t) => a.squeeze(2)?,
                [ab, at] if (*ab, *at) == (b, t) => a.clone(),
                other => candle_core::bail!(
                    "AUGRU runner: att {other:?} must be [B, T] or [B, T, 1] = [{b}, {t}]"
                ),
            };
            Some(a.to_dtype(dtype)?)
        }
        None => None,
    };
    if t == 0 {
        let h = Tensor::zeros((b, hd), dtype, device)?;
        return Ok((Tensor::zeros((b, 0, hd), dtype, device)?, h));
    }
    if fused_ok(x) {
        return run_fused(cell, x, att.as_ref(), mask);
    }
    run_composed(cell, x, att.as_ref(), mask)
}

/// The CPU runner: the x-parts of both projections in one matmul, then the recurrence as one
/// [`GruSequenceOp`] over the real steps of every sample (see `fused_gru.rs`).
fn run_fused(
    cell: &TfGruCell,
    x: &Tensor,
    att: Option<&Tensor>,
    mask: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let (b, t, d) = x.dims3()?;
    let hd = cell.hidden;
    // Rows `start..start + len` of both kernels side by side: `[len, 3H]`.
    let kernel_rows = |start: usize, len: usize| {
        Tensor::cat(
            &[
                &cell.gates_kernel.narrow(0, start, len)?,
                &cell.candidate_kernel.narrow(0, start, len)?,
            ],
            1,
        )
    };
    let bias = Tensor::cat(&[&cell.gates_bias, &cell.candidate_bias], 0)?; // [3H]
                                                                           // The x-projections of the real steps only (the op never reads the masked ones).
    let pk = PackedHistory::of_mask(mask)?;
    let real = crate::dense::dense(&pk.gather(x)?, &kernel_rows(0, d)?.t()?, Some(&bias))?;
    let xs = pk.scatter(&real)?.contiguous()?; // [B, T, 3H]
    let w_h = kernel_rows(d, hd)?.contiguous()?; // [H, 3H]
    let keep_a = match att {
        Some(a) => a.affine(-1.0, 1.0)?.contiguous()?,
        None => Tensor::ones((b, t), x.dtype(), x.device())?,
    };
    let op = GruSequenceOp::new(pk.real_flags(), b, t, hd)?;
    let res = xs.apply_op3(&w_h, &keep_a, op)?; // [B, T + 1, H]
    Ok((res.narrow(1, 0, t)?, res.narrow(1, t, 1)?.squeeze(1)?))
}

/// The runner built from differentiable candle ops (other devices and dtypes; the reference the
/// fused op is tested against).
fn run_composed(
    cell: &TfGruCell,
    x: &Tensor,
    att: Option<&Tensor>,
    mask: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let (b, t, d) = x.dims3()?;
    let hd = cell.hidden;
    let dtype = x.dtype();
    let device = x.device();
    let mut h = Tensor::zeros((b, hd), dtype, device)?;

    // x-parts of both projections (biases folded in) for all steps at once, time-major so that
    // every step's slice is contiguous.
    let x_tm = x.transpose(0, 1)?.contiguous()?.reshape((t * b, d))?;
    let wg_x = cell.gates_kernel.narrow(0, 0, d)?;
    let wg_h = cell.gates_kernel.narrow(0, d, hd)?;
    let wc_x = cell.candidate_kernel.narrow(0, 0, d)?;
    let wc_h = cell.candidate_kernel.narrow(0, d, hd)?;
    let xg = x_tm
        .matmul(&wg_x)?
        .broadcast_add(&cell.gates_bias)?
        .reshape((t, b, 2 * hd))?;
    let xc = x_tm
        .matmul(&wc_x)?
        .broadcast_add(&cell.candidate_bias)?
        .reshape((t, b, hd))?;
    let xg = split_steps(&xg, 0)?;
    let xc = split_steps(&xc, 0)?;

    // [T, B, 1] masks: `keep` selects the new state/output, `carry` the old state.
    let keep_tm = mask
        .to_dtype(dtype)?
        .transpose(0, 1)?
        .contiguous()?
        .unsqueeze(2)?;
    let carry_tm = keep_tm.affine(-1.0, 1.0)?;
    let keep = split_steps(&keep_tm, 0)?;
    let carry = split_steps(&carry_tm, 0)?;
    // AUGRU: (1 − a_t) as [T, B, 1].
    let att_keep = match att {
        Some(a) => Some(split_steps(
            &a.affine(-1.0, 1.0)?
                .transpose(0, 1)?
                .contiguous()?
                .unsqueeze(2)?,
            0,
        )?),
        None => None,
    };

    let mut outs = Vec::with_capacity(t);
    for s in 0..t {
        let g = (xg[s].squeeze(0)? + h.matmul(&wg_h)?)?;
        let g = candle_nn::ops::sigmoid(&g)?;
        let r = g.narrow(1, 0, hd)?;
        let mut u = g.narrow(1, hd, hd)?;
        let c = (xc[s].squeeze(0)? + (&r * &h)?.matmul(&wc_h)?)?.tanh()?;
        if let Some(ak) = &att_keep {
            u = u.broadcast_mul(&ak[s].squeeze(0)?)?;
        }
        // u ⊙ h + (1 − u) ⊙ c
        let h_new = (&c + (u * (&h - &c)?)?)?;
        let out = h_new.broadcast_mul(&keep[s].squeeze(0)?)?;
        h = (&out + h.broadcast_mul(&carry[s].squeeze(0)?)?)?;
        outs.push(out);
    }
    Ok((Tensor::stack(&outs, 1)?, h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_every_var_has_gradient, assert_gradients_match};
    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;

    const DEV: Device = Device::Cpu;
    const NAMES: [&str; 4] = [
        "candidate.bias",
        "candidate.kernel",
        "gates.bias",
        "gates.kernel",
    ];

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

    fn tensor(dims: &[usize], seed: u64) -> Tensor {
        let n = dims.iter().product();
        Tensor::from_vec(values(n, seed), dims, &DEV).unwrap()
    }

    fn flat(t: &Tensor) -> Vec<f64> {
        t.flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn close(a: &[f64], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= tol, "{a:?} vs {b:?}");
        }
    }

    /// `[B, T]` 0/1 mask for right-padded lengths.
    fn mask(lens: &[usize], t: usize) -> Tensor {
        let v: Vec<f64> = lens
            .iter()
            .flat_map(|&l| (0..t).map(move |s| if s < l { 1.0 } else { 0.0 }))
            .collect();
        Tensor::from_vec(v, (lens.len(), t), &DEV).unwrap()
    }

    /// An f64 cell whose parameters are set to pseudo-random values (so that the gate bias is not
    /// the constant 1 and every weight matters).
    fn random_cell(d: usize, h: usize, seed: u64) -> (VarMap, TfGruCell) {
        let mut vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &DEV);
        let cell = TfGruCell::new(d, h, vb).unwrap();
        for (i, name) in NAMES.iter().enumerate() {
            let dims = vm.data().lock().unwrap()[*name].dims().to_vec();
            vm.set_one(name, tensor(&dims, seed + i as u64)).unwrap();
        }
        (vm, cell)
    }

    /// The VarMap's variables in [`NAMES`] order.
    fn params(vm: &VarMap) -> Vec<Var> {
        let data = vm.data().lock().unwrap();
        NAMES.iter().map(|n| data[*n].clone()).collect()
    }

    /// A plain-f64 reference of the TF GRU / AUGRU equations, with loops over the TF-layout
    /// kernels.
    struct RefGru {
        d: usize,
        h: usize,
        gk: Vec<f64>,
        gb: Vec<f64>,
        ck: Vec<f64>,
        cb: Vec<f64>,
    }

    fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    impl RefGru {
        fn of(cell: &TfGruCell) -> Self {
            Self {
                d: cell.input_dim(),
                h: cell.hidden_size(),
                gk: flat(cell.gates_kernel()),
                gb: flat(cell.gates_bias()),
                ck: flat(cell.candidate_kernel()),
                cb: flat(cell.candidate_bias()),
            }
        }

        /// One step; `a` is the AUGRU attention score (0 = plain GRU).
        fn step(&self, x: &[f64], h: &[f64], a: f64) -> Vec<f64> {
            let (d, hd) = (self.d, self.h);
            // y_j = Σ_i [x ; z]_i · kernel[i, j] with a kernel of `cols` columns.
            let affine = |kernel: &[f64], cols: usize, z: &[f64], j: usize| -> f64 {
                let from_x: f64 = x
                    .iter()
                    .enumerate()
                    .map(|(i, v)| v * kernel[i * cols + j])
                    .sum();
                let from_z: f64 = z
                    .iter()
                    .enumerate()
                    .map(|(i, v)| v * kernel[(d + i) * cols + j])
                    .sum();
                from_x + from_z
            };
            let g: Vec<f64> = (0..2 * hd)
                .map(|j| sigmoid(self.gb[j] + affine(&self.gk, 2 * hd, h, j)))
                .collect();
            let (r, u) = g.split_at(hd);
            let rh: Vec<f64> = r.iter().zip(h).map(|(r, h)| r * h).collect();
            (0..hd)
                .map(|j| {
                    let c = (self.cb[j] + affine(&self.ck, hd, &rh, j)).tanh();
                    let u = (1.0 - a) * u[j];
                    u * h[j] + (1.0 - u) * c
                })
                .collect()
        }

        /// `dynamic_rnn` with right-padded `lens`: `(outputs [B*T*H], state [B*H])`.
        fn run(
            &self,
            x: &[f64],
            b: usize,
            t: usize,
            lens: &[usize],
            att: Option<&[f64]>,
        ) -> (Vec<f64>, Vec<f64>) {
            let (d, hd) = (self.d, self.h);
            let mut outs = vec![0.0; b * t * hd];
            let mut states = Vec::new();
            for bi in 0..b {
                let mut h = vec![0.0; hd];
                for s in 0..lens[bi].min(t) {
                    let xs = &x[(bi * t + s) * d..(bi * t + s + 1) * d];
                    let a = att.map_or(0.0, |a| a[bi * t + s]);
                    h = self.step(xs, &h, a);
                    outs[(bi * t + s) * hd..(bi * t + s + 1) * hd].copy_from_slice(&h);
                }
                states.extend(h);
            }
            (outs, states)
        }
    }

    #[test]
    fn init_follows_tensorflow() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &DEV);
        let (d, h) = (5, 3);
        let cell = AugruCell::new(d, h, vb.pp("augru")).unwrap();
        assert_eq!((cell.input_dim(), cell.hidden_size()), (d, h));
        let mut names: Vec<String> = vm.data().lock().unwrap().keys().cloned().collect();
        names.sort();
        let want: Vec<String> = NAMES.iter().map(|n| format!("augru.{n}")).collect();
        assert_eq!(names, want);
        let g = cell.gru();
        assert_eq!(g.gates_kernel().dims(), [d + h, 2 * h]);
        assert_eq!(g.candidate_kernel().dims(), [d + h, h]);
        assert_eq!(flat(g.gates_bias()), vec![1.0; 2 * h]);
        assert_eq!(flat(g.candidate_bias()), vec![0.0; h]);
        for (k, fan_out) in [(g.gates_kernel(), 2 * h), (g.candidate_kernel(), h)] {
            let bound = (6.0 / (d + h + fan_out) as f64).sqrt();
            let v = flat(k);
            assert!(v.iter().all(|x| x.abs() <= bound), "{v:?} beyond ±{bound}");
            assert!(v.iter().any(|x| x.abs() > bound / 10.0), "{v:?} look unset");
        }
    }

    /// D = H = 1 with explicit numbers: pins the gate order (r first), the reset-before-matmul
    /// candidate and the AUGRU update scaling.
    #[test]
    fn single_step_by_hand() {
        let mut t = std::collections::HashMap::new();
        let put = |v: &[f64], dims: &[usize]| Tensor::from_vec(v.to_vec(), dims, &DEV).unwrap();
        // rows: x, h; columns: r, u
        t.insert(
            "gates.kernel".to_string(),
            put(&[0.3, -0.7, 0.9, 0.4], &[2, 2]),
        );
        t.insert("gates.bias".to_string(), put(&[0.1, -0.2], &[2]));
        t.insert("candidate.kernel".to_string(), put(&[0.6, -1.1], &[2, 1]));
        t.insert("candidate.bias".to_string(), put(&[0.05], &[1]));
        let vb = VarBuilder::from_tensors(t, DType::F64, &DEV);
        let gru = TfGruCell::new(1, 1, vb.clone()).unwrap();
        let augru = AugruCell::new(1, 1, vb).unwrap();

        let (x, h, a) = (0.5, -0.8, 0.3);
        let r = sigmoid(0.3 * x + 0.9 * h + 0.1);
        let u = sigmoid(-0.7 * x + 0.4 * h - 0.2);
        let c = (0.6 * x - 1.1 * (r * h) + 0.05).tanh();
        let want_gru = u * h + (1.0 - u) * c;
        let ua = (1.0 - a) * u;
        let want_augru = ua * h + (1.0 - ua) * c;

        let xt = put(&[x], &[1, 1]);
        let ht = put(&[h], &[1, 1]);
        let got = flat(&gru.step(&xt, &ht).unwrap());
        close(&got, &[want_gru], 1e-14);
        let got = flat(&augru.step(&xt, &ht, &put(&[a], &[1])).unwrap());
        close(&got, &[want_augru], 1e-14);

        // Through the runner (split weights, zero initial state), two steps: x = [0.5, -0.25].
        let step = |x: f64, h: f64, a: f64| {
            let r = sigmoid(0.3 * x + 0.9 * h + 0.1);
            let u = (1.0 - a) * sigmoid(-0.7 * x + 0.4 * h - 0.2);
            let c = (0.6 * x - 1.1 * (r * h) + 0.05).tanh();
            u * h + (1.0 - u) * c
        };
        let xs = put(&[0.5, -0.25], &[1, 2, 1]);
        let m = put(&[1.0, 1.0], &[1, 2]);
        let h1 = step(0.5, 0.0, 0.0);
        let h2 = step(-0.25, h1, 0.0);
        let (out, state) = run_gru(&gru, &xs, &m).unwrap();
        close(&flat(&out), &[h1, h2], 1e-14);
        close(&flat(&state), &[h2], 1e-14);
        let att = put(&[0.3, 0.9], &[1, 2]);
        let h1 = step(0.5, 0.0, 0.3);
        let h2 = step(-0.25, h1, 0.9);
        let (out, state) = run_augru(&augru, &xs, &att, &m).unwrap();
        close(&flat(&out), &[h1, h2], 1e-14);
        close(&flat(&state), &[h2], 1e-14);
    }

    #[test]
    fn step_matches_reference() {
        let (d, h, b) = (3, 2, 4);
        let (_vm, cell) = random_cell(d, h, 10);
        let reference = RefGru::of(&cell);
        let x = tensor(&[b, d], 1);
        let h0 = tensor(&[b, h], 2);
        let att = tensor(&[b], 3).affine(0.5, 0.5).unwrap();
        let augru = AugruCell { gru: cell.clone() };
        let got = flat(&cell.step(&x, &h0).unwrap());
        let got_a = flat(&augru.step(&x, &h0, &att).unwrap());
        let (xv, hv, av) = (flat(&x), flat(&h0), flat(&att));
        for bi in 0..b {
            let xs = &xv[bi * d..(bi + 1) * d];
            let hs = &hv[bi * h..(bi + 1) * h];
            close(
                &got[bi * h..(bi + 1) * h],
                &reference.step(xs, hs, 0.0),
                1e-13,
            );
            close(
                &got_a[bi * h..(bi + 1) * h],
                &reference.step(xs, hs, av[bi]),
                1e-13,
            );
        }
    }

    #[test]
    fn runner_matches_reference() {
        let (d, h) = (3, 2);
        let (_vm, cell) = random_cell(d, h, 20);
        let reference = RefGru::of(&cell);
        let augru = AugruCell { gru: cell.clone() };
        // T = 7 splits into blocks of 3, 3, 1.
        for (t, lens) in [(4, vec![4, 2, 0, 1]), (7, vec![7, 5, 0, 3, 6])] {
            let b = lens.len();
            let x = tensor(&[b, t, d], 4);
            let att = tensor(&[b, t], 5).affine(0.5, 0.5).unwrap();
            let m = mask(&lens, t);
            let (out, state) = run_gru(&cell, &x, &m).unwrap();
            assert_eq!(out.dims(), [b, t, h]);
            assert_eq!(state.dims(), [b, h]);
            let (want_out, want_state) = reference.run(&flat(&x), b, t, &lens, None);
            close(&flat(&out), &want_out, 1e-13);
            close(&flat(&state), &want_state, 1e-13);

            let av = flat(&att);
            let (want_out, want_state) = reference.run(&flat(&x), b, t, &lens, Some(&av));
            let (out, state) = run_augru(&augru, &x, &att, &m).unwrap();
            close(&flat(&out), &want_out, 1e-13);
            close(&flat(&state), &want_state, 1e-13);
            // [B, T, 1] scores (DIEN's expand_dims form) give the same result.
            let (out3, _) = run_augru(&augru, &x, &att.unsqueeze(2).unwrap(), &m).unwrap();
            assert_eq!(flat(&out3), flat(&out));
            // AUGRU with zero attention is the plain GRU.
            let zeros = Tensor::zeros((b, t), DType::F64, &DEV).unwrap();
            let (out0, _) = run_augru(&augru, &x, &zeros, &m).unwrap();
            close(
                &flat(&out0),
                &flat(&run_gru(&cell, &x, &m).unwrap().0),
                1e-15,
            );
        }
    }

    /// The runner (split, precomputed x-projections) agrees with chaining the fused `step`.
    #[test]
    fn runner_matches_chained_steps() {
        let (b, t, d, h) = (3, 5, 4, 3);
        let (_vm, cell) = random_cell(d, h, 30);
        let x = tensor(&[b, t, d], 6);
        let (out, state) = run_gru(&cell, &x, &mask(&[t; 3], t)).unwrap();
        let mut hs = Tensor::zeros((b, h), DType::F64, &DEV).unwrap();
        for s in 0..t {
            let xs = x.narrow(1, s, 1).unwrap().squeeze(1).unwrap();
            hs = cell.step(&xs, &hs).unwrap();
            let os = out.narrow(1, s, 1).unwrap().squeeze(1).unwrap();
            close(&flat(&os), &flat(&hs), 1e-14);
        }
        close(&flat(&state), &flat(&hs), 1e-14);
    }

    /// `dynamic_rnn` semantics: zero outputs and a frozen state past the length; padded inputs
    /// and attention scores have no effect at all.
    #[test]
    fn copy_through_past_length() {
        let (t, d, h) = (5, 3, 2);
        let lens = [5, 3, 0, 1];
        let b = lens.len();
        let (_vm, cell) = random_cell(d, h, 40);
        let augru = AugruCell { gru: cell.clone() };
        let m = mask(&lens, t);
        let x = tensor(&[b, t, d], 7);
        let att = tensor(&[b, t], 8);
        // Same real inputs, different garbage at the padded positions.
        let noise = (tensor(&[b, t, d], 9) * 100.0).unwrap();
        let x2 = (&x
            + noise
                .broadcast_mul(&(1.0 - &m).unwrap().unsqueeze(2).unwrap())
                .unwrap())
        .unwrap();
        let att2 = (&att + (tensor(&[b, t], 11) * (1.0 - &m).unwrap()).unwrap()).unwrap();
        for (out, state, out2, state2) in [
            {
                let (o, s) = run_gru(&cell, &x, &m).unwrap();
                let (o2, s2) = run_gru(&cell, &x2, &m).unwrap();
                (o, s, o2, s2)
            },
            {
                let (o, s) = run_augru(&augru, &x, &att, &m).unwrap();
                let (o2, s2) = run_augru(&augru, &x2, &att2, &m).unwrap();
                (o, s, o2, s2)
            },
        ] {
            assert_eq!(flat(&out), flat(&out2));
            assert_eq!(flat(&state), flat(&state2));
            let o = flat(&out);
            let s = flat(&state);
            for (bi, &l) in lens.iter().enumerate() {
                let row = |ti: usize| &o[(bi * t + ti) * h..(bi * t + ti + 1) * h];
                for ti in 0..t {
                    if ti >= l {
                        assert_eq!(row(ti), vec![0.0; h].as_slice(), "b={bi} t={ti}");
                    } else {
                        assert!(row(ti).iter().any(|v| *v != 0.0), "b={bi} t={ti}");
                    }
                }
                let want = if l == 0 {
                    vec![0.0; h]
                } else {
                    row(l - 1).to_vec()
                };
                assert_eq!(&s[bi * h..(bi + 1) * h], want.as_slice(), "state of b={bi}");
            }
        }
    }

    #[test]
    fn empty_sequence_and_bad_shapes() {
        let (_vm, cell) = random_cell(3, 2, 50);
        let x = Tensor::zeros((2, 0, 3), DType::F64, &DEV).unwrap();
        let m = Tensor::zeros((2, 0), DType::F64, &DEV).unwrap();
        let (out, state) = run_gru(&cell, &x, &m).unwrap();
        assert_eq!(out.dims(), [2, 0, 2]);
        assert_eq!(flat(&state), vec![0.0; 4]);
        let x = tensor(&[2, 4, 3], 1);
        assert!(run_gru(&cell, &x, &mask(&[4, 4, 4], 4)).is_err());
        assert!(run_gru(&cell, &tensor(&[2, 4, 5], 1), &mask(&[4, 4], 4)).is_err());
        let augru = AugruCell { gru: cell.clone() };
        assert!(run_augru(&augru, &x, &tensor(&[2, 3], 2), &mask(&[4, 4], 4)).is_err());
        assert!(cell.step(&tensor(&[2, 3], 1), &tensor(&[3, 2], 1)).is_err());
        assert!(augru
            .step(&tensor(&[2, 3], 1), &tensor(&[2, 2], 1), &tensor(&[3], 1))
            .is_err());
        // Integer masks are accepted.
        let m = mask(&[4, 2], 4).to_dtype(DType::U32).unwrap();
        let (a, _) = run_gru(&cell, &x, &m).unwrap();
        let (b, _) = run_gru(&cell, &x, &mask(&[4, 2], 4)).unwrap();
        assert_eq!(flat(&a), flat(&b));
    }

    /// `Σ out ⊙ r` with a fixed random `r`.
    fn project(out: &Tensor, seed: u64) -> Result<Tensor> {
        (out * tensor(out.dims(), seed))?.sum_all()
    }

    #[test]
    fn gru_runner_gradients() {
        let (b, t, d, h) = (3, 4, 3, 2);
        let (vm, cell) = random_cell(d, h, 60);
        let m = mask(&[4, 2, 0], t);
        let mut vars = params(&vm);
        vars.push(Var::from_tensor(&tensor(&[b, t, d], 12)).unwrap());
        assert_gradients_match(&vars, |v| {
            let (out, state) = run_gru(&cell, v[4].as_tensor(), &m)?;
            project(&out, 13)? + project(&state, 14)?
        });
    }

    #[test]
    fn fused_runner_equals_composed_values_and_gradients() {
        let (b, t, d, h) = (4, 5, 3, 2);
        let (vm, cell) = random_cell(d, h, 80);
        // Right padding, left padding, a hole in the middle, and an empty history.
        let m = Tensor::from_vec(
            vec![
                1., 1., 1., 0., 0., //
                0., 0., 1., 1., 1., //
                1., 0., 1., 1., 0., //
                0., 0., 0., 0., 0.,
            ],
            (b, t),
            &DEV,
        )
        .unwrap();
        let x = Var::from_tensor(&tensor(&[b, t, d], 21)).unwrap();
        let a = Var::from_tensor(&tensor(&[b, t], 22).affine(0.5, 0.5).unwrap()).unwrap();
        for att in [None, Some(a.as_tensor())] {
            let loss = |fused: bool| {
                let (out, state) = if fused {
                    run_fused(&cell, x.as_tensor(), att, &m).unwrap()
                } else {
                    run_composed(&cell, x.as_tensor(), att, &m).unwrap()
                };
                let l = (project(&out, 23).unwrap() + project(&state, 24).unwrap()).unwrap();
                (out, state, l.backward().unwrap())
            };
            let (out_f, state_f, g_f) = loss(true);
            let (out_c, state_c, g_c) = loss(false);
            let close = |p: &Tensor, q: &Tensor| {
                let diff = crate::ctr::testkit::max_abs_diff(p, q).unwrap();
                assert!(diff < 1e-12, "{:?}", att.is_some());
            };
            close(&out_f, &out_c);
            close(&state_f, &state_c);
            let mut vars = params(&vm);
            vars.push(x.clone());
            if att.is_some() {
                vars.push(a.clone());
            }
            for v in &vars {
                close(
                    g_f.get(v.as_tensor()).unwrap(),
                    g_c.get(v.as_tensor()).unwrap(),
                );
            }
        }
    }

    #[test]
    fn augru_runner_gradients() {
        let (b, t, d, h) = (3, 4, 3, 2);
        let (vm, cell) = random_cell(d, h, 70);
        let augru = AugruCell { gru: cell };
        let m = mask(&[4, 3, 0], t);
        let mut vars = params(&vm);
        vars.push(Var::from_tensor(&tensor(&[b, t, d], 15)).unwrap());
        vars.push(Var::from_tensor(&tensor(&[b, t], 16).affine(0.5, 0.5).unwrap()).unwrap());
        assert_gradients_match(&vars, |v| {
            let (out, state) = run_augru(&augru, v[4].as_tensor(), v[5].as_tensor(), &m)?;
            project(&out, 17)? + project(&state, 18)?
        });
    }

    #[test]
    fn step_gradients() {
        let (b, d, h) = (3, 3, 2);
        let (vm, cell) = random_cell(d, h, 80);
        let augru = AugruCell { gru: cell.clone() };
        let mut vars = params(&vm);
        vars.push(Var::from_tensor(&tensor(&[b, d], 19)).unwrap());
        vars.push(Var::from_tensor(&tensor(&[b, h], 20)).unwrap());
        vars.push(Var::from_tensor(&tensor(&[b], 21)).unwrap());
        assert_gradients_match(&vars, |v| {
            let (x, h0, a) = (v[4].as_tensor(), v[5].as_tensor(), v[6].as_tensor());
            project(&cell.step(x, h0)?, 22)? + project(&augru.step(x, h0, a)?, 23)?
        });
    }

    #[test]
    fn every_var_gets_gradient() {
        let (b, t, d, h) = (3, 4, 3, 2);
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &DEV);
        let gru = TfGruCell::new(d, h, vb.pp("gru")).unwrap();
        let augru = AugruCell::new(h, h, vb.pp("augru")).unwrap();
        let m = mask(&[4, 2, 0], t).to_dtype(DType::F32).unwrap();
        let x = tensor(&[b, t, d], 24).to_dtype(DType::F32).unwrap();
        let att = tensor(&[b, t], 25).to_dtype(DType::F32).unwrap();
        let (o, _) = run_gru(&gru, &x, &m).unwrap();
        let (o2, s2) = run_augru(&augru, &o, &att, &m).unwrap();
        let loss = (project(&o2.to_dtype(DType::F64).unwrap(), 26).unwrap()
            + project(&s2.to_dtype(DType::F64).unwrap(), 27).unwrap())
        .unwrap();
        assert_eq!(vm.all_vars().len(), 8);
        assert_every_var_has_gradient(&vm, &loss);
    }
}
