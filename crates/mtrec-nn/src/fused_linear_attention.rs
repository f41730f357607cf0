//! LinRec's attention core as one candle custom op with a hand-written backward, for CPU
//! f32/f64 tensors: from the projected queries, keys and values (heads side by side in the last
//! dimension, before their bias) to the merged context, per sample and head
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
//! The kernels are compiled for each head width in [`HEAD_WIDTHS`] (a constant width keeps a
//! head's row in vector registers, and the `d_h × d_h` products accumulate four rows at a time
//! there) and for AVX2 where the CPU has it ([`crate::avx2_dispatch`]); other widths take the
//! composed path. Values agree with the composed form to float rounding (the sums run in a
//! different order than candle's matmuls); the tests compare values and gradients with it and
//! check the gradients by finite differences.

use candle_core::{
    bail, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType,
};
use rayon::prelude::*;

use crate::custom_op::{contiguous_slice, with_cpu_slices};
use crate::fastmath::Elem;

#[inline(always)]
fn elu<F: Elem>(x: F) -> F {
    let neg = x.exp_v() - F::one();
    if x.is_sign_positive() {
        x
    } else {
        neg
    }
}

/// The head widths the fused kernels are compiled for; other widths take the composed path.
pub(crate) const HEAD_WIDTHS: [usize; 5] = [4, 8, 16, 32, 64];

/// `u = elu(x) / sqrt(Σ elu(x)² + eps²)` of one head slice (the first `DH` values of `x`);
/// returns the norm. The ELU loop has no reduction in it, so it vectorises.
#[inline(always)]
fn unit<F: Elem, const DH: usize>(x: &[F], u: &mut [F], eps2: F) -> F {
    let (x, u) = (&x[..DH], &mut u[..DH]);
    for c in 0..DH {
        u[c] = elu(x[c]);
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
    dot(v, v)
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

/// From `du` (the gradient at `u`) to the gradient at `x`, given `u`, `n` and `x` (`DH` values
/// each). The ELU's slope at `x ≤ 0` is `exp(x) = e + 1` with `e = u·n`, so no exponential is
/// recomputed.
#[inline(always)]
fn unit_backward<F: Elem, const DH: usize>(x: &[F], u: &[F], n: F, du: &[F], dx: &mut [F]) {
    let (x, u, du, dx) = (&x[..DH], &u[..DH], &du[..DH], &mut dx[..DH]);
    let ud = dot(u, du);
    let inv = F::one() / n;
    for c in 0..DH {
        let de = (du[c] - u[c] * ud) * inv;
        let neg = u[c] * n + F::one();
        dx[c] = de * if x[c] > F::zero() { F::one() } else { neg };
    }
}

/// `acc += s · row` over `DH` values.
#[inline(always)]
fn axpy<F: Elem, const DH: usize>(acc: &mut [F; DH], s: F, row: &[F]) {
    let row = &row[..DH];
    for c in 0..DH {
        acc[c] += s * row[c];
    }
}

/// `out[a][c] = Σ_j left[j][a] · right[j][c]` over `n` rows (`out` `DH × DH`): `left` rows of
/// `DH` values back to back, `right` rows at `right[j · stride + off..][..DH]`. Four rows of
/// `out` accumulate at a time in registers.
#[inline(always)]
fn outer_sum<F: Elem, const DH: usize>(
    left: &[F],
    right: &[F],
    (stride, off): (usize, usize),
    n: usize,
    out: &mut [F],
) {
    const R: usize = 4;
    for a0 in (0..DH).step_by(R) {
        let mut acc = [[F::zero(); DH]; R];
        for j in 0..n {
            let rr = &right[j * stride + off..][..DH];
            let ll = &left[j * DH + a0..][..R];
            for r in 0..R {
                for c in 0..DH {
                    acc[r][c] += ll[r] * rr[c];
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            out[(a0 + r) * DH..][..DH].copy_from_slice(row);
        }
    }
}

fn transpose<F: Elem, const DH: usize>(m: &[F], out: &mut [F]) {
    for a in 0..DH {
        for c in 0..DH {
            out[c * DH + a] = m[a * DH + c];
        }
    }
}

const OP: &str = "fused linear attention";

/// The op: `heads` heads of `d / heads` columns, `eps` inside the L2 norms. Its operands are the
/// projections before their bias, packed as one matmul gives them:
///
/// * self-attention: a [`CustomOp2`] on `QKV` `[B, L, 3d]` (Q | K | V side by side) and the
///   bias `[3d]`;
/// * a subset of query rows: a [`CustomOp3`] on `Q` `[B, Lq, d]`, `KV` `[B, L, 2d]` (K | V)
///   and the bias `[3d]`.
///
/// The op adds the bias as it reads each sample (the bias gradient is the column sums of the
/// projections' gradients, taken in the same pass), so the three projections cost one matmul,
/// no bias pass and one gradient buffer in candle's backward.
pub(crate) struct LinearAttentionOp {
    pub heads: usize,
    pub eps: f64,
}

/// Shapes of one call: samples, query rows and key rows per sample, width, heads.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    lq: usize,
    l: usize,
    d: usize,
    heads: usize,
}

impl Dims {
    fn dh(&self) -> usize {
        self.d / self.heads
    }
}

/// Where Q, K and V sit in the operands: the row strides of the query operand and of the
/// key/value operand, and the column offsets of K and V in the latter (Q starts at column 0).
#[derive(Clone, Copy)]
struct Packing {
    q_stride: usize,
    kv_stride: usize,
    k_off: usize,
    v_off: usize,
}

impl Packing {
    fn self_attention(d: usize) -> Self {
        Self {
            q_stride: 3 * d,
            kv_stride: 3 * d,
            k_off: d,
            v_off: 2 * d,
        }
    }

    fn queries(d: usize) -> Self {
        Self {
            q_stride: d,
            kv_stride: 2 * d,
            k_off: 0,
            v_off: d,
        }
    }
}

/// One sample's working memory, allocated once per rayon task: its biased projections
/// (`q` `[Lq, d]`, `k` and `v` `[L, d]`), their gradients, and per-head buffers (unit queries
/// and keys with their norms, `KV`, `dKV` and their transposes).
struct Scratch<F> {
    q: Vec<F>,
    k: Vec<F>,
    v: Vec<F>,
    dq: Vec<F>,
    dk: Vec<F>,
    dv: Vec<F>,
    qn: Vec<F>,
    kn: Vec<F>,
    norms: Vec<F>,
    kv: Vec<F>,
    kvt: Vec<F>,
    dkv: Vec<F>,
    dkvt: Vec<F>,
}

impl<F: Elem> Scratch<F> {
    fn new(dims: Dims) -> Self {
        let Dims { lq, l, d, .. } = dims;
        let dh = dims.dh();
        let z = |n: usize| vec![F::zero(); n];
        Self {
            q: z(lq * d),
            k: z(l * d),
            v: z(l * d),
            dq: z(lq * d),
            dk: z(l * d),
            dv: z(l * d),
            qn: z(lq * dh),
            kn: z(l * dh),
            norms: z(l),
            kv: z(dh * dh),
            kvt: z(dh * dh),
            dkv: z(dh * dh),
            dkvt: z(dh * dh),
        }
    }

    /// Copies one sample's Q rows (from `qs`) and K, V rows (from `kvs`) with their bias.
    fn unpack(&mut self, qs: &[F], kvs: &[F], bias: &[F], p: Packing, d: usize) {
        let (bq, bk, bv) = (&bias[..d], &bias[d..2 * d], &bias[2 * d..3 * d]);
        for (i, row) in self.q.chunks_exact_mut(d).enumerate() {
            add_row(&qs[i * p.q_stride..][..d], bq, row);
        }
        let rows = self.k.chunks_exact_mut(d).zip(self.v.chunks_exact_mut(d));
        for (j, (kr, vr)) in rows.enumerate() {
            let at = j * p.kv_stride;
            add_row(&kvs[at + p.k_off..][..d], bk, kr);
            add_row(&kvs[at + p.v_off..][..d], bv, vr);
        }
    }

    /// Adds this sample's column sums of `dq`, `dk`, `dv` (the bias gradient) to `cols` `[3d]`.
    fn bias_grad(&self, d: usize, cols: &mut [f64]) {
        for (grads, part) in [&self.dq, &self.dk, &self.dv]
            .into_iter()
            .zip(cols.chunks_exact_mut(d))
        {
            for row in grads.chunks_exact(d) {
                for (c, &v) in part.iter_mut().zip(row) {
                    *c += <F as WithDType>::to_f64(v);
                }
            }
        }
    }
}

#[inline(always)]
fn add_row<F: Elem>(x: &[F], b: &[F], out: &mut [F]) {
    for ((o, &xv), &bv) in out.iter_mut().zip(x).zip(b) {
        *o = xv + bv;
    }
}

/// Unit keys (`kn` `[L, DH]`, `norms` `[L]`) and `KV = Σ_j Kn[j] ⊗ V[j]` (`kv`) of head `h`.
#[inline(always)]
fn head_kv<F: Elem, const DH: usize>(dims: Dims, h: usize, eps2: F, sc: &mut Scratch<F>) {
    let (l, d) = (dims.l, dims.d);
    for j in 0..l {
        let at = j * d + h * DH;
        sc.norms[j] = unit::<F, DH>(&sc.k[at..], &mut sc.kn[j * DH..], eps2);
    }
    outer_sum::<F, DH>(&sc.kn, &sc.v, (d, h * DH), l, &mut sc.kv);
}

/// `1 / sqrt(dh)`.
fn scale<F: Elem>(dh: usize) -> F {
    F::from(1.0 / (dh as f64).sqrt()).unwrap_or(F::one())
}

/// The context rows of one sample (`ob` `[Lq, d]`) from the scratch's `q`, `k`, `v`.
#[inline(always)]
fn forward_heads<F: Elem, const DH: usize>(dims: Dims, eps2: F, sc: &mut Scratch<F>, ob: &mut [F]) {
    let d = dims.d;
    let s: F = scale(DH);
    for h in 0..dims.heads {
        head_kv::<F, DH>(dims, h, eps2, sc);
        let mut u = [F::zero(); DH];
        for i in 0..dims.lq {
            let at = i * d + h * DH;
            unit::<F, DH>(&sc.q[at..], &mut u, eps2);
            let mut acc = [F::zero(); DH];
            for (a, &ua) in u.iter().enumerate() {
                axpy(&mut acc, ua, &sc.kv[a * DH..]);
            }
            for (o, &x) in ob[at..at + DH].iter_mut().zip(&acc) {
                *o = x * s;
            }
        }
    }
}

/// The gradients of one sample's biased projections (into the scratch's `dq`, `dk`, `dv`) for
/// the upstream gradient `g` `[Lq, d]`.
#[inline(always)]
fn backward_heads<F: Elem, const DH: usize>(dims: Dims, eps2: F, sc: &mut Scratch<F>, g: &[F]) {
    let d = dims.d;
    let s: F = scale(DH);
    for h in 0..dims.heads {
        head_kv::<F, DH>(dims, h, eps2, sc);
        transpose::<F, DH>(&sc.kv, &mut sc.kvt);
        for i in 0..dims.lq {
            let at = i * d + h * DH;
            let n = unit::<F, DH>(&sc.q[at..], &mut sc.qn[i * DH..], eps2);
            // dQn = s · KV · G[i], as a sum of the rows of KVᵀ.
            let mut du = [F::zero(); DH];
            for (c, &gc) in g[at..at + DH].iter().enumerate() {
                axpy(&mut du, gc, &sc.kvt[c * DH..]);
            }
            for x in du.iter_mut() {
                *x *= s;
            }
            unit_backward::<F, DH>(&sc.q[at..], &sc.qn[i * DH..], n, &du, &mut sc.dq[at..]);
        }
        // dKV = s · Σ_i Qn[i] ⊗ G[i].
        outer_sum::<F, DH>(&sc.qn, g, (d, h * DH), dims.lq, &mut sc.dkv);
        for x in sc.dkv.iter_mut() {
            *x *= s;
        }
        transpose::<F, DH>(&sc.dkv, &mut sc.dkvt);
        for j in 0..dims.l {
            let at = j * d + h * DH;
            let (kj, vj) = (&sc.kn[j * DH..(j + 1) * DH], &sc.v[at..at + DH]);
            // dKn[j] = dKV · V[j] (rows of dKVᵀ); dV[j] = dKVᵀ · Kn[j] (rows of dKV).
            let (mut dkn, mut dvj) = ([F::zero(); DH], [F::zero(); DH]);
            for c in 0..DH {
                axpy(&mut dkn, vj[c], &sc.dkvt[c * DH..]);
                axpy(&mut dvj, kj[c], &sc.dkv[c * DH..]);
            }
            sc.dv[at..at + DH].copy_from_slice(&dvj);
            unit_backward::<F, DH>(&sc.k[at..], kj, sc.norms[j], &dkn, &mut sc.dk[at..]);
        }
    }
}

/// Runs `$f::<F, DH>` for the call's head width (one of [`HEAD_WIDTHS`], checked when the
/// op's shapes are read).
macro_rules! by_head_width {
    ($dh:expr, $f:ident::<$F:ty>($($arg:expr),*)) => {
        match $dh {
            4 => $f::<$F, 4>($($arg),*),
            8 => $f::<$F, 8>($($arg),*),
            16 => $f::<$F, 16>($($arg),*),
            32 => $f::<$F, 32>($($arg),*),
            64 => $f::<$F, 64>($($arg),*),
            _ => {}
        }
    };
}

#[inline(always)]
fn forward_sample_impl<F: Elem>(dims: Dims, eps2: F, sc: &mut Scratch<F>, ob: &mut [F]) {
    by_head_width!(dims.dh(), forward_heads::<F>(dims, eps2, sc, ob));
}

#[inline(always)]
fn backward_sample_impl<F: Elem>(dims: Dims, eps2: F, sc: &mut Scratch<F>, g: &[F]) {
    by_head_width!(dims.dh(), backward_heads::<F>(dims, eps2, sc, g));
}

crate::avx2_dispatch!(fn forward_sample, forward_sample_avx2 => forward_sample_impl
    <F: Elem>(dims: Dims, eps2: F, sc: &mut Scratch<F>, ob: &mut [F]));
crate::avx2_dispatch!(fn backward_sample, backward_sample_avx2 => backward_sample_impl
    <F: Elem>(dims: Dims, eps2: F, sc: &mut Scratch<F>, g: &[F]));

impl LinearAttentionOp {
    /// `eps²`, added inside the L2 norms.
    fn eps2<F: Elem>(&self) -> F {
        F::from(self.eps * self.eps).unwrap_or(F::zero())
    }

    /// The merged context `[B, Lq, d]`. `qs` holds the query rows (`B·Lq` rows of
    /// `p.q_stride`), `kvs` the key/value rows (`B·L` rows of `p.kv_stride`; the same slice as
    /// `qs` for self-attention).
    fn forward<F: Elem>(&self, qs: &[F], kvs: &[F], bias: &[F], p: Packing, dims: Dims) -> Vec<F> {
        let Dims { b, lq, l, d, .. } = dims;
        let mut out = vec![F::zero(); b * lq * d];
        if out.is_empty() || l == 0 {
            return out;
        }
        let eps2 = self.eps2();
        out.par_chunks_mut(lq * d).enumerate().for_each_init(
            || Scratch::new(dims),
            |sc, (i, ob)| {
                sc.unpack(
                    &qs[i * lq * p.q_stride..(i + 1) * lq * p.q_stride],
                    &kvs[i * l * p.kv_stride..(i + 1) * l * p.kv_stride],
                    bias,
                    p,
                    d,
                );
                forward_sample(dims, eps2, sc, ob);
            },
        );
        out
    }

    /// The gradients of the operands for the upstream gradient `g` `[B, Lq, d]`:
    /// `(dQKV, [], dbias)` for self-attention, `(dQ, dKV, dbias)` otherwise. The bias gradient
    /// sums per-sample column sums in f64, in sample order (independent of the thread count).
    #[allow(clippy::too_many_arguments)]
    fn backward<F: Elem>(
        &self,
        qs: &[F],
        kvs: &[F],
        bias: &[F],
        g: &[F],
        p: Packing,
        dims: Dims,
        self_attention: bool,
    ) -> (Vec<F>, Vec<F>, Vec<F>) {
        let Dims { b, lq, l, d, .. } = dims;
        let eps2 = self.eps2();
        let sample = |sc: &mut Scratch<F>, i: usize| {
            sc.unpack(
                &qs[i * lq * p.q_stride..(i + 1) * lq * p.q_stride],
                &kvs[i * l * p.kv_stride..(i + 1) * l * p.kv_stride],
                bias,
                p,
                d,
            );
            backward_sample(dims, eps2, sc, &g[i * lq * d..(i + 1) * lq * d]);
            let mut cols = vec![0.0f64; 3 * d];
            sc.bias_grad(d, &mut cols);
            cols
        };
        let empty = b == 0 || lq == 0 || l == 0;
        let (first, second, parts) = if self_attention {
            let mut dqkv = vec![F::zero(); b * l * 3 * d];
            let parts: Vec<Vec<f64>> = if empty {
                Vec::new()
            } else {
                dqkv.par_chunks_mut(l * 3 * d)
                    .enumerate()
                    .map_init(
                        || Scratch::new(dims),
                        |sc, (i, chunk)| {
                            let cols = sample(sc, i);
                            for (j, row) in chunk.chunks_exact_mut(3 * d).enumerate() {
                                let src = [&sc.dq, &sc.dk, &sc.dv];
                                for (part, grads) in row.chunks_exact_mut(d).zip(src) {
                                    part.copy_from_slice(&grads[j * d..(j + 1) * d]);
                                }
                            }
                            cols
                        },
                    )
                    .collect()
            };
            (dqkv, Vec::new(), parts)
        } else {
            let mut dq = vec![F::zero(); b * lq * d];
            let mut dkv = vec![F::zero(); b * l * 2 * d];
            let parts: Vec<Vec<f64>> = if empty {
                Vec::new()
            } else {
                dq.par_chunks_mut(lq * d)
                    .zip(dkv.par_chunks_mut(l * 2 * d))
                    .enumerate()
                    .map_init(
                        || Scratch::new(dims),
                        |sc, (i, (dqb, dkvb))| {
                            let cols = sample(sc, i);
                            dqb.copy_from_slice(&sc.dq);
                            for (j, row) in dkvb.chunks_exact_mut(2 * d).enumerate() {
                                row[..d].copy_from_slice(&sc.dk[j * d..(j + 1) * d]);
                                row[d..].copy_from_slice(&sc.dv[j * d..(j + 1) * d]);
                            }
                            cols
                        },
                    )
                    .collect()
            };
            (dq, dkv, parts)
        };
        let mut dbias = vec![0.0f64; 3 * d];
        for part in parts {
            for (t, v) in dbias.iter_mut().zip(part) {
                *t += v;
            }
        }
        let dbias = dbias.into_iter().map(<F as WithDType>::from_f64).collect();
        (first, second, dbias)
    }

    fn check_bias(&self, bias: &Layout, d: usize) -> Result<()> {
        if bias.shape().dims() != [3 * d] {
            bail!("{OP}: bias {:?} for width {d}", bias.shape());
        }
        if self.heads == 0 || d % self.heads != 0 {
            bail!("{OP}: width {d} is not a multiple of {} heads", self.heads);
        }
        if !HEAD_WIDTHS.contains(&(d / self.heads)) {
            bail!(
                "{OP}: head width {} is not one of {HEAD_WIDTHS:?}",
                d / self.heads
            );
        }
        Ok(())
    }

    /// Shapes of a self-attention call: `qkv` `[B, L, 3d]`, bias `[3d]`.
    fn self_dims(&self, qkv: &Layout, bias: &Layout) -> Result<Dims> {
        let (b, l, w) = qkv.shape().dims3()?;
        if w % 3 != 0 {
            bail!("{OP}: packed Q|K|V {:?} is not three wide", qkv.shape());
        }
        let d = w / 3;
        self.check_bias(bias, d)?;
        Ok(Dims {
            b,
            lq: l,
            l,
            d,
            heads: self.heads,
        })
    }

    /// Shapes of a query-subset call: `q` `[B, Lq, d]`, `kv` `[B, L, 2d]`, bias `[3d]`.
    fn query_dims(&self, q: &Layout, kv: &Layout, bias: &Layout) -> Result<Dims> {
        let (b, lq, d) = q.shape().dims3()?;
        let (bk, l, w) = kv.shape().dims3()?;
        if bk != b || w != 2 * d {
            bail!("{OP}: queries {:?}, packed K|V {:?}", q.shape(), kv.shape());
        }
        self.check_bias(bias, d)?;
        Ok(Dims {
            b,
            lq,
            l,
            d,
            heads: self.heads,
        })
    }
}

impl CustomOp2 for LinearAttentionOp {
    fn name(&self) -> &'static str {
        "mtrec-linear-attention-self"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = self.self_dims(l1, l2)?;
        let p = Packing::self_attention(dims.d);
        let out = match (s1, s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => {
                let a = contiguous_slice(a, l1, OP)?;
                CpuStorage::F32(self.forward(a, a, contiguous_slice(b, l2, OP)?, p, dims))
            }
            (CpuStorage::F64(a), CpuStorage::F64(b)) => {
                let a = contiguous_slice(a, l1, OP)?;
                CpuStorage::F64(self.forward(a, a, contiguous_slice(b, l2, OP)?, p, dims))
            }
            _ => bail!("{OP}: f32 or f64 operands of one type only"),
        };
        Ok((out, Shape::from((dims.b, dims.lq, dims.d))))
    }

    fn bwd(
        &self,
        qkv: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dims = self.self_dims(qkv.layout(), bias.layout())?;
        fn run<F: Elem>(
            op: &LinearAttentionOp,
            [qkv, bias, g]: [&Tensor; 3],
            dims: Dims,
        ) -> Result<(Tensor, Tensor)> {
            let p = Packing::self_attention(dims.d);
            let (dqkv, _, db) = with_cpu_slices::<F, _, 3>([qkv, bias, g], OP, |[qs, bs, gs]| {
                Ok(op.backward(qs, qs, bs, gs, p, dims, true))
            })?;
            Ok((
                Tensor::from_vec(dqkv, qkv.shape(), qkv.device())?,
                Tensor::from_vec(db, bias.shape(), bias.device())?,
            ))
        }
        let t = [qkv, bias, &grad];
        let (dqkv, db) = match qkv.dtype() {
            DType::F32 => run::<f32>(self, t, dims)?,
            DType::F64 => run::<f64>(self, t, dims)?,
            dt => bail!("{OP}: no backward for {dt:?}"),
        };
        Ok((Some(dqkv), Some(db)))
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
        let dims = self.query_dims(l1, l2, l3)?;
        let p = Packing::queries(dims.d);
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(a), CpuStorage::F32(b), CpuStorage::F32(c)) => {
                CpuStorage::F32(self.forward(
                    contiguous_slice(a, l1, OP)?,
                    contiguous_slice(b, l2, OP)?,
                    contiguous_slice(c, l3, OP)?,
                    p,
                    dims,
                ))
            }
            (CpuStorage::F64(a), CpuStorage::F64(b), CpuStorage::F64(c)) => {
                CpuStorage::F64(self.forward(
                    contiguous_slice(a, l1, OP)?,
                    contiguous_slice(b, l2, OP)?,
                    contiguous_slice(c, l3, OP)?,
                    p,
                    dims,
                ))
            }
            _ => bail!("{OP}: f32 or f64 operands of one type only"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        kv: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dims = self.query_dims(q.layout(), kv.layout(), bias.layout())?;
        fn run<F: Elem>(
            op: &LinearAttentionOp,
            [q, kv, bias, g]: [&Tensor; 4],
            dims: Dims,
        ) -> Result<(Tensor, Tensor, Tensor)> {
            let p = Packing::queries(dims.d);
            let (dq, dkv, db) =
                with_cpu_slices::<F, _, 4>([q, kv, bias, g], OP, |[qs, kvs, bs, gs]| {
                    Ok(op.backward(qs, kvs, bs, gs, p, dims, false))
                })?;
            Ok((
                Tensor::from_vec(dq, q.shape(), q.device())?,
                Tensor::from_vec(dkv, kv.shape(), kv.device())?,
                Tensor::from_vec(db, bias.shape(), bias.device())?,
            ))
        }
        let t = [q, kv, bias, &grad];
        let (dq, dkv, db) = match q.dtype() {
            DType::F32 => run::<f32>(self, t, dims)?,
            DType::F64 => run::<f64>(self, t, dims)?,
            dt => bail!("{OP}: no backward for {dt:?}"),
        };
        Ok((Some(dq), Some(dkv), Some(db)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rnd(k: usize, seed: &mut u64) -> Vec<f32> {
        (0..k)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                ((*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
            })
            .collect()
    }

    /// The AVX2 and the baseline builds of the per-sample kernels give the same bits (only the
    /// vector width differs), for every compiled head width.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_kernels_equal_the_baseline_bit_for_bit() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("skipped: this CPU has no AVX2");
            return;
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for dh in HEAD_WIDTHS {
            let dims = Dims {
                b: 1,
                lq: 5,
                l: 7,
                d: 2 * dh,
                heads: 2,
            };
            let (q, k, v) = (
                rnd(5 * 2 * dh, &mut seed),
                rnd(7 * 2 * dh, &mut seed),
                rnd(7 * 2 * dh, &mut seed),
            );
            let g = rnd(5 * 2 * dh, &mut seed);
            let run = |avx: bool| {
                let mut sc = Scratch::<f32>::new(dims);
                sc.q.copy_from_slice(&q);
                sc.k.copy_from_slice(&k);
                sc.v.copy_from_slice(&v);
                let mut out = vec![0f32; q.len()];
                // SAFETY: AVX2 is present (checked above).
                unsafe {
                    if avx {
                        forward_sample_avx2(dims, 1e-12, &mut sc, &mut out);
                        backward_sample_avx2(dims, 1e-12, &mut sc, &g);
                    } else {
                        forward_sample_impl(dims, 1e-12, &mut sc, &mut out);
                        backward_sample_impl(dims, 1e-12, &mut sc, &g);
                    }
                }
                [out, sc.dq, sc.dk, sc.dv]
            };
            let (avx, base) = (run(true), run(false));
            for (a, b) in avx.iter().zip(&base) {
                assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
                assert!(a.iter().any(|&x| x != 0.0), "head width {dh}");
            }
        }
    }
}
