//! Fused CPU ops for the dense layers and LayerNorms of the sequence models, each with a
//! hand-written backward:
//!
//! * [`bias_act`]: `act(y + b) ⊙ mask` over the last dimension, the bias add, activation (identity,
//!   ReLU, erf-GELU) and dropout mask of a dense layer in one pass forward and one backward, the
//!   bias gradient a column sum of the same pass;
//! * `layer_norm` (used by [`crate::LayerNorm`]): LayerNorm with its affine part, `γ ⊙ (x − mean)/sqrt(var + eps) + β`;
//! * `add_norm` ([`crate::LayerNorm::forward_residual`]): `LN((y + b) ⊙ mask + r)`, the tail of a
//!   post-LN transformer sublayer (output bias, dropout, residual add, LayerNorm);
//! * `position_norm` ([`crate::LayerNorm::forward_positions`]): `LN(x + pos) ⊙ mask`, an embedding
//!   block (position add, LayerNorm, dropout), the position gradient reduced over the batch.
//!
//! Why: candle's backward accumulates every gradient into a zero-filled buffer (`zeros_like` then
//! `add`), so each node of the graph costs about three passes over its tensor on the way back, and
//! its GELU backward alone is ten ops. In LinRec's training step (d = 128, inner 256, 51,200
//! tokens) such element-wise passes were about half of the time and the matrix products a quarter.
//!
//! The values are those of the composed forms, bit for bit (same arithmetic in the same order:
//! `y + b`, then candle's GELU formula, then `⊙ mask`, then `+ r`; the two LayerNorm-ending ops
//! give the bits of `layer_norm` on the same sum), except that the f32 GELU evaluates erf with
//! the vectorisable [`crate::fastmath::erf`] (within 1e-6 of libm's `erff`, which candle calls per
//! element: the GELU's forward and backward took 4× the time of the rest of the op). LayerNorm's
//! statistics are computed in f64 with eight partial sums, then `x̂ ⊙ γ + β` in the tensor's type
//! (equal to candle's composed LayerNorm to float rounding). Gradients are equal up to float
//! summation order (the column sums add per-chunk partial sums in f64, in chunk order, so they do
//! not depend on the thread count). The row kernels are compiled for AVX2 too and picked at run
//! time ([`crate::avx2_dispatch`]; same bits). Other devices and dtypes take the composed path.

use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType};

use crate::fastmath::Elem;
use num_traits::Float;
use rayon::prelude::*;

use crate::custom_op::{contiguous_slice, fused_ok, with_cpu_slices};
use crate::dense::add_last;

/// `CustomOp3` for a [`FusedOp3`], named `$name`.
macro_rules! fused_custom_op3 {
    ($op:ty, $name:literal) => {
        impl CustomOp3 for $op {
            fn name(&self) -> &'static str {
                $name
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
                fused_cpu_fwd(self, [(s1, l1), (s2, l2), (s3, l3)])
            }

            fn bwd(
                &self,
                a: &Tensor,
                b: &Tensor,
                c: &Tensor,
                _res: &Tensor,
                grad: &Tensor,
            ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
                fused_bwd(self, [a, b, c], grad)
            }
        }
    };
}

/// The activation of [`bias_act`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointwiseAct {
    Identity,
    /// `max(z, 0)`; derivative 1 at `z ≥ 0` (candle's convention).
    Relu,
    /// `z · Φ(z)` with the exact erf (candle's `gelu_erf`).
    Gelu,
}

fn f<F: Elem>(v: F) -> f64 {
    <F as WithDType>::to_f64(v)
}

fn from<F: Elem>(v: f64) -> F {
    <F as WithDType>::from_f64(v)
}

/// Rows per parallel task for rows of `c` values (a fixed function of `c`, so the chunking and
/// the order of the partial column sums do not depend on the thread count).
fn rows_per_task(c: usize) -> usize {
    (16_384 / c.max(1)).max(1)
}

/// Sums per-task partial column sums in task order.
fn reduce_columns(parts: Vec<Vec<f64>>, c: usize) -> Vec<f64> {
    let mut total = vec![0.0; c];
    for p in parts {
        for (t, v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    total
}

/// `act(y + b) ⊙ mask` for `y` `[.., C]`, `b` `[C]` and an optional `mask` of `y`'s shape (a
/// dropout mask): one fused op on CPU f32/f64, composed from candle ops elsewhere.
pub fn bias_act(
    y: &Tensor,
    b: &Tensor,
    act: PointwiseAct,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let c = b.elem_count();
    if b.rank() != 1 || y.dims().last() != Some(&c) {
        bail!("bias_act: bias {:?} for an input {:?}", b.dims(), y.dims());
    }
    if let Some(m) = mask {
        if m.dims() != y.dims() {
            bail!("bias_act: mask {:?} for an input {:?}", m.dims(), y.dims());
        }
    }
    if !(fused_ok(y) && y.dtype() == b.dtype() && mask.is_none_or(|m| m.dtype() == y.dtype())) {
        return bias_act_composed(y, b, act, mask);
    }
    let op = BiasActOp {
        act,
        masked: mask.is_some(),
    };
    // Without a mask the third operand is a placeholder the kernels never read; a tensor of its
    // own, so that the backward never read-locks one storage twice.
    let m = match mask {
        Some(m) => m.contiguous()?,
        None => Tensor::zeros(1, y.dtype(), y.device())?,
    };
    y.contiguous()?.apply_op3(&b.contiguous()?, &m, op)
}

const BIAS_ACT: &str = "fused bias + activation";

struct BiasActOp {
    act: PointwiseAct,
    masked: bool,
}

impl BiasActOp {
    fn run_forward<F: Elem>(&self, y: &[F], b: &[F], m: &[F]) -> Vec<F> {
        let c = b.len();
        let mut out = vec![F::zero(); y.len()];
        let per = rows_per_task(c) * c;
        let mask = self.masked.then_some(m);
        out.par_chunks_mut(per).enumerate().for_each(|(t, ob)| {
            let at = t * per..t * per + ob.len();
            let mt = mask.map(|m| &m[at.clone()]);
            bias_act_rows(self.act, &y[at], b, mt, ob);
        });
        out
    }

    /// `(dy, db)` for the upstream gradient `g`.
    fn run_backward<F: Elem>(&self, y: &[F], b: &[F], m: &[F], g: &[F]) -> (Vec<F>, Vec<F>) {
        let c = b.len();
        let mut dy = vec![F::zero(); y.len()];
        let per = rows_per_task(c) * c;
        let mask = self.masked.then_some(m);
        let parts: Vec<Vec<f64>> = dy
            .par_chunks_mut(per)
            .enumerate()
            .map(|(t, db)| {
                let at = t * per..t * per + db.len();
                let mt = mask.map(|m| &m[at.clone()]);
                let mut col = vec![0.0f64; c];
                bias_act_grad_rows(self.act, &y[at.clone()], b, mt, &g[at], db, &mut col);
                col
            })
            .collect();
        let db = reduce_columns(parts, c).into_iter().map(from).collect();
        (dy, db)
    }
}

/// `out = act(y + b) ⊙ m` over whole rows of `b.len()` values.
#[inline(always)]
fn bias_act_rows_impl<F: Elem>(
    act: PointwiseAct,
    y: &[F],
    b: &[F],
    m: Option<&[F]>,
    out: &mut [F],
) {
    #[inline(always)]
    fn rows<F: Elem>(y: &[F], b: &[F], out: &mut [F], value: impl Fn(F) -> F) {
        for (orow, yr) in out.chunks_mut(b.len()).zip(y.chunks(b.len())) {
            for ((o, &yv), &bv) in orow.iter_mut().zip(yr).zip(b) {
                *o = value(yv + bv);
            }
        }
    }
    match act {
        PointwiseAct::Identity => rows(y, b, out, |z| z),
        PointwiseAct::Relu => rows(y, b, out, |z: F| Float::max(z, F::zero())),
        PointwiseAct::Gelu => rows(y, b, out, F::gelu),
    }
    if let Some(m) = m {
        for (o, &mv) in out.iter_mut().zip(m) {
            *o *= mv;
        }
    }
}

/// `dy = g ⊙ act'(y + b) ⊙ m` over whole rows, adding the column sums of `dy` to `col`.
#[inline(always)]
fn bias_act_grad_rows_impl<F: Elem>(
    act: PointwiseAct,
    y: &[F],
    b: &[F],
    m: Option<&[F]>,
    g: &[F],
    dy: &mut [F],
    col: &mut [f64],
) {
    #[inline(always)]
    fn rows<F: Elem>(y: &[F], b: &[F], g: &[F], dy: &mut [F], slope: impl Fn(F) -> F) {
        let c = b.len();
        for ((drow, yr), gr) in dy.chunks_mut(c).zip(y.chunks(c)).zip(g.chunks(c)) {
            for (((d, &yv), &gv), &bv) in drow.iter_mut().zip(yr).zip(gr).zip(b) {
                *d = gv * slope(yv + bv);
            }
        }
    }
    match act {
        PointwiseAct::Identity => rows(y, b, g, dy, |_| F::one()),
        PointwiseAct::Relu => rows(y, b, g, dy, |z: F| {
            if z >= F::zero() {
                F::one()
            } else {
                F::zero()
            }
        }),
        PointwiseAct::Gelu => rows(y, b, g, dy, F::gelu_slope),
    }
    if let Some(m) = m {
        for (d, &mv) in dy.iter_mut().zip(m) {
            *d *= mv;
        }
    }
    for drow in dy.chunks(b.len()) {
        for (acc, &d) in col.iter_mut().zip(drow) {
            *acc += f(d);
        }
    }
}

crate::avx2_dispatch!(fn bias_act_rows, bias_act_rows_avx2 => bias_act_rows_impl
    <F: Elem>(act: PointwiseAct, y: &[F], b: &[F], m: Option<&[F]>, out: &mut [F]));
crate::avx2_dispatch!(fn bias_act_grad_rows, bias_act_grad_rows_avx2 => bias_act_grad_rows_impl
    <F: Elem>(act: PointwiseAct, y: &[F], b: &[F], m: Option<&[F]>, g: &[F], dy: &mut [F],
    col: &mut [f64]));

impl FusedOp3 for BiasActOp {
    const NAME: &'static str = BIAS_ACT;

    fn forward<F: Elem>(&self, [y, b, m]: [&[F]; 3], _: Option<&[F]>) -> Vec<F> {
        self.run_forward(y, b, m)
    }

    fn backward<F: Elem>(&self, [y, b, m]: [&[F]; 3], _: Option<&[F]>, g: &[F]) -> Grads3<F> {
        let (dy, db) = self.run_backward(y, b, m, g);
        (Some(dy), db, None)
    }
}

fused_custom_op3!(BiasActOp, "mtrec-bias-act");

// ------------------------------------------------------------------ LayerNorm with affine

/// `γ ⊙ (x − mean)/sqrt(var + eps) + β` over the last dimension of `x` `[.., C]` (`γ`, `β` `[C]`,
/// biased variance): one fused op on CPU f32/f64 (`eps` as given; [`crate::LayerNorm`] rounds it
/// through f32 first). `None` when the operands cannot take the fused path.
pub(crate) fn layer_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<Option<Tensor>> {
    let c = gamma.elem_count();
    if !(fused_ok(x) && x.dtype() == gamma.dtype() && x.dtype() == beta.dtype())
        || gamma.rank() != 1
        || beta.dims() != gamma.dims()
        || x.dims().last() != Some(&c)
    {
        return Ok(None);
    }
    let op = LayerNormOp { eps };
    Ok(Some(x.contiguous()?.apply_op3(
        &gamma.contiguous()?,
        &beta.contiguous()?,
        op,
    )?))
}

const LAYER_NORM: &str = "fused layer norm";

struct LayerNormOp {
    eps: f64,
}

/// `Σ term(v[j])` in f64 with eight interleaved partial sums: a single running sum is a chain of
/// dependent adds (four cycles each), which made the LayerNorm ops' row statistics their
/// largest cost. The order is fixed in the source, so the result does not depend on the CPU.
#[inline(always)]
fn sum8(v: &[f64], term: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += term(x);
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&x| term(x)).sum();
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail
}

/// `Σ a[j]·b[j]` in f64 with eight interleaved partial sums (see [`sum8`]).
#[inline(always)]
fn dot8(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (mut ca, mut cb) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for ((s, &p), &q) in acc.iter_mut().zip(x).zip(y) {
            *s += p * q;
        }
    }
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(p, q)| p * q)
        .sum();
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail
}

/// Normalises one row in f64: `xhat = (x − mean) / sqrt(var + eps)` (biased variance) into
/// `xhat`; returns `1 / sqrt(var + eps)`.
#[inline(always)]
fn normalise_row<F: Elem>(xr: &[F], eps: f64, xhat: &mut [f64]) -> f64 {
    let n = xr.len() as f64;
    for (o, &v) in xhat.iter_mut().zip(xr) {
        *o = f(v);
    }
    let mean = sum8(xhat, |v| v) / n;
    for o in xhat.iter_mut() {
        *o -= mean;
    }
    let rstd = 1.0 / (sum8(xhat, |v| v * v) / n + eps).sqrt();
    for o in xhat.iter_mut() {
        *o *= rstd;
    }
    rstd
}

/// LayerNorm's backward for one row `xr` (the normalised input) and its upstream gradient `gr`:
/// writes `dx`, adds the row's terms to `dgamma` and `dbeta`. `xhat` and `gh` are scratch rows.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn ln_row_backward<F: Elem>(
    (xr, gr): (&[F], &[F]),
    gamma: &[F],
    eps: f64,
    dx: &mut [F],
    (dgamma, dbeta): (&mut [f64], &mut [f64]),
    (xhat, gh): (&mut [f64], &mut [f64]),
) {
    let n = xr.len() as f64;
    let rstd = normalise_row(xr, eps, xhat);
    for ((((dg, db), h), o), (&gv, &gm)) in dgamma
        .iter_mut()
        .zip(dbeta.iter_mut())
        .zip(xhat.iter())
        .zip(gh.iter_mut())
        .zip(gr.iter().zip(gamma))
    {
        let gv = f(gv);
        *dg += gv * h;
        *db += gv;
        *o = gv * f(gm);
    }
    let m1 = sum8(gh, |v| v) / n;
    let m2 = dot8(gh, xhat) / n;
    for ((d, &h), &x) in dx.iter_mut().zip(gh.iter()).zip(xhat.iter()) {
        *d = from(rstd * (h - m1 - x * m2));
    }
}

/// LayerNorm's forward for one row: `γ ⊙ x̂ + β`, x̂ rounded to `F` first (the composed form's
/// arithmetic). `xhat` is a scratch row.
#[inline(always)]
fn ln_row_forward<F: Elem>(
    xr: &[F],
    gamma: &[F],
    beta: &[F],
    eps: f64,
    out: &mut [F],
    xhat: &mut [f64],
) {
    normalise_row(xr, eps, xhat);
    for (((o, &h), &g), &b) in out.iter_mut().zip(xhat.iter()).zip(gamma).zip(beta) {
        let h: F = from(h);
        *o = h * g + b;
    }
}

impl LayerNormOp {
    fn run_forward<F: Elem>(&self, x: &[F], gamma: &[F], beta: &[F]) -> Vec<F> {
        let c = gamma.len();
        let mut y = vec![F::zero(); x.len()];
        let per = rows_per_task(c) * c;
        y.par_chunks_mut(per)
            .zip(x.par_chunks(per))
            .for_each(|(yb, xb)| norm_rows(xb, None, gamma, beta, self.eps, yb));
        y
    }

    /// `(dx, dγ, dβ)` for the upstream gradient `g`.
    fn run_backward<F: Elem>(&self, x: &[F], gamma: &[F], g: &[F]) -> (Vec<F>, Vec<F>, Vec<F>) {
        let c = gamma.len();
        let mut dx = vec![F::zero(); x.len()];
        let per = rows_per_task(c) * c;
        let parts: Vec<Vec<f64>> = dx
            .par_chunks_mut(per)
            .zip(x.par_chunks(per).zip(g.par_chunks(per)))
            .map(|(db, (xb, gb))| {
                let mut sums = vec![0.0f64; 3 * c];
                norm_grad_rows(xb, None, gb, gamma, self.eps, db, None, &mut sums);
                sums
            })
            .collect();
        let sums = reduce_columns(parts, 3 * c);
        let dgamma = sums[c..2 * c].iter().map(|&v| from(v)).collect();
        let dbeta = sums[2 * c..].iter().map(|&v| from(v)).collect();
        (dx, dgamma, dbeta)
    }
}

impl FusedOp3 for LayerNormOp {
    const NAME: &'static str = LAYER_NORM;

    fn forward<F: Elem>(&self, [x, gamma, beta]: [&[F]; 3], _: Option<&[F]>) -> Vec<F> {
        self.run_forward(x, gamma, beta)
    }

    fn backward<F: Elem>(&self, [x, gamma, _]: [&[F]; 3], _: Option<&[F]>, g: &[F]) -> Grads3<F> {
        let (dx, dgamma, dbeta) = self.run_backward(x, gamma, g);
        (Some(dx), dgamma, Some(dbeta))
    }
}

fused_custom_op3!(LayerNormOp, "mtrec-layer-norm");

// ------------------------------------------------------------------ residual + LayerNorm

/// `LN((y + b) ⊙ mask + r)` over the last dimension, LN with its affine part (`γ`, `β`): a
/// post-LN transformer sublayer's output bias and dropout, its residual add and its LayerNorm
/// in one op on CPU f32/f64 (`mask` a dropout mask of `y`'s shape; `eps` as given). `None` when
/// the operands cannot take the fused path. The values are those of [`bias_act`], `+` and
/// `layer_norm` in a row, bit for bit; it saves their two intermediate tensors and the
/// gradient buffers candle's backward fills for each.
#[allow(clippy::too_many_arguments)]
pub(crate) fn add_norm(
    y: &Tensor,
    b: &Tensor,
    mask: Option<&Tensor>,
    r: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<Option<Tensor>> {
    let c = gamma.elem_count();
    let dt = y.dtype();
    let typed = [b, r, gamma, beta].iter().all(|t| t.dtype() == dt)
        && mask.is_none_or(|m| m.dtype() == dt && m.dims() == y.dims());
    let shaped = r.dims() == y.dims()
        && gamma.rank() == 1
        && b.dims() == gamma.dims()
        && beta.dims() == gamma.dims()
        && y.dims().last() == Some(&c);
    if !(fused_ok(y) && typed && shaped) {
        return Ok(None);
    }
    let params = Tensor::stack(&[b, gamma, beta], 0)?;
    let op = AddNormOp {
        eps,
        mask: mask.map(Tensor::contiguous).transpose()?,
    };
    Ok(Some(y.contiguous()?.apply_op3(
        &r.contiguous()?,
        &params,
        op,
    )?))
}

const ADD_NORM: &str = "fused residual + layer norm";

/// The op on `(y, r, [b; γ; β])`; the dropout mask is held by the op (it needs no gradient).
struct AddNormOp {
    eps: f64,
    mask: Option<Tensor>,
}

/// `z = (y + b) ⊙ m + r` for one row (the composed form's order of operations).
#[inline(always)]
fn add_norm_input<F: Elem>(yr: &[F], b: &[F], m: Option<&[F]>, rr: &[F], z: &mut [F]) {
    for ((o, &yv), &bv) in z.iter_mut().zip(yr).zip(b) {
        *o = yv + bv;
    }
    if let Some(m) = m {
        for (o, &mv) in z.iter_mut().zip(m) {
            *o *= mv;
        }
    }
    for (o, &rv) in z.iter_mut().zip(rr) {
        *o += rv;
    }
}

/// The dense-layer output ahead of a residual LayerNorm: the normalised row is
/// `(y + b) ⊙ m + r` (see [`add_norm`]).
#[derive(Clone, Copy)]
struct Residual<'a, F> {
    y: &'a [F],
    b: &'a [F],
    m: Option<&'a [F]>,
}

/// LayerNorm of whole rows of `gamma.len()` values: of `x`, or with `pre` of
/// `(y + b) ⊙ m + x` (the residual form).
#[inline(always)]
fn norm_rows_impl<F: Elem>(
    x: &[F],
    pre: Option<Residual<'_, F>>,
    gamma: &[F],
    beta: &[F],
    eps: f64,
    out: &mut [F],
) {
    let c = gamma.len();
    let mut z = vec![F::zero(); c];
    let mut xhat = vec![0.0f64; c];
    for (i, (orow, xr)) in out.chunks_mut(c).zip(x.chunks(c)).enumerate() {
        let row = match pre {
            Some(p) => {
                let mr = p.m.map(|m| &m[i * c..(i + 1) * c]);
                add_norm_input(&p.y[i * c..(i + 1) * c], p.b, mr, xr, &mut z);
                &z[..]
            }
            None => xr,
        };
        ln_row_forward(row, gamma, beta, eps, orow, &mut xhat);
    }
}

/// The backward of [`norm_rows`] for the upstream gradient `g`: the gradient at `x` into `dx`,
/// at `y` into `dy` (with `pre` and a mask; without a mask it equals `dx`), and the column
/// sums `[db | dγ | dβ]` added to `sums` `[3C]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn norm_grad_rows_impl<F: Elem>(
    x: &[F],
    pre: Option<Residual<'_, F>>,
    g: &[F],
    gamma: &[F],
    eps: f64,
    dx: &mut [F],
    mut dy: Option<&mut [F]>,
    sums: &mut [f64],
) {
    let c = gamma.len();
    let (db, rest) = sums.split_at_mut(c);
    let (dgamma, dbeta) = rest.split_at_mut(c);
    let mut z = vec![F::zero(); c];
    let (mut xhat, mut gh) = (vec![0.0f64; c], vec![0.0f64; c]);
    for (i, (dxr, xr)) in dx.chunks_mut(c).zip(x.chunks(c)).enumerate() {
        let rows = i * c..(i + 1) * c;
        let gr = &g[rows.clone()];
        let scratch = (&mut xhat[..], &mut gh[..]);
        let Some(p) = pre else {
            ln_row_backward((xr, gr), gamma, eps, dxr, (dgamma, dbeta), scratch);
            continue;
        };
        let mr = p.m.map(|m| &m[rows.clone()]);
        add_norm_input(&p.y[rows.clone()], p.b, mr, xr, &mut z);
        ln_row_backward((&z, gr), gamma, eps, dxr, (dgamma, dbeta), scratch);
        match (mr, dy.as_deref_mut()) {
            (Some(mr), Some(dy)) => {
                let dyr = &mut dy[rows];
                for ((o, &d), &mv) in dyr.iter_mut().zip(dxr.iter()).zip(mr) {
                    *o = d * mv;
                }
                for (acc, &d) in db.iter_mut().zip(dyr.iter()) {
                    *acc += f(d);
                }
            }
            _ => {
                for (acc, &d) in db.iter_mut().zip(dxr.iter()) {
                    *acc += f(d);
                }
            }
        }
    }
}

crate::avx2_dispatch!(fn norm_rows, norm_rows_avx2 => norm_rows_impl
    <F: Elem>(x: &[F], pre: Option<Residual<'_, F>>, gamma: &[F], beta: &[F], eps: f64,
    out: &mut [F]));
crate::avx2_dispatch!(fn norm_grad_rows, norm_grad_rows_avx2 => norm_grad_rows_impl
    <F: Elem>(x: &[F], pre: Option<Residual<'_, F>>, g: &[F], gamma: &[F], eps: f64,
    dx: &mut [F], dy: Option<&mut [F]>, sums: &mut [f64]));

impl AddNormOp {
    fn run_forward<F: Elem>(&self, y: &[F], r: &[F], params: &[F], m: Option<&[F]>) -> Vec<F> {
        let c = params.len() / 3;
        let (b, gamma, beta) = (&params[..c], &params[c..2 * c], &params[2 * c..]);
        let mut out = vec![F::zero(); y.len()];
        let per = rows_per_task(c) * c;
        out.par_chunks_mut(per).enumerate().for_each(|(t, ob)| {
            let at = t * per..t * per + ob.len();
            let pre = Residual {
                y: &y[at.clone()],
                b,
                m: m.map(|m| &m[at.clone()]),
            };
            norm_rows(&r[at], Some(pre), gamma, beta, self.eps, ob);
        });
        out
    }

    /// `(dy, dr, d[b; γ; β])` for the upstream gradient `g`; `dy` is `None` without a mask
    /// (it equals `dr` then).
    fn run_backward<F: Elem>(
        &self,
        y: &[F],
        r: &[F],
        params: &[F],
        m: Option<&[F]>,
        g: &[F],
    ) -> (Option<Vec<F>>, Vec<F>, Vec<F>) {
        let c = params.len() / 3;
        let (b, gamma) = (&params[..c], &params[c..2 * c]);
        let mut dy = vec![F::zero(); if m.is_some() { y.len() } else { 0 }];
        let mut dr = vec![F::zero(); y.len()];
        let per = rows_per_task(c) * c;
        let task = |t: usize, drb: &mut [F], dyb: Option<&mut [F]>| {
            let at = t * per..t * per + drb.len();
            let pre = Residual {
                y: &y[at.clone()],
                b,
                m: m.map(|m| &m[at.clone()]),
            };
            let mut sums = vec![0.0f64; 3 * c];
            let (rt, gt) = (&r[at.clone()], &g[at]);
            norm_grad_rows(rt, Some(pre), gt, gamma, self.eps, drb, dyb, &mut sums);
            sums
        };
        let parts: Vec<Vec<f64>> = if m.is_some() {
            dr.par_chunks_mut(per)
                .zip(dy.par_chunks_mut(per))
                .enumerate()
                .map(|(t, (drb, dyb))| task(t, drb, Some(dyb)))
                .collect()
        } else {
            dr.par_chunks_mut(per)
                .enumerate()
                .map(|(t, drb)| task(t, drb, None))
                .collect()
        };
        let dparams = reduce_columns(parts, 3 * c).into_iter().map(from).collect();
        (m.is_some().then_some(dy), dr, dparams)
    }
}

impl FusedOp3 for AddNormOp {
    const NAME: &'static str = ADD_NORM;

    fn mask(&self) -> Option<&Tensor> {
        self.mask.as_ref()
    }

    fn forward<F: Elem>(&self, [y, r, params]: [&[F]; 3], m: Option<&[F]>) -> Vec<F> {
        self.run_forward(y, r, params, m)
    }

    fn backward<F: Elem>(&self, [y, r, params]: [&[F]; 3], m: Option<&[F]>, g: &[F]) -> Grads3<F> {
        let (dy, dr, dparams) = self.run_backward(y, r, params, m, g);
        (dy, dr, Some(dparams))
    }
}

fused_custom_op3!(AddNormOp, "mtrec-add-norm");

// ------------------------------------------------------------------ positions + LayerNorm

/// `LN(x + pos) ⊙ mask` for `x` `[B, L, C]` and the position rows `pos` `[L, C]` (added to
/// every sample), LN with its affine part (`γ`, `β`): a transformer's embedding block (the
/// position add, the embedding LayerNorm and its dropout) in one op on CPU f32/f64. `None` when
/// the operands cannot take the fused path. Replaces three graph nodes over `[B, L, C]` (the
/// add, whose positions candle's backward would otherwise reduce over the batch, the
/// LayerNorm and the mask product) and their gradient buffers.
pub(crate) fn position_norm(
    x: &Tensor,
    pos: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mask: Option<&Tensor>,
    eps: f64,
) -> Result<Option<Tensor>> {
    let dt = x.dtype();
    let typed = [pos, gamma, beta].iter().all(|t| t.dtype() == dt)
        && mask.is_none_or(|m| m.dtype() == dt && m.dims() == x.dims());
    let shaped = match (x.dims(), pos.dims()) {
        ([_, l, c], [lp, cp]) => l == lp && c == cp && gamma.dims() == [*c] && beta.dims() == [*c],
        _ => false,
    };
    if !(fused_ok(x) && typed && shaped) {
        return Ok(None);
    }
    let params = Tensor::stack(&[gamma, beta], 0)?;
    let op = PositionNormOp {
        eps,
        mask: mask.map(Tensor::contiguous).transpose()?,
    };
    Ok(Some(x.contiguous()?.apply_op3(
        &pos.contiguous()?,
        &params,
        op,
    )?))
}

const POSITION_NORM: &str = "fused position add + layer norm";

/// The op on `(x, pos, [γ; β])`; the dropout mask is held by the op.
struct PositionNormOp {
    eps: f64,
    mask: Option<Tensor>,
}

/// The position rows for the token rows `start..start + n` (`n` rows of `c`; the positions
/// repeat every `pos.len() / c` rows), copied into `out`.
fn position_rows<F: Elem>(pos: &[F], c: usize, start: usize, out: &mut [F]) {
    let l = pos.len() / c;
    for (i, row) in out.chunks_mut(c).enumerate() {
        let at = (start + i) % l * c;
        row.copy_from_slice(&pos[at..at + c]);
    }
}

impl PositionNormOp {
    fn run_forward<F: Elem>(&self, x: &[F], pos: &[F], params: &[F], m: Option<&[F]>) -> Vec<F> {
        let c = params.len() / 2;
        let (gamma, beta) = (&params[..c], &params[c..]);
        let zero = vec![F::zero(); c];
        let mut out = vec![F::zero(); x.len()];
        let per = rows_per_task(c) * c;
        out.par_chunks_mut(per).enumerate().for_each(|(t, ob)| {
            let at = t * per..t * per + ob.len();
            let mut p = vec![F::zero(); ob.len()];
            position_rows(pos, c, t * per / c, &mut p);
            let pre = Residual {
                y: &x[at.clone()],
                b: &zero,
                m: None,
            };
            norm_rows(&p, Some(pre), gamma, beta, self.eps, ob);
            if let Some(m) = m {
                for (o, &mv) in ob.iter_mut().zip(&m[at]) {
                    *o *= mv;
                }
            }
        });
        out
    }

    /// `(dx, dpos, d[γ; β])` for the upstream gradient `g`. The position gradient adds
    /// per-task partial sums in f64, in task order.
    fn run_backward<F: Elem>(
        &self,
        x: &[F],
        pos: &[F],
        params: &[F],
        m: Option<&[F]>,
        g: &[F],
    ) -> (Vec<F>, Vec<F>, Vec<F>) {
        let c = params.len() / 2;
        let gamma = &params[..c];
        let zero = vec![F::zero(); c];
        let mut dx = vec![F::zero(); x.len()];
        let per = rows_per_task(c) * c;
        let parts: Vec<(Vec<f64>, Vec<f64>)> = dx
            .par_chunks_mut(per)
            .enumerate()
            .map(|(t, db)| {
                let at = t * per..t * per + db.len();
                let mut p = vec![F::zero(); db.len()];
                position_rows(pos, c, t * per / c, &mut p);
                let gm: Vec<F> = match m {
                    Some(m) => g[at.clone()]
                        .iter()
                        .zip(&m[at.clone()])
                        .map(|(&gv, &mv)| gv * mv)
                        .collect(),
                    None => g[at.clone()].to_vec(),
                };
                let pre = Residual {
                    y: &x[at.clone()],
                    b: &zero,
                    m: None,
                };
                let mut sums = vec![0.0f64; 3 * c];
                norm_grad_rows(&p, Some(pre), &gm, gamma, self.eps, db, None, &mut sums);
                let mut dpos = vec![0.0f64; pos.len()];
                let l = pos.len() / c;
                for (i, row) in db.chunks(c).enumerate() {
                    let to = (t * per / c + i) % l * c;
                    for (acc, &d) in dpos[to..to + c].iter_mut().zip(row) {
                        *acc += f(d);
                    }
                }
                (dpos, sums)
            })
            .collect();
        let (dpos, sums): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
        let dpos = reduce_columns(dpos, pos.len())
            .into_iter()
            .map(from)
            .collect();
        let sums = reduce_columns(sums, 3 * c);
        let dparams = sums[c..].iter().map(|&v| from(v)).collect();
        (dx, dpos, dparams)
    }
}

impl FusedOp3 for PositionNormOp {
    const NAME: &'static str = POSITION_NORM;

    fn mask(&self) -> Option<&Tensor> {
        self.mask.as_ref()
    }

    fn forward<F: Elem>(&self, [x, pos, params]: [&[F]; 3], m: Option<&[F]>) -> Vec<F> {
        self.run_forward(x, pos, params, m)
    }

    fn backward<F: Elem>(
        &self,
        [x, pos, params]: [&[F]; 3],
        m: Option<&[F]>,
        g: &[F],
    ) -> Grads3<F> {
        let (dx, dpos, dparams) = self.run_backward(x, pos, params, m, g);
        (Some(dx), dpos, Some(dparams))
    }
}

fused_custom_op3!(PositionNormOp, "mtrec-position-norm");

// ------------------------------------------------------------------ shared plumbing

/// The gradients of a [`FusedOp3`]'s three operands: `None` for the first means "equal to the
/// second" (one buffer, handed to candle twice), `None` for the third "no gradient".
type Grads3<F> = (Option<Vec<F>>, Vec<F>, Option<Vec<F>>);

/// A fused op of this module on three same-typed operands, and possibly a dropout mask held by
/// the op (it needs no gradient), whose output has the first operand's shape.
/// [`fused_cpu_fwd`] and [`fused_bwd`] are its candle plumbing.
trait FusedOp3 {
    /// The op's name in errors.
    const NAME: &'static str;
    /// The mask the op holds, if any.
    fn mask(&self) -> Option<&Tensor> {
        None
    }
    fn forward<F: Elem>(&self, operands: [&[F]; 3], m: Option<&[F]>) -> Vec<F>;
    fn backward<F: Elem>(&self, operands: [&[F]; 3], m: Option<&[F]>, g: &[F]) -> Grads3<F>;
}

/// `f` with the op's mask data borrowed (or `None`).
fn with_mask<K: FusedOp3, F: Elem, R>(
    op: &K,
    f: impl FnOnce(Option<&[F]>) -> Result<R>,
) -> Result<R> {
    match op.mask() {
        Some(mask) => with_cpu_slices::<F, _, 1>([mask], K::NAME, |[m]| f(Some(m))),
        None => f(None),
    }
}

/// `CustomOp3::cpu_fwd` of a [`FusedOp3`].
fn fused_cpu_fwd<K: FusedOp3>(
    op: &K,
    [(s1, l1), (s2, l2), (s3, l3)]: [(&CpuStorage, &Layout); 3],
) -> Result<(CpuStorage, Shape)> {
    let name = K::NAME;
    let out = match (s1, s2, s3) {
        (CpuStorage::F32(a), CpuStorage::F32(b), CpuStorage::F32(c)) => {
            let t = [
                contiguous_slice(a, l1, name)?,
                contiguous_slice(b, l2, name)?,
                contiguous_slice(c, l3, name)?,
            ];
            CpuStorage::F32(with_mask(op, |m| Ok(op.forward(t, m)))?)
        }
        (CpuStorage::F64(a), CpuStorage::F64(b), CpuStorage::F64(c)) => {
            let t = [
                contiguous_slice(a, l1, name)?,
                contiguous_slice(b, l2, name)?,
                contiguous_slice(c, l3, name)?,
            ];
            CpuStorage::F64(with_mask(op, |m| Ok(op.forward(t, m)))?)
        }
        _ => bail!("{name}: f32 or f64 operands of one type only"),
    };
    Ok((out, l1.shape().clone()))
}

/// `CustomOp3::bwd` of a [`FusedOp3`].
fn fused_bwd<K: FusedOp3>(
    op: &K,
    [a, b, c]: [&Tensor; 3],
    grad: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let grad = grad.contiguous()?;
    fn run<K: FusedOp3, F: Elem>(
        op: &K,
        [a, b, c, g]: [&Tensor; 4],
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let (da, db, dc) = with_cpu_slices::<F, _, 4>([a, b, c, g], K::NAME, |[sa, sb, sc, sg]| {
            with_mask(op, |m| Ok(op.backward([sa, sb, sc], m, sg)))
        })?;
        let dev = a.device();
        let db = Tensor::from_vec(db, b.shape(), dev)?;
        let da = match da {
            Some(da) => Tensor::from_vec(da, a.shape(), dev)?,
            None => db.clone(),
        };
        let dc = dc
            .map(|dc| Tensor::from_vec(dc, c.shape(), dev))
            .transpose()?;
        Ok((da, db, dc))
    }
    let t = [a, b, c, &grad];
    let (da, db, dc) = match a.dtype() {
        DType::F32 => run::<K, f32>(op, t)?,
        DType::F64 => run::<K, f64>(op, t)?,
        dt => bail!("{}: no backward for {dt:?}", K::NAME),
    };
    Ok((Some(da), Some(db), dc))
}

/// [`bias_act`] composed from candle ops: the path off the CPU and the reference of the tests.
fn bias_act_composed(
    y: &Tensor,
    b: &Tensor,
    act: PointwiseAct,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let z = add_last(y, b)?;
    let z = match act {
        PointwiseAct::Identity => z,
        PointwiseAct::Relu => z.relu()?,
        PointwiseAct::Gelu => z.gelu_erf()?,
    };
    match mask {
        Some(m) => z * m,
        None => Ok(z),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctr::testkit::max_abs_diff;
    use crate::testing::assert_gradients_match;
    use candle_core::{Device, Var};

    fn t(shape: &[usize], seed: u64, dtype: DType) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n)
            .map(|i| (((i as u64 * 2654435761 + seed * 97) % 1000) as f64 / 400.0) - 1.25)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    fn mask(shape: &[usize], dtype: DType) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|i| if i % 3 == 1 { 0.0 } else { 2.0 }).collect();
        Tensor::from_vec(v, shape, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    const ACTS: [PointwiseAct; 3] = [
        PointwiseAct::Identity,
        PointwiseAct::Relu,
        PointwiseAct::Gelu,
    ];

    #[test]
    fn bias_act_equals_the_composed_form() {
        for dtype in [DType::F32, DType::F64] {
            for act in ACTS {
                for masked in [false, true] {
                    let y = Var::from_tensor(&t(&[3, 70, 5], 1, dtype)).unwrap();
                    let b = Var::from_tensor(&t(&[5], 2, dtype)).unwrap();
                    let m = mask(&[3, 70, 5], dtype);
                    let m = masked.then_some(&m);
                    let w = t(&[3, 70, 5], 3, dtype);
                    let fused = bias_act(y.as_tensor(), b.as_tensor(), act, m).unwrap();
                    let composed = bias_act_composed(y.as_tensor(), b.as_tensor(), act, m).unwrap();
                    // The same arithmetic, the same bits; but f32 GELU uses the vectorised
                    // erf (within 1e-6 of libm's).
                    let d = max_abs_diff(&fused, &composed).unwrap();
                    if dtype == DType::F32 && act == PointwiseAct::Gelu {
                        assert!(d < 2e-6, "{act:?}: {d}");
                    } else {
                        assert_eq!(d, 0.0, "{dtype:?} {act:?}");
                    }
                    let gf = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
                    let gc = (composed * &w)
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .backward()
                        .unwrap();
                    // candle's GELU backward uses 0.398942 for 1/sqrt(2π) (ours is exact, see
                    // the finite-difference test): agreement to about 1e-7 per element only.
                    let tol = match (dtype, act) {
                        (DType::F32, _) => 1e-4,
                        (_, PointwiseAct::Gelu) => 2e-5,
                        _ => 1e-10,
                    };
                    for v in [&y, &b] {
                        let d = max_abs_diff(gf.get(v).unwrap(), gc.get(v).unwrap()).unwrap();
                        assert!(d < tol, "{dtype:?} {act:?} masked {masked}: {d}");
                    }
                }
            }
        }
    }

    #[test]
    fn bias_act_gradients_match_finite_differences() {
        for act in ACTS {
            let vars = [
                Var::from_tensor(&t(&[4, 6], 5, DType::F64)).unwrap(),
                Var::from_tensor(&t(&[6], 6, DType::F64)).unwrap(),
            ];
            let m = mask(&[4, 6], DType::F64);
            let w = t(&[4, 6], 7, DType::F64);
            assert_gradients_match(&vars, |v| {
                (bias_act(v[0].as_tensor(), v[1].as_tensor(), act, Some(&m))? * &w)?.sum_all()
            });
        }
    }

    #[test]
    fn bias_act_rejects_mismatched_shapes_and_keeps_empty_batches() {
        let y = t(&[2, 3], 1, DType::F32);
        assert!(bias_act(&y, &t(&[4], 1, DType::F32), PointwiseAct::Relu, None).is_err());
        let m = t(&[3, 2], 1, DType::F32);
        assert!(bias_act(&y, &t(&[3], 1, DType::F32), PointwiseAct::Relu, Some(&m)).is_err());
        let empty = Tensor::zeros((0, 3), DType::F32, &Device::Cpu).unwrap();
        let out = bias_act(&empty, &t(&[3], 1, DType::F32), PointwiseAct::Gelu, None).unwrap();
        assert_eq!(out.dims(), &[0, 3]);
    }

    #[test]
    fn layer_norm_gradients_match_finite_differences() {
        let vars = [
            Var::from_tensor(&t(&[5, 6], 8, DType::F64)).unwrap(),
            Var::from_tensor(&(t(&[6], 9, DType::F64) + 1.0).unwrap()).unwrap(),
            Var::from_tensor(&t(&[6], 10, DType::F64)).unwrap(),
        ];
        let w = t(&[5, 6], 11, DType::F64);
        assert_gradients_match(&vars, |v| {
            let y = layer_norm(v[0].as_tensor(), v[1].as_tensor(), v[2].as_tensor(), 1e-5)?
                .expect("fused path");
            (y * &w)?.sum_all()
        });
    }

    #[test]
    fn add_norm_equals_bias_act_add_and_layer_norm() {
        // Same bits as the three ops in a row (f32 and f64, with and without a dropout mask);
        // gradients of all five operands agree; off the fused path (mismatched shapes) it
        // answers None.
        for dtype in [DType::F32, DType::F64] {
            for masked in [false, true] {
                let y = Var::from_tensor(&t(&[3, 70, 6], 1, dtype)).unwrap();
                let b = Var::from_tensor(&t(&[6], 2, dtype)).unwrap();
                let r = Var::from_tensor(&t(&[3, 70, 6], 3, dtype)).unwrap();
                let gamma = Var::from_tensor(&(t(&[6], 4, dtype) + 1.0).unwrap()).unwrap();
                let beta = Var::from_tensor(&t(&[6], 5, dtype)).unwrap();
                let m = mask(&[3, 70, 6], dtype);
                let m = masked.then_some(&m);
                let w = t(&[3, 70, 6], 6, dtype);
                let (yt, bt, rt) = (y.as_tensor(), b.as_tensor(), r.as_tensor());
                let (gt, bet) = (gamma.as_tensor(), beta.as_tensor());
                let fused = add_norm(yt, bt, m, rt, gt, bet, 1e-5)
                    .unwrap()
                    .expect("fused path");
                let z =
                    (bias_act_composed(yt, bt, PointwiseAct::Identity, m).unwrap() + rt).unwrap();
                let composed = layer_norm(&z, gt, bet, 1e-5).unwrap().unwrap();
                assert_eq!(max_abs_diff(&fused, &composed).unwrap(), 0.0, "{dtype:?}");
                let gf = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
                let gc = (composed * &w)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let tol = if dtype == DType::F32 { 1e-4 } else { 1e-10 };
                for v in [&y, &b, &r, &gamma, &beta] {
                    let d = max_abs_diff(gf.get(v).unwrap(), gc.get(v).unwrap()).unwrap();
                    assert!(d < tol, "{dtype:?} masked {masked}: {d}");
                }
            }
        }
        let y = t(&[2, 3], 1, DType::F32);
        let p = t(&[3], 2, DType::F32);
        let other = t(&[3, 3], 3, DType::F32);
        assert!(add_norm(&y, &p, None, &other, &p, &p, 1e-5)
            .unwrap()
            .is_none());
    }

    #[test]
    fn add_norm_gradients_match_finite_differences() {
        let vars = [
            Var::from_tensor(&t(&[5, 6], 8, DType::F64)).unwrap(),
            Var::from_tensor(&t(&[6], 9, DType::F64)).unwrap(),
            Var::from_tensor(&t(&[5, 6], 10, DType::F64)).unwrap(),
            Var::from_tensor(&(t(&[6], 11, DType::F64) + 1.0).unwrap()).unwrap(),
            Var::from_tensor(&t(&[6], 12, DType::F64)).unwrap(),
        ];
        let m = mask(&[5, 6], DType::F64);
        let w = t(&[5, 6], 13, DType::F64);
        for masked in [false, true] {
            assert_gradients_match(&vars, |v| {
                let [y, b, r, g, be] = [0, 1, 2, 3, 4].map(|i| v[i].as_tensor());
                let out =
                    add_norm(y, b, masked.then_some(&m), r, g, be, 1e-5)?.expect("fused path");
                (out * &w)?.sum_all()
            });
        }
    }

    /// The AVX2 and the baseline builds of the row kernels give the same bits.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_kernels_equal_the_baseline_bit_for_bit() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("skipped: this CPU has no AVX2");
            return;
        }
        let c = 13;
        let [y, b, m, r, g, gamma, beta] = [
            (1, 3 * c),
            (2, c),
            (0, 3 * c),
            (3, 3 * c),
            (4, 3 * c),
            (5, c),
            (6, c),
        ]
        .map(|(seed, n)| {
            let t = if seed == 0 {
                mask(&[n], DType::F32)
            } else {
                t(&[n], seed, DType::F32)
            };
            t.to_vec1::<f32>().unwrap()
        });
        let pre = Residual {
            y: &y,
            b: &b,
            m: Some(&m),
        };
        let run = |avx: bool| {
            let mut out = vec![vec![0f32; 3 * c]; 6];
            let mut sums = vec![0f64; 3 * c];
            let [o1, o2, o3, o4, o5, o6] = &mut out[..] else {
                unreachable!()
            };
            // SAFETY: AVX2 is present (checked above).
            unsafe {
                if avx {
                    for act in ACTS {
                        bias_act_rows_avx2(act, &y, &b, Some(&m), o1);
                        bias_act_grad_rows_avx2(act, &y, &b, Some(&m), &g, o2, &mut sums);
                    }
                    norm_rows_avx2(&r, Some(pre), &gamma, &beta, 1e-5, o3);
                    norm_rows_avx2(&r, None, &gamma, &beta, 1e-5, o4);
                    norm_grad_rows_avx2(&r, Some(pre), &g, &gamma, 1e-5, o5, Some(o6), &mut sums);
                } else {
                    for act in ACTS {
                        bias_act_rows_impl(act, &y, &b, Some(&m), o1);
                        bias_act_grad_rows_impl(act, &y, &b, Some(&m), &g, o2, &mut sums);
                    }
                    norm_rows_impl(&r, Some(pre), &gamma, &beta, 1e-5, o3);
                    norm_rows_impl(&r, None, &gamma, &beta, 1e-5, o4);
                    norm_grad_rows_impl(&r, Some(pre), &g, &gamma, 1e-5, o5, Some(o6), &mut sums);
                }
            }
            (out, sums)
        };
        let ((a, sa), (base, sb)) = (run(true), run(false));
        assert_eq!(
            sa.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            sb.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        for (x, z) in a.iter().zip(&base) {
            assert!(x.iter().zip(z).all(|(p, q)| p.to_bits() == q.to_bits()));
            assert!(x.iter().any(|&p| p != 0.0));
        }
    }

    #[test]
    fn position_norm_equals_the_composed_embedding_block() {
        // LN(x + pos) ⊙ mask against the sum, layer_norm and mask product in a row: same bits
        // (f32, f64, with and without a mask), gradients of all four operands agree; a
        // position table of the wrong length takes the composed path (None).
        for dtype in [DType::F32, DType::F64] {
            for masked in [false, true] {
                let x = Var::from_tensor(&t(&[3, 70, 6], 1, dtype)).unwrap();
                let pos = Var::from_tensor(&t(&[70, 6], 2, dtype)).unwrap();
                let gamma = Var::from_tensor(&(t(&[6], 4, dtype) + 1.0).unwrap()).unwrap();
                let beta = Var::from_tensor(&t(&[6], 5, dtype)).unwrap();
                let m = mask(&[3, 70, 6], dtype);
                let m = masked.then_some(&m);
                let w = t(&[3, 70, 6], 6, dtype);
                let (xt, pt) = (x.as_tensor(), pos.as_tensor());
                let (gt, bt) = (gamma.as_tensor(), beta.as_tensor());
                let fused = position_norm(xt, pt, gt, bt, m, 1e-5)
                    .unwrap()
                    .expect("fused path");
                let z = xt.broadcast_add(pt).unwrap();
                let composed = layer_norm(&z, gt, bt, 1e-5).unwrap().unwrap();
                let composed = match m {
                    Some(m) => (composed * m).unwrap(),
                    None => composed,
                };
                assert_eq!(max_abs_diff(&fused, &composed).unwrap(), 0.0, "{dtype:?}");
                let gf = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
                let gc = (composed * &w)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let tol = if dtype == DType::F32 { 1e-4 } else { 1e-10 };
                for v in [&x, &pos, &gamma, &beta] {
                    let d = max_abs_diff(gf.get(v).unwrap(), gc.get(v).unwrap()).unwrap();
                    assert!(d < tol, "{dtype:?} masked {masked}: {d}");
                }
            }
        }
        let x = t(&[2, 3, 4], 1, DType::F32);
        let p = t(&[4], 2, DType::F32);
        assert!(
            position_norm(&x, &t(&[2, 4], 3, DType::F32), &p, &p, None, 1e-5)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn position_norm_gradients_match_finite_differences() {
        let vars = [
            Var::from_tensor(&t(&[2, 5, 6], 8, DType::F64)).unwrap(),
            Var::from_tensor(&t(&[5, 6], 9, DType::F64)).unwrap(),
            Var::from_tensor(&(t(&[6], 11, DType::F64) + 1.0).unwrap()).unwrap(),
            Var::from_tensor(&t(&[6], 12, DType::F64)).unwrap(),
        ];
        let m = mask(&[2, 5, 6], DType::F64);
        let w = t(&[2, 5, 6], 13, DType::F64);
        assert_gradients_match(&vars, |v| {
            let [x, p, g, b] = [0, 1, 2, 3].map(|i| v[i].as_tensor());
            let out = position_norm(x, p, g, b, Some(&m), 1e-5)?.expect("fused path");
            (out * &w)?.sum_all()
        });
    }
}
