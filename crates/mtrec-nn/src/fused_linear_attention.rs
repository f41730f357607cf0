//! LinRec's attention core as one candle [`CustomOp3`] with a hand-written backward, for CPU
//! f32/f64 tensors: from the projected queries, keys and values (heads side by side in the last
//! dimension) to the merged context, per sample and head
//!
//! ```text
//! Qn[i] = elu(Q[i]) / sqrt(‖elu(Q[i])‖² + eps²)     Kn[j] likewise
//! KV    = Σ_j Kn[j] ⊗ V[j]                         (d_h × d_h)
//! ctx[i] = Qn[i] · KV / sqrt(d_h)
//! ```
//!
//! The composed form ([`crate::LinearAttention::forward_queries_composed`]) is about twenty
//! candle ops on `[B, h, L, d_h]` tensors (head split and merge copies, two ELUs, two L2 norms, a
//! transpose, two batched matmuls and a scale), each paying candle's gradient accumulation on the
//! way back; here each sample is read once forward and once backward (its `KV` recomputed), samples
//! in parallel. Backward, with `s = 1/sqrt(d_h)` and `G` the upstream gradient:
//!
//! ```text
//! dQn[i] = s · KV · G[i]          dKV = s · Σ_i Qn[i] ⊗ G[i]
//! dKn[j] = dKV · V[j]             dV[j] = dKVᵀ · Kn[j]
//! du → de = (du − u (u·du)) / n   (u = e / n, the L2 norm)
//! de → dx = de · (x > 0 ? 1 : e + 1)   (elu, alpha 1)
//! ```
//!
//! Values agree with the composed form to float rounding (the sums run in a different order than
//! candle's matmuls); the tests compare values and gradients with it and check the gradients by
//! finite differences.

use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::custom_op::{cpu_fwd3, with_cpu_slice, Kernel3};
use crate::fastmath::Elem;

const OP: &str = "fused linear attention";

/// The op: `heads` heads of `d / heads` columns, `eps` inside the L2 norms.
pub(crate) struct LinearAttentionOp {
    pub heads: usize,
    pub eps: f64,
}

/// Shapes of one call, per sample: query rows, key rows, width.
#[derive(Clone, Copy)]
struct Dims {
    lq: usize,
    l: usize,
    d: usize,
}

#[inline(always)]
fn elu<F: Elem>(x: F) -> F {
    let neg = x.exp_v() - F::one();
    if x.is_sign_positive() {
        x
    } else {
        neg
    }
}

/// `u = elu(x) / sqrt(Σ elu(x)² + eps²)` of one head slice; returns `n`. The ELU loop has no
/// reduction in it, so it vectorises; the sum of squares runs over four interleaved partial sums.
#[inline(always)]
fn unit<F: Elem>(x: &[F], u: &mut [F], eps2: F) -> F {
    for (o, &v) in u.iter_mut().zip(x) {
        *o = elu(v);
    }
    let n = (sum_sq(u) + eps2).sqrt();
    let inv = F::one() / n;
    for o in u.iter_mut() {
        *o *= inv;
    }
    n
}

/// `Σ v²` with four partial sums (a fixed order, so the result does not depend on the CPU).
#[inline(always)]
fn sum_sq<F: Elem>(v: &[F]) -> F {
    let mut acc = [F::zero(); 4];
    let mut chunks = v.chunks_exact(4);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x * x;
        }
    }
    let tail = chunks.remainder().iter().fold(F::zero(), |a, &x| a + x * x);
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// `Σ a·b` with four partial sums.
#[inline(always)]
fn dot<F: Elem>(a: &[F], b: &[F]) -> F {
    let mut acc = [F::zero(); 4];
    let mut ca = a.chunks_exact(4);
    let mut cb = b.chunks_exact(4);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for ((s, &p), &q) in acc.iter_mut().zip(x).zip(y) {
            *s += p * q;
        }
    }
    let tail = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .fold(F::zero(), |s, (&p, &q)| s + p * q);
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// From `du` (the gradient at `u`) to the gradient at `x`, given `u`, `n` and `x`. The ELU's
/// slope at `x ≤ 0` is `exp(x) = e + 1` with `e = u·n`, so no exponential is recomputed.
#[inline(always)]
fn unit_backward<F: Elem>(x: &[F], u: &[F], n: F, du: &[F], dx: &mut [F]) {
    let ud = dot(u, du);
    let inv = F::one() / n;
    for ((o, &xj), (&uj, &duj)) in dx.iter_mut().zip(x).zip(u.iter().zip(du)) {
        let de = (duj - uj * ud) * inv;
        let neg = uj * n + F::one();
        *o = de * if xj > F::zero() { F::one() } else { neg };
    }
}

/// `out[a] = Σ_c m[a][c] · w[c]` for a row-major `dh × dh` matrix given as its transpose `mt`:
/// written as a sum of scaled rows (vectorises, unlike a dot product per `a`).
fn mat_vec_t<F: Elem>(mt: &[F], w: &[F], out: &mut [F]) {
    let dh = out.len();
    out.iter_mut().for_each(|o| *o = F::zero());
    for (c, &wc) in w.iter().enumerate() {
        for (o, &m) in out.iter_mut().zip(&mt[c * dh..(c + 1) * dh]) {
            *o += m * wc;
        }
    }
}

fn transpose<F: Elem>(m: &[F], out: &mut [F], dh: usize) {
    for a in 0..dh {
        for c in 0..dh {
            out[c * dh + a] = m[a * dh + c];
        }
    }
}

impl LinearAttentionOp {
    fn dh(&self, d: usize) -> usize {
        d / self.heads
    }

    /// `eps²`, added inside the L2 norms.
    fn eps2<F: Elem>(&self) -> F {
        F::from(self.eps * self.eps).unwrap_or(F::zero())
    }

    /// `KV` of one sample and head (`kn` receives the unit keys, `[L, dh]`, and `norms` their
    /// norms `[L]`).
    #[allow(clippy::too_many_arguments)]
    fn kv<F: Elem>(
        &self,
        k: &[F],
        v: &[F],
        dims: Dims,
        h: usize,
        kn: &mut [F],
        norms: &mut [F],
        kv: &mut [F],
    ) {
        let dh = self.dh(dims.d);
        let eps2 = self.eps2();
        kv.iter_mut().for_each(|x| *x = F::zero());
        for j in 0..dims.l {
            let at = j * dims.d + h * dh;
            let u = &mut kn[j * dh..(j + 1) * dh];
            norms[j] = unit(&k[at..at + dh], u, eps2);
            let vj = &v[at..at + dh];
            for (a, &ua) in u.iter().enumerate() {
                for (o, &vc) in kv[a * dh..(a + 1) * dh].iter_mut().zip(vj) {
                    *o += ua * vc;
                }
            }
        }
    }

    fn forward<F: Elem>(&self, q: &[F], k: &[F], v: &[F], dims: Dims) -> Vec<F> {
        let Dims { lq, l, d } = dims;
        let dh = self.dh(d);
        let s = F::from(1.0 / (dh as f64).sqrt()).unwrap_or(F::one());
        let eps2 = self.eps2();
        let mut out = vec![F::zero(); q.len()];
        if out.is_empty() || l == 0 {
            return out;
        }
        out.par_chunks_mut(lq * d).enumerate().for_each(|(b, ob)| {
            let (qb, kb, vb) = (
                &q[b * lq * d..(b + 1) * lq * d],
                &k[b * l * d..(b + 1) * l * d],
                &v[b * l * d..(b + 1) * l * d],
            );
            let mut kn = vec![F::zero(); l * dh];
            let mut norms = vec![F::zero(); l];
            let mut kv = vec![F::zero(); dh * dh];
            let mut u = vec![F::zero(); dh];
            for h in 0..self.heads {
                self.kv(kb, vb, dims, h, &mut kn, &mut norms, &mut kv);
                for i in 0..lq {
                    let at = i * d + h * dh;
                    unit(&qb[at..at + dh], &mut u, eps2);
                    let o = &mut ob[at..at + dh];
                    for (a, &ua) in u.iter().enumerate() {
                        for (oc, &kvc) in o.iter_mut().zip(&kv[a * dh..(a + 1) * dh]) {
                            *oc += ua * kvc;
                        }
                    }
                    for oc in o.iter_mut() {
                        *oc *= s;
                    }
                }
            }
        });
        out
    }

    /// `(dq, dk, dv)` for the upstream gradient `g` `[B, Lq, d]`.
    fn backward<F: Elem>(
        &self,
        q: &[F],
        k: &[F],
        v: &[F],
        g: &[F],
        dims: Dims,
    ) -> (Vec<F>, Vec<F>, Vec<F>) {
        let Dims { lq, l, d } = dims;
        let dh = self.dh(d);
        let s = F::from(1.0 / (dh as f64).sqrt()).unwrap_or(F::one());
        let eps2 = self.eps2();
        let mut dq = vec![F::zero(); q.len()];
        let mut dk = vec![F::zero(); k.len()];
        let mut dv = vec![F::zero(); v.len()];
        if dq.is_empty() || dk.is_empty() {
            return (dq, dk, dv);
        }
        dq.par_chunks_mut(lq * d)
            .zip(dk.par_chunks_mut(l * d).zip(dv.par_chunks_mut(l * d)))
            .enumerate()
            .for_each(|(b, (dqb, (dkb, dvb)))| {
                let (qb, kb, vb, gb) = (
                    &q[b * lq * d..(b + 1) * lq * d],
                    &k[b * l * d..(b + 1) * l * d],
                    &v[b * l * d..(b + 1) * l * d],
                    &g[b * lq * d..(b + 1) * lq * d],
                );
                let mut kn = vec![F::zero(); l * dh];
                let mut norms = vec![F::zero(); l];
                let mut kv = vec![F::zero(); dh * dh];
                let mut kvt = vec![F::zero(); dh * dh];
                let mut dkv = vec![F::zero(); dh * dh];
                let mut dkvt = vec![F::zero(); dh * dh];
                let (mut u, mut du, mut dkn) = (
                    vec![F::zero(); dh],
                    vec![F::zero(); dh],
                    vec![F::zero(); dh],
                );
                let mut gs = vec![F::zero(); dh];
                for h in 0..self.heads {
                    self.kv(kb, vb, dims, h, &mut kn, &mut norms, &mut kv);
                    transpose(&kv, &mut kvt, dh);
                    dkv.iter_mut().for_each(|x| *x = F::zero());
                    for i in 0..lq {
                        let at = i * d + h * dh;
                        let n = unit(&qb[at..at + dh], &mut u, eps2);
                        for (o, &gc) in gs.iter_mut().zip(&gb[at..at + dh]) {
                            *o = gc * s;
                        }
                        // dQn = KV · (s G[i]); dKV += Qn[i] ⊗ (s G[i]).
                        mat_vec_t(&kvt, &gs, &mut du);
                        for (a, &ua) in u.iter().enumerate() {
                            for (o, &gc) in dkv[a * dh..(a + 1) * dh].iter_mut().zip(&gs) {
                                *o += ua * gc;
                            }
                        }
                        unit_backward(&qb[at..at + dh], &u, n, &du, &mut dqb[at..at + dh]);
                    }
                    transpose(&dkv, &mut dkvt, dh);
                    for j in 0..l {
                        let at = j * d + h * dh;
                        let kj = &kn[j * dh..(j + 1) * dh];
                        // dKn[j] = dKV · V[j]; dV[j] += dKVᵀ · Kn[j].
                        mat_vec_t(&dkvt, &vb[at..at + dh], &mut dkn);
                        let dvj = &mut dvb[at..at + dh];
                        for (a, &ka) in kj.iter().enumerate() {
                            for (o, &r) in dvj.iter_mut().zip(&dkv[a * dh..(a + 1) * dh]) {
                                *o += ka * r;
                            }
                        }
                        unit_backward(&kb[at..at + dh], kj, norms[j], &dkn, &mut dkb[at..at + dh]);
                    }
                }
            });
        (dq, dk, dv)
    }
}

fn dims_of(lq: &Layout, lk: &Layout, lv: &Layout, heads: usize) -> Result<Dims> {
    let (b, nq, d) = lq.shape().dims3()?;
    let (bk, l, dk) = lk.shape().dims3()?;
    if (bk, dk) != (b, d) || lv.shape().dims() != lk.shape().dims() {
        bail!(
            "{OP}: queries {:?}, keys {:?}, values {:?}",
            lq.shape(),
            lk.shape(),
            lv.shape()
        );
    }
    if heads == 0 || d % heads != 0 {
        bail!("{OP}: width {d} is not a multiple of {heads} heads");
    }
    Ok(Dims { lq: nq, l, d })
}

/// The forward kernel with the call's shapes.
struct Forward<'a> {
    op: &'a LinearAttentionOp,
    dims: Dims,
}

impl Kernel3 for Forward<'_> {
    fn apply<F: Elem>(&self, q: &[F], k: &[F], v: &[F]) -> Vec<F> {
        self.op.forward(q, k, v, self.dims)
    }
}

impl CustomOp3 for LinearAttentionOp {
    fn name(&self) -> &'static str {
        "mtrec-linear-attention"
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
        let dims = dims_of(l1, l2, l3, self.heads)?;
        cpu_fwd3(
            &Forward { op: self, dims },
            OP,
            (s1, l1),
            (s2, l2),
            (s3, l3),
        )
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dims = dims_of(q.layout(), k.layout(), v.layout(), self.heads)?;
        fn run<F: Elem>(
            op: &LinearAttentionOp,
            t: [&Tensor; 4],
            dims: Dims,
        ) -> Result<(Tensor, Tensor, Tensor)> {
            let [q, k, v, g] = t;
            let (dq, dk, dv) = with_cpu_slice::<F, _>(q, OP, |qs| {
                with_cpu_slice::<F, _>(k, OP, |ks| {
                    with_cpu_slice::<F, _>(v, OP, |vs| {
                        with_cpu_slice::<F, _>(g, OP, |gs| Ok(op.backward(qs, ks, vs, gs, dims)))
                    })
                })
            })?;
            Ok((
                Tensor::from_vec(dq, q.shape(), q.device())?,
                Tensor::from_vec(dk, k.shape(), k.device())?,
                Tensor::from_vec(dv, v.shape(), v.device())?,
            ))
        }
        let (dq, dk, dv) = match q.dtype() {
            DType::F32 => run::<f32>(self, [q, k, v, &grad], dims)?,
            DType::F64 => run::<f64>(self, [q, k, v, &grad], dims)?,
            dt => bail!("{OP}: no backward for {dt:?}"),
        };
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}
