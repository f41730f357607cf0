//! The TF-GRU / AUGRU recurrence over a whole batch of sequences as one candle op with its own
//! backward (CPU, f32 and f64): what [`crate::rnn::run_gru`] and [`crate::rnn::run_augru`] run on the
//! CPU.
//!
//! Why: composed from candle ops, a `T`-step recurrence slices its per-step inputs out of a
//! `[T, B, ·]` tensor, and candle's backward of every slice materialises a zero-padded gradient of
//! the sliced tensor and adds it up; with the per-step tensors, their gradient accumulators and
//! allocations, that bookkeeping was 40% of a DIEN training step (`cargo xtask bench --models
//! dien`). Here each sample is an independent recurrence over its **real** steps only (a masked
//! step outputs zero and carries the state, so it costs nothing), run in parallel over samples.
//!
//! Operands (the x-parts of both projections are one matmul outside the op, biases folded in):
//!
//! ```text
//! X [B, T, 3H]  = [x_t·W_gx + b_g  |  x_t·W_cx + b_c]
//! W [H, 3H]     = [W_gh | W_ch]          (the h-rows of the gates and candidate kernels)
//! A [B, T]      = 1 − a_t (AUGRU's attention; ones for the plain GRU)
//! keep [B, T]   (a field: the mask, not differentiated)
//!
//! real step:  [r ; u] = σ(X_g + h·W_gh);  c = tanh(X_c + (r ⊙ h)·W_ch);  u' = A ⊙ u
//!             h ← c + u' ⊙ (h − c);  out_t = h
//! masked:     out_t = 0, h unchanged
//! output [B, T + 1, H]: out_0 … out_{T−1}, then the final state.
//! ```
//!
//! The backward recomputes one sample's forward (its gates and states) and runs the reverse-time
//! pass for it; the weight gradient is summed per fixed chunk of samples and the chunks in order,
//! so results do not depend on the thread count. Gradients are checked against finite differences
//! and against the composed runner in `rnn.rs`'s tests.

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use num_traits::Float;
use rayon::prelude::*;

use crate::custom_op::{contiguous_slice, with_cpu_slices};

/// Samples per parallel task (fixed, so that the weight-gradient sum has a fixed order).
const CHUNK: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    steps: usize,
    hidden: usize,
}

/// The op: the mask and the sizes; operands `(X, W, A)`.
pub(crate) struct GruSequenceOp {
    keep: Vec<bool>,
    dims: Dims,
}

impl GruSequenceOp {
    /// `keep` is the `[B, T]` mask, row-major (non-zero = a real step).
    pub(crate) fn new(keep: Vec<bool>, batch: usize, steps: usize, hidden: usize) -> Result<Self> {
        if keep.len() != batch * steps {
            bail!("fused GRU: mask of {} for [{batch}, {steps}]", keep.len());
        }
        Ok(Self {
            keep,
            dims: Dims {
                batch,
                steps,
                hidden,
            },
        })
    }

    fn check(&self, x: usize, w: usize, a: usize) -> Result<()> {
        let Dims {
            batch,
            steps,
            hidden,
        } = self.dims;
        if x != batch * steps * 3 * hidden || w != hidden * 3 * hidden || a != batch * steps {
            bail!(
                "fused GRU: operands of {x}, {w}, {a} values for B = {batch}, T = {steps}, H = {hidden}"
            );
        }
        Ok(())
    }

    fn out_shape(&self) -> Shape {
        let Dims {
            batch,
            steps,
            hidden,
        } = self.dims;
        Shape::from((batch, steps + 1, hidden))
    }
}

fn sigmoid<F: Float>(x: F) -> F {
    F::one() / (F::one() + (-x).exp())
}

/// One sample's saved forward values per real step: the state before it, `g = [r ; u]` and `c`.
struct Trace<F> {
    h_prev: Vec<F>,
    g: Vec<F>,
    c: Vec<F>,
    steps: Vec<usize>,
}

impl<F: Float> Trace<F> {
    fn new() -> Self {
        Self {
            h_prev: Vec::new(),
            g: Vec::new(),
            c: Vec::new(),
            steps: Vec::new(),
        }
    }

    fn clear(&mut self) {
        self.h_prev.clear();
        self.g.clear();
        self.c.clear();
        self.steps.clear();
    }
}

/// The forward of one sample: writes `out` (`[T + 1, H]`) and, if given, the trace.
#[allow(clippy::too_many_arguments)]
fn row_forward<F: Float>(
    x: &[F],
    w: &[F],
    a: &[F],
    keep: &[bool],
    d: Dims,
    out: &mut [F],
    mut trace: Option<&mut Trace<F>>,
    scratch: &mut Vec<F>,
) {
    let h = d.hidden;
    let w3 = 3 * h;
    scratch.clear();
    scratch.resize(5 * h, F::zero());
    let (state, rest) = scratch.split_at_mut(h);
    let (gpre, rest) = rest.split_at_mut(2 * h);
    let (rh, cpre) = rest.split_at_mut(h);
    out.iter_mut().for_each(|v| *v = F::zero());
    for t in 0..d.steps {
        if !keep[t] {
            continue;
        }
        let xt = &x[t * w3..(t + 1) * w3];
        gpre.copy_from_slice(&xt[..2 * h]);
        for (k, &hk) in state.iter().enumerate() {
            let row = &w[k * w3..k * w3 + 2 * h];
            for (g, &wkj) in gpre.iter_mut().zip(row) {
                *g = *g + hk * wkj;
            }
        }
        for g in gpre.iter_mut() {
            *g = sigmoid(*g);
        }
        for k in 0..h {
            rh[k] = gpre[k] * state[k];
        }
        cpre.copy_from_slice(&xt[2 * h..]);
        for (k, &rk) in rh.iter().enumerate() {
            let row = &w[k * w3 + 2 * h..(k + 1) * w3];
            for (c, &wkj) in cpre.iter_mut().zip(row) {
                *c = *c + rk * wkj;
            }
        }
        if let Some(tr) = trace.as_deref_mut() {
            tr.h_prev.extend_from_slice(state);
            tr.g.extend_from_slice(gpre);
            tr.steps.push(t);
        }
        let at = a[t];
        let out_t = &mut out[t * h..(t + 1) * h];
        for k in 0..h {
            let c = cpre[k].tanh();
            cpre[k] = c;
            let u = at * gpre[h + k];
            let next = c + u * (state[k] - c);
            state[k] = next;
            out_t[k] = next;
        }
        if let Some(tr) = trace.as_deref_mut() {
            tr.c.extend_from_slice(cpre);
        }
    }
    out[d.steps * h..].copy_from_slice(state);
}

fn forward<F: Float + Send + Sync>(x: &[F], w: &[F], a: &[F], keep: &[bool], d: Dims) -> Vec<F> {
    let (t, h) = (d.steps, d.hidden);
    let mut out = vec![F::zero(); d.batch * (t + 1) * h];
    out.par_chunks_mut((t + 1) * h)
        .enumerate()
        .for_each_init(Vec::new, |scratch, (b, out_b)| {
            row_forward(
                &x[b * t * 3 * h..(b + 1) * t * 3 * h],
                w,
                &a[b * t..(b + 1) * t],
                &keep[b * t..(b + 1) * t],
                d,
                out_b,
                None,
                scratch,
            );
        });
    out
}

/// `(∂X, ∂W, ∂A)` given the output gradient `gout` `[B, T + 1, H]`.
fn backward<F: Float + Send + Sync>(
    x: &[F],
    w: &[F],
    a: &[F],
    keep: &[bool],
    gout: &[F],
    d: Dims,
) -> (Vec<F>, Vec<F>, Vec<F>) {
    let (t, h) = (d.steps, d.hidden);
    let w3 = 3 * h;
    let mut dx = vec![F::zero(); d.batch * t * w3];
    let mut da = vec![F::zero(); d.batch * t];
    // Wᵀ [3H, H]: the products with W's transpose become axpys over contiguous rows, which the
    // compiler vectorises (a float dot product, a reduction, it does not).
    let mut wt = vec![F::zero(); w3 * h];
    for k in 0..h {
        for j in 0..w3 {
            wt[j * h + k] = w[k * w3 + j];
        }
    }
    let partials: Vec<Vec<F>> = dx
        .par_chunks_mut(CHUNK * t * w3)
        .zip(da.par_chunks_mut(CHUNK * t))
        .enumerate()
        .map(|(chunk, (dx_c, da_c))| {
            let mut dw = vec![F::zero(); h * w3];
            let mut trace = Trace::new();
            let mut scratch = Vec::new();
            let mut out = vec![F::zero(); (t + 1) * h];
            let mut dh = vec![F::zero(); h];
            let mut dh_prev = vec![F::zero(); h];
            let mut drh = vec![F::zero(); h];
            let mut dgpre = vec![F::zero(); 2 * h];
            let mut dcpre = vec![F::zero(); h];
            let rows = dx_c.len() / (t * w3).max(1);
            for i in 0..rows {
                let b = chunk * CHUNK + i;
                let (xb, ab, kb) = (
                    &x[b * t * w3..(b + 1) * t * w3],
                    &a[b * t..(b + 1) * t],
                    &keep[b * t..(b + 1) * t],
                );
                trace.clear();
                row_forward(xb, w, ab, kb, d, &mut out, Some(&mut trace), &mut scratch);
                let gb = &gout[b * (t + 1) * h..(b + 1) * (t + 1) * h];
                dh.copy_from_slice(&gb[t * h..]);
                let dxb = &mut dx_c[i * t * w3..(i + 1) * t * w3];
                let dab = &mut da_c[i * t..(i + 1) * t];
                for (n, &s) in trace.steps.iter().enumerate().rev() {
                    let hp = &trace.h_prev[n * h..(n + 1) * h];
                    let g = &trace.g[n * 2 * h..(n + 1) * 2 * h];
                    let c = &trace.c[n * h..(n + 1) * h];
                    let at = ab[s];
                    let mut d_at = F::zero();
                    for k in 0..h {
                        dh[k] = dh[k] + gb[s * h + k];
                        let u = g[h + k];
                        let up = at * u;
                        let dc = dh[k] * (F::one() - up);
                        let dup = dh[k] * (hp[k] - c[k]);
                        dh_prev[k] = dh[k] * up;
                        d_at = d_at + dup * u;
                        let du = dup * at;
                        dgpre[h + k] = du * u * (F::one() - u);
                        dcpre[k] = dc * (F::one() - c[k] * c[k]);
                    }
                    dab[s] = d_at;
                    // Candidate: cpre = X_c + (r ⊙ h)·W_ch; ∂(r ⊙ h) = W_ch · ∂cpre.
                    drh.iter_mut().for_each(|v| *v = F::zero());
                    for (j, &dcj) in dcpre.iter().enumerate() {
                        let col = &wt[(2 * h + j) * h..(2 * h + j + 1) * h];
                        for (acc, &wkj) in drh.iter_mut().zip(col) {
                            *acc = *acc + dcj * wkj;
                        }
                    }
                    for k in 0..h {
                        let drh = drh[k];
                        let r = g[k];
                        let rh = r * hp[k];
                        let dwrow = &mut dw[k * w3 + 2 * h..(k + 1) * w3];
                        for (dwj, &dcj) in dwrow.iter_mut().zip(dcpre.iter()) {
                            *dwj = *dwj + rh * dcj;
                        }
                        dh_prev[k] = dh_prev[k] + drh * r;
                        dgpre[k] = drh * hp[k] * r * (F::one() - r);
                    }
                    // Gates: gpre = X_g + h·W_gh; ∂h += W_gh · ∂gpre.
                    for (j, &dgj) in dgpre.iter().enumerate() {
                        let col = &wt[j * h..(j + 1) * h];
                        for (acc, &wkj) in dh_prev.iter_mut().zip(col) {
                            *acc = *acc + dgj * wkj;
                        }
                    }
                    for k in 0..h {
                        let hk = hp[k];
                        let dwrow = &mut dw[k * w3..k * w3 + 2 * h];
                        for (dwj, &dgj) in dwrow.iter_mut().zip(dgpre.iter()) {
                            *dwj = *dwj + hk * dgj;
                        }
                    }
                    let dxs = &mut dxb[s * w3..(s + 1) * w3];
                    dxs[..2 * h].copy_from_slice(&dgpre);
                    dxs[2 * h..].copy_from_slice(&dcpre);
                    dh.copy_from_slice(&dh_prev);
                }
            }
            dw
        })
        .collect();
    let mut dw = vec![F::zero(); h * w3];
    for p in partials {
        for (acc, v) in dw.iter_mut().zip(p) {
            *acc = *acc + v;
        }
    }
    (dx, dw, da)
}

/// The op's name in errors.
const OP: &str = "fused GRU";

fn slice_of<'a, T>(data: &'a [T], layout: &Layout) -> Result<&'a [T]> {
    contiguous_slice(data, layout, OP)
}

impl GruSequenceOp {
    fn bwd_typed<F: Float + Send + Sync + candle_core::WithDType>(
        &self,
        x: &Tensor,
        w: &Tensor,
        a: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (dx, dw, da) = with_cpu_slices::<F, _, 4>([x, w, a, &grad], OP, |[x_, w_, a_, g_]| {
            self.check(x_.len(), w_.len(), a_.len())?;
            if g_.len() != self.out_shape().elem_count() {
                bail!("fused GRU: gradient of {} values", g_.len());
            }
            Ok(backward(x_, w_, a_, &self.keep, g_, self.dims))
        })?;
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(dw, w.shape(), w.device())?),
            Some(Tensor::from_vec(da, a.shape(), a.device())?),
        ))
    }
}

impl CustomOp3 for GruSequenceOp {
    fn name(&self) -> &'static str {
        "mtrec-tf-gru-sequence"
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
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(a)) => {
                let (x, w, a) = (slice_of(x, l1)?, slice_of(w, l2)?, slice_of(a, l3)?);
                self.check(x.len(), w.len(), a.len())?;
                CpuStorage::F32(forward(x, w, a, &self.keep, self.dims))
            }
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(a)) => {
                let (x, w, a) = (slice_of(x, l1)?, slice_of(w, l2)?, slice_of(a, l3)?);
                self.check(x.len(), w.len(), a.len())?;
                CpuStorage::F64(forward(x, w, a, &self.keep, self.dims))
            }
            _ => bail!("fused GRU: f32 or f64 operands of one dtype"),
        };
        Ok((out, self.out_shape()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        a: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        match x.dtype() {
            candle_core::DType::F32 => self.bwd_typed::<f32>(x, w, a, grad),
            candle_core::DType::F64 => self.bwd_typed::<f64>(x, w, a, grad),
            dt => bail!("fused GRU: no backward for {dt:?}"),
        }
    }
}
