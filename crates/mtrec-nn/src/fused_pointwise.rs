//! Two fused CPU ops for the dense layers of the sequence models, each with a hand-written
//! backward:
//!
//! * [`bias_act`]: `act(y + b) ⊙ mask` over the last dimension, the bias add, activation (identity,
//!   ReLU, erf-GELU) and dropout mask of a dense layer in one pass forward and one backward, the
//!   bias gradient a column sum of the same pass;
//! * `layer_norm` (used by [`crate::LayerNorm`]): LayerNorm with its affine part, `γ ⊙ (x − mean)/sqrt(var + eps) + β`.
//!
//! Why: candle's backward accumulates every gradient into a zero-filled buffer (`zeros_like` then
//! `add`), so each node of the graph costs about three passes over its tensor on the way back, and
//! its GELU backward alone is ten ops. In LinRec's training step (d = 128, inner 256, 51,200
//! tokens) such element-wise passes were about half of the time and the matrix products a quarter.
//!
//! The values are those of the composed forms, bit for bit (same arithmetic in the same order:
//! `y + b`, then candle's GELU formula, then `⊙ mask`; LayerNorm's statistics in f64, one pass
//! per row each way, then `x̂ ⊙ γ + β` in the tensor's type), except that the f32 GELU
//! evaluates erf with the vectorisable [`crate::fastmath::erf`] (within 1e-6 of libm's `erff`,
//! which candle calls per element: the GELU's forward and backward took 4× the time of the
//! rest of the op). Gradients are equal up to float
//! summation order (the column sums add per-chunk partial sums in f64, in chunk order, so they do
//! not depend on the thread count). Other devices and dtypes take the composed path.

use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType};

use crate::fastmath::Elem;
use num_traits::Float;
use rayon::prelude::*;

use crate::custom_op::{cpu_fwd3, fused_ok, with_cpu_slice, Kernel3};
use crate::dense::add_last;

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

impl PointwiseAct {
    fn value<F: Elem>(self, z: F) -> F {
        match self {
            Self::Identity => z,
            Self::Relu => Float::max(z, F::zero()),
            Self::Gelu => z.gelu(),
        }
    }
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
    fn forward<F: Elem>(&self, y: &[F], b: &[F], m: &[F]) -> Vec<F> {
        let c = b.len();
        let mut out = vec![F::zero(); y.len()];
        let per = rows_per_task(c) * c;
        out.par_chunks_mut(per).enumerate().for_each(|(t, ob)| {
            let start = t * per;
            for (r, orow) in ob.chunks_mut(c).enumerate() {
                let at = start + r * c;
                let yr = &y[at..at + c];
                for ((o, &yv), &bv) in orow.iter_mut().zip(yr).zip(b) {
                    *o = self.act.value(yv + bv);
                }
                if self.masked {
                    for (o, &mv) in orow.iter_mut().zip(&m[at..at + c]) {
                        *o *= mv;
                    }
                }
            }
        });
        out
    }

    /// `(dy, db)` for the upstream gradient `g`.
    fn backward<F: Elem>(&self, y: &[F], b: &[F], m: &[F], g: &[F]) -> (Vec<F>, Vec<F>) {
        match self.act {
            PointwiseAct::Identity => self.backward_with(y, b, m, g, |_| F::one()),
            PointwiseAct::Relu => self.backward_with(y, b, m, g, |z: F| {
                if z >= F::zero() {
                    F::one()
                } else {
                    F::zero()
                }
            }),
            PointwiseAct::Gelu => self.backward_with(y, b, m, g, F::gelu_slope),
        }
    }

    /// [`backward`](Self::backward) for the activation's derivative `slope` (the loop is
    /// specialised per activation).
    fn backward_with<F: Elem>(
        &self,
        y: &[F],
        b: &[F],
        m: &[F],
        g: &[F],
        slope: impl Fn(F) -> F + Sync,
    ) -> (Vec<F>, Vec<F>) {
        let c = b.len();
        let mut dy = vec![F::zero(); y.len()];
        let per = rows_per_task(c) * c;
        let parts: Vec<Vec<f64>> = dy
            .par_chunks_mut(per)
            .enumerate()
            .map(|(t, db)| {
                let mut col = vec![0.0f64; c];
                let start = t * per;
                for (r, drow) in db.chunks_mut(c).enumerate() {
                    let at = start + r * c;
                    let (yr, gr) = (&y[at..at + c], &g[at..at + c]);
                    for (((d, &yv), &gv), &bv) in drow.iter_mut().zip(yr).zip(gr).zip(b) {
                        *d = gv * slope(yv + bv);
                    }
                    if self.masked {
                        for (d, &mv) in drow.iter_mut().zip(&m[at..at + c]) {
                            *d *= mv;
                        }
                    }
                    for (acc, &d) in col.iter_mut().zip(drow.iter()) {
                        *acc += f(d);
                    }
                }
                col
            })
            .collect();
        let db = reduce_columns(parts, c).into_iter().map(from).collect();
        (dy, db)
    }
}

impl Kernel3 for BiasActOp {
    fn apply<F: Elem>(&self, y: &[F], b: &[F], m: &[F]) -> Vec<F> {
        self.forward(y, b, m)
    }
}

impl CustomOp3 for BiasActOp {
    fn name(&self) -> &'static str {
        "mtrec-bias-act"
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
        cpu_fwd3(self, BIAS_ACT, (s1, l1), (s2, l2), (s3, l3))
    }

    fn bwd(
        &self,
        y: &Tensor,
        b: &Tensor,
        m: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        fn run<F: Elem>(
            op: &BiasActOp,
            y: &Tensor,
            b: &Tensor,
            m: &Tensor,
            g: &Tensor,
        ) -> Result<(Tensor, Tensor)> {
            let (dy, db) = with_cpu_slice::<F, _>(y, BIAS_ACT, |ys| {
                with_cpu_slice::<F, _>(b, BIAS_ACT, |bs| {
                    with_cpu_slice::<F, _>(m, BIAS_ACT, |ms| {
                        with_cpu_slice::<F, _>(g, BIAS_ACT, |gs| Ok(op.backward(ys, bs, ms, gs)))
                    })
                })
            })?;
            Ok((
                Tensor::from_vec(dy, y.shape(), y.device())?,
                Tensor::from_vec(db, b.shape(), b.device())?,
            ))
        }
        let (dy, db) = match y.dtype() {
            DType::F32 => run::<f32>(self, y, b, m, &grad)?,
            DType::F64 => run::<f64>(self, y, b, m, &grad)?,
            dt => bail!("{BIAS_ACT}: no backward for {dt:?}"),
        };
        Ok((Some(dy), Some(db), None))
    }
}

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

/// `(mean, rstd)` of a row, in f64.
fn stats<F: Elem>(row: &[F], eps: f64) -> (f64, f64) {
    let n = row.len() as f64;
    let mean = row.iter().map(|&v| f(v)).sum::<f64>() / n;
    let var = row.iter().map(|&v| (f(v) - mean).powi(2)).sum::<f64>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl LayerNormOp {
    fn forward<F: Elem>(&self, x: &[F], gamma: &[F], beta: &[F]) -> Vec<F> {
        let c = gamma.len();
        let mut y = vec![F::zero(); x.len()];
        let per = rows_per_task(c) * c;
        y.par_chunks_mut(per)
            .zip(x.par_chunks(per))
            .for_each(|(yb, xb)| {
                for (yr, xr) in yb.chunks_mut(c).zip(xb.chunks(c)) {
                    let (mean, rstd) = stats(xr, self.eps);
                    for (((o, &v), &g), &b) in yr.iter_mut().zip(xr).zip(gamma).zip(beta) {
                        // x̂ rounded to F first, then the affine part in F: the composed form's
                        // arithmetic.
                        let xhat: F = from((f(v) - mean) * rstd);
                        *o = xhat * g + b;
                    }
                }
            });
        y
    }

    /// `(dx, dγ, dβ)` for the upstream gradient `g`.
    fn backward<F: Elem>(&self, x: &[F], gamma: &[F], g: &[F]) -> (Vec<F>, Vec<F>, Vec<F>) {
        let c = gamma.len();
        let n = c as f64;
        let mut dx = vec![F::zero(); x.len()];
        let per = rows_per_task(c) * c;
        let parts: Vec<(Vec<f64>, Vec<f64>)> = dx
            .par_chunks_mut(per)
            .zip(x.par_chunks(per).zip(g.par_chunks(per)))
            .map(|(db, (xb, gb))| {
                let (mut dgamma, mut dbeta) = (vec![0.0f64; c], vec![0.0f64; c]);
                for ((dr, xr), gr) in db.chunks_mut(c).zip(xb.chunks(c)).zip(gb.chunks(c)) {
                    let (mean, rstd) = stats(xr, self.eps);
                    let (mut s1, mut s2) = (0.0, 0.0);
                    for j in 0..c {
                        let xhat = (f(xr[j]) - mean) * rstd;
                        let gv = f(gr[j]);
                        dgamma[j] += gv * xhat;
                        dbeta[j] += gv;
                        let gh = gv * f(gamma[j]);
                        s1 += gh;
                        s2 += gh * xhat;
                    }
                    let (m1, m2) = (s1 / n, s2 / n);
                    for j in 0..c {
                        let xhat = (f(xr[j]) - mean) * rstd;
                        let gh = f(gr[j]) * f(gamma[j]);
                        dr[j] = from(rstd * (gh - m1 - xhat * m2));
                    }
                }
                (dgamma, dbeta)
            })
            .collect();
        let (gs, bs): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
        let dgamma = reduce_columns(gs, c).into_iter().map(from).collect();
        let dbeta = reduce_columns(bs, c).into_iter().map(from).collect();
        (dx, dgamma, dbeta)
    }
}

impl Kernel3 for LayerNormOp {
    fn apply<F: Elem>(&self, x: &[F], gamma: &[F], beta: &[F]) -> Vec<F> {
        self.forward(x, gamma, beta)
    }
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "mtrec-layer-norm"
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
        cpu_fwd3(self, LAYER_NORM, (s1, l1), (s2, l2), (s3, l3))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        fn run<F: Elem>(
            op: &LayerNormOp,
            x: &Tensor,
            gamma: &Tensor,
            g: &Tensor,
        ) -> Result<(Tensor, Tensor, Tensor)> {
            let (dx, dg, db) = with_cpu_slice::<F, _>(x, LAYER_NORM, |xs| {
                with_cpu_slice::<F, _>(gamma, LAYER_NORM, |gms| {
                    with_cpu_slice::<F, _>(g, LAYER_NORM, |gs| Ok(op.backward(xs, gms, gs)))
                })
            })?;
            let dev = x.device();
            Ok((
                Tensor::from_vec(dx, x.shape(), dev)?,
                Tensor::from_vec(dg, gamma.shape(), dev)?,
                Tensor::from_vec(db, gamma.shape(), dev)?,
            ))
        }
        let (dx, dg, db) = match x.dtype() {
            DType::F32 => run::<f32>(self, x, gamma, &grad)?,
            DType::F64 => run::<f64>(self, x, gamma, &grad)?,
            dt => bail!("{LAYER_NORM}: no backward for {dt:?}"),
        };
        Ok((Some(dx), Some(dg), Some(db)))
    }
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
}
