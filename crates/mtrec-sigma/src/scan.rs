//! Mamba's selective scan (S6, Gu & Dao 2023, Alg. 2), the recurrence at the heart of SIGMA's two
//! Mamba passes:
//!
//! ```text
//! s_t = exp(δ_t ⊙ A) ⊙ s_{t−1} + (δ_t ⊙ x_t) ⊗ B_t        s: [B, d_inner, N], s_{−1} = 0
//! y_t = s_t · C_t                                           y: [B, L, d_inner]
//! ```
//!
//! (`D ⊙ x`, the gate `silu(z)` and the input-dependent `δ = softplus(..)` live in
//! [`crate::mamba`]; this module is only the recurrence.)
//!
//! [`selective_scan_gated`] adds the rest of mamba_ssm's `selective_scan_fn` (`delta_bias`,
//! `delta_softplus = True`, `D`, `z`): `(scan(softplus(δraw + bias), A, B, C, x) + D ⊙ x) ⊙ silu(z)`,
//! which is what [`crate::mamba::Mamba`] runs.
//!
//! Two implementations of each, with the same maths:
//!
//! * [`ScanImpl::Composed`]: built from differentiable candle ops, a loop over `L` like
//!   candle-examples' `mamba-minimal::selective_scan`. It materialises `exp(δA)` and `δ·x·B` as
//!   `[B, L, d_inner, N]` tensors and keeps one `[B, d_inner, N]` state per step for the backward
//!   pass: `O(B·L·d_inner·N)` memory.
//! * [`ScanImpl::Fused`] (default): a candle [`CustomOp3`] with a CPU kernel (module `kernel`)
//!   and its own backward. The forward keeps one `[d_inner, N]` state per batch row and stores
//!   nothing; the backward recomputes one row's states at a time and runs a reverse-time pass, so
//!   besides the `O(B·L·(d_inner + N))` inputs and gradients its working memory is
//!   `O(threads · L · d_inner · N)` (about 0.8 MB per thread at the official sizes) instead of
//!   `O(B · L · d_inner · N)`. Rows run in parallel with rayon. The operands are packed
//!   (`δ ‖ x`, `B ‖ C`, ...) to fit candle's three-operand custom ops; `cat`'s backward splits the
//!   gradients again.
//!
//! The fused ops have a CPU path only (f32 and f64; f32 uses a polynomial `exp` with relative
//! error below 3e-7). On other devices or dtypes the composed scan runs instead (the `cuda`
//! feature therefore trains with the composed scan; not testable here, no CUDA toolkit).

use candle_core::{bail, CpuStorage, CustomOp3, DType, IndexOp, Layout, Result, Shape, Tensor};

use crate::kernel::{self, Dims, Real};

/// Which implementation of the selective scan to run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ScanImpl {
    /// The fused CPU [`CustomOp3`] with a hand-written backward (falls back to `Composed` on
    /// non-CPU devices and for dtypes other than f32/f64).
    #[default]
    Fused,
    /// The loop of differentiable candle ops (reference; `O(B·L·d_inner·N)` memory).
    Composed,
}

/// Checks `delta, x: [B, L, Di]`, `a: [Di, N]`, `b, c: [B, L, N]`.
fn dims(delta: &Tensor, a: &Tensor, b: &Tensor, c: &Tensor, x: &Tensor) -> Result<Dims> {
    let (batch, len, d_inner) = delta.dims3()?;
    let (ad, d_state) = a.dims2()?;
    if x.dims() != delta.dims() {
        bail!(
            "selective scan: x {:?} and delta {:?} differ",
            x.dims(),
            delta.dims()
        );
    }
    if ad != d_inner {
        bail!("selective scan: A has {ad} rows, delta has {d_inner} channels");
    }
    for (name, t) in [("B", b), ("C", c)] {
        if t.dims() != [batch, len, d_state] {
            bail!(
                "selective scan: {name} is {:?}, expected [{batch}, {len}, {d_state}]",
                t.dims()
            );
        }
    }
    Ok(Dims {
        batch,
        len,
        d_inner,
        d_state,
    })
}

/// The selective scan `y[B, L, Di]` of `delta, x: [B, L, Di]`, `a: [Di, N]`, `b, c: [B, L, N]`
/// (see the module docs). Differentiable with respect to all five inputs with either
/// implementation.
pub fn selective_scan(
    delta: &Tensor,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    x: &Tensor,
    imp: ScanImpl,
) -> Result<Tensor> {
    match imp {
        ScanImpl::Fused if fused_ok(delta) => selective_scan_fused(delta, a, b, c, x),
        _ => selective_scan_composed(delta, a, b, c, x),
    }
}

/// The op-composed scan (sequential over `L`, every step a candle op; see the module docs).
pub fn selective_scan_composed(
    delta: &Tensor,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    x: &Tensor,
) -> Result<Tensor> {
    let Dims {
        batch,
        len,
        d_inner,
        d_state,
    } = dims(delta, a, b, c, x)?;
    // [B, L, Di, N]: exp(δ A) and δ x B.
    let decay = delta
        .unsqueeze(3)?
        .broadcast_mul(&a.reshape((1, 1, d_inner, d_state))?)?
        .exp()?;
    let input = (delta * x)?.unsqueeze(3)?.broadcast_mul(&b.unsqueeze(2)?)?;
    let mut s = Tensor::zeros((batch, d_inner, d_state), delta.dtype(), delta.device())?;
    let mut ys = Vec::with_capacity(len);
    for t in 0..len {
        s = ((decay.i((.., t))? * &s)? + input.i((.., t))?)?;
        // y_t[b, d] = Σ_n s[b, d, n] C_t[b, n]
        let ct = c.i((.., t))?.contiguous()?.unsqueeze(2)?; // [B, N, 1]
        ys.push(s.matmul(&ct)?.squeeze(2)?);
    }
    if ys.is_empty() {
        return Tensor::zeros((batch, 0, d_inner), delta.dtype(), delta.device());
    }
    Tensor::stack(&ys, 1)
}

/// The fused scan as a [`CustomOp3`] on `(δ‖x, A, B‖C)` (CPU, f32/f64).
pub fn selective_scan_fused(
    delta: &Tensor,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    x: &Tensor,
) -> Result<Tensor> {
    let dims = dims(delta, a, b, c, x)?;
    // Packing keeps the op at three operands; `cat` copies into fresh contiguous buffers and its
    // backward splits the gradients again.
    let u = Tensor::cat(&[delta, x], 2)?;
    let bc = Tensor::cat(&[b, c], 2)?;
    let a = a.contiguous()?;
    u.apply_op3(&a, &bc, ScanOp { dims })
}

/// Whether the fused kernels can run on `t`'s device and dtype.
pub(crate) use mtrec_nn::custom_op::fused_ok;

/// `(scan(softplus(δraw + bias), A, B, C, x) + D ⊙ x) ⊙ silu(z)`: mamba_ssm's
/// `selective_scan_fn(x, δraw, A, B, C, D, z, delta_bias, delta_softplus = True)` on our
/// `[B, L, ·]` layout. `delta_raw, x, z: [B, L, Di]`, `delta_bias, d: [Di]`, `a: [Di, N]`,
/// `b, c: [B, L, N]`. Differentiable with respect to all eight inputs.
#[allow(clippy::too_many_arguments)]
pub fn selective_scan_gated(
    delta_raw: &Tensor,
    delta_bias: &Tensor,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    d: &Tensor,
    x: &Tensor,
    z: &Tensor,
    imp: ScanImpl,
) -> Result<Tensor> {
    let dm = dims(delta_raw, a, b, c, x)?;
    if z.dims() != x.dims() {
        bail!(
            "selective scan: z {:?} and x {:?} differ",
            z.dims(),
            x.dims()
        );
    }
    for (name, t) in [("delta_bias", delta_bias), ("D", d)] {
        if t.dims() != [dm.d_inner] {
            bail!(
                "selective scan: {name} is {:?}, expected [{}]",
                t.dims(),
                dm.d_inner
            );
        }
    }
    match imp {
        ScanImpl::Fused if fused_ok(delta_raw) => {
            let u = Tensor::cat(&[delta_raw, x, z], 2)?;
            let p = Tensor::cat(&[a, &d.unsqueeze(1)?, &delta_bias.unsqueeze(1)?], 1)?;
            let bc = Tensor::cat(&[b, c], 2)?;
            u.apply_op3(&p, &bc, GatedScanOp { dims: dm })
        }
        _ => {
            let delta = mtrec_nn::softplus(&delta_raw.broadcast_add(delta_bias)?)?;
            let y = selective_scan_composed(&delta, a, b, c, x)?;
            (y + x.broadcast_mul(d)?)? * z.silu()?
        }
    }
}

/// Borrows the contiguous CPU data of each of `ts` as `&[T]` and runs `f` on them.
pub(crate) fn with_cpu_slices<T: Real, R, const N: usize>(
    ts: [&Tensor; N],
    f: impl FnOnce([&[T]; N]) -> Result<R>,
) -> Result<R> {
    mtrec_nn::custom_op::with_cpu_slices(ts, "selective scan", f)
}

/// The contiguous part of `data` that `layout` describes.
pub(crate) fn contiguous<'a, T>(data: &'a [T], layout: &Layout) -> Result<&'a [T]> {
    mtrec_nn::custom_op::contiguous_slice(data, layout, "selective scan")
}

/// Widths of a fused op's packed operands: `u = [B, L, u_w·Di]`, `p = [Di, p_w]`,
/// `bc = [B, L, 2N]`.
trait Packed {
    fn dims(&self) -> Dims;
    fn u_width(&self) -> usize;
    fn p_width(&self) -> usize;

    fn check(&self, u: usize, p: usize, bc: usize) -> Result<()> {
        let Dims {
            batch,
            len,
            d_inner,
            d_state,
        } = self.dims();
        if u != batch * len * self.u_width() * d_inner
            || p != d_inner * self.p_width()
            || bc != batch * len * 2 * d_state
        {
            bail!(
                "selective scan: operand sizes do not match {:?}",
                self.dims()
            );
        }
        Ok(())
    }

    fn out_shape(&self) -> Shape {
        let d = self.dims();
        Shape::from((d.batch, d.len, d.d_inner))
    }
}

/// A fused op's forward kernel: `(u, p, bc, dims) → out`.
type FwdKernel<T> = fn(&[T], &[T], &[T], Dims) -> Vec<T>;
/// A fused op's backward kernel: `(u, p, bc, grad, dims) → (∂u, ∂p, ∂bc)`.
type BwdKernel<T> = fn(&[T], &[T], &[T], &[T], Dims) -> (Vec<T>, Vec<T>, Vec<T>);

/// Gradients of a fused op from its kernel, as tensors shaped like the operands.
fn fused_bwd<O: Packed, T: Real>(
    op: &O,
    u: &Tensor,
    p: &Tensor,
    bc: &Tensor,
    grad: &Tensor,
    kernel: BwdKernel<T>,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let grad = grad.contiguous()?;
    let (gu, gp, gbc) = with_cpu_slices::<T, _, 4>([u, p, bc, &grad], |[u_, p_, bc_, g_]| {
        op.check(u_.len(), p_.len(), bc_.len())?;
        if g_.len() != op.out_shape().elem_count() {
            bail!(
                "selective scan: gradient size does not match {:?}",
                op.dims()
            );
        }
        Ok(kernel(u_, p_, bc_, g_, op.dims()))
    })?;
    Ok((
        Some(Tensor::from_vec(gu, u.shape(), u.device())?),
        Some(Tensor::from_vec(gp, p.shape(), p.device())?),
        Some(Tensor::from_vec(gbc, bc.shape(), bc.device())?),
    ))
}

/// Forward of a fused op on CPU storages (f32 or f64, one dtype).
#[allow(clippy::too_many_arguments)]
fn fused_fwd<O: Packed>(
    op: &O,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
    s3: &CpuStorage,
    l3: &Layout,
    f32_kernel: FwdKernel<f32>,
    f64_kernel: FwdKernel<f64>,
) -> Result<(CpuStorage, Shape)> {
    let out = match (s1, s2, s3) {
        (CpuStorage::F32(u), CpuStorage::F32(p), CpuStorage::F32(bc)) => {
            let (u, p, bc) = (contiguous(u, l1)?, contiguous(p, l2)?, contiguous(bc, l3)?);
            op.check(u.len(), p.len(), bc.len())?;
            CpuStorage::F32(f32_kernel(u, p, bc, op.dims()))
        }
        (CpuStorage::F64(u), CpuStorage::F64(p), CpuStorage::F64(bc)) => {
            let (u, p, bc) = (contiguous(u, l1)?, contiguous(p, l2)?, contiguous(bc, l3)?);
            op.check(u.len(), p.len(), bc.len())?;
            CpuStorage::F64(f64_kernel(u, p, bc, op.dims()))
        }
        _ => bail!("selective scan: the fused op supports f32 and f64 operands of one dtype"),
    };
    Ok((out, op.out_shape()))
}

/// The plain scan on `(δ ‖ x, A, B ‖ C)`.
struct ScanOp {
    dims: Dims,
}

impl Packed for ScanOp {
    fn dims(&self) -> Dims {
        self.dims
    }
    fn u_width(&self) -> usize {
        2
    }
    fn p_width(&self) -> usize {
        self.dims.d_state
    }
}

impl CustomOp3 for ScanOp {
    fn name(&self) -> &'static str {
        "mtrec-selective-scan"
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
        fused_fwd(
            self,
            s1,
            l1,
            s2,
            l2,
            s3,
            l3,
            kernel::scan_forward::<f32>,
            kernel::scan_forward::<f64>,
        )
    }

    fn bwd(
        &self,
        u: &Tensor,
        a: &Tensor,
        bc: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        match u.dtype() {
            DType::F32 => fused_bwd(self, u, a, bc, grad, kernel::scan_backward::<f32>),
            DType::F64 => fused_bwd(self, u, a, bc, grad, kernel::scan_backward::<f64>),
            dt => bail!("selective scan: no fused backward for {dt:?}"),
        }
    }
}

/// The gated scan on `(δraw ‖ x ‖ z, A ‖ D ‖ δ bias, B ‖ C)`.
struct GatedScanOp {
    dims: Dims,
}

impl Packed for GatedScanOp {
    fn dims(&self) -> Dims {
        self.dims
    }
    fn u_width(&self) -> usize {
        3
    }
    fn p_width(&self) -> usize {
        self.dims.d_state + 2
    }
}

impl CustomOp3 for GatedScanOp {
    fn name(&self) -> &'static str {
        "mtrec-selective-scan-gated"
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
        fused_fwd(
            self,
            s1,
            l1,
            s2,
            l2,
            s3,
            l3,
            kernel::gated_forward::<f32>,
            kernel::gated_forward::<f64>,
        )
    }

    fn bwd(
        &self,
        u: &Tensor,
        p: &Tensor,
        bc: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        match u.dtype() {
            DType::F32 => fused_bwd(self, u, p, bc, grad, kernel::gated_backward::<f32>),
            DType::F64 => fused_bwd(self, u, p, bc, grad, kernel::gated_backward::<f64>),
            dt => bail!("selective scan: no fused backward for {dt:?}"),
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{rand_tensor, Lcg};
    use candle_core::{Device, Var};
    use mtrec_nn::testing::{check_gradients, GradCheckConfig};

    /// Random scan operands: δ in (0.05, 1), A negative, the rest standard-ish.
    fn operands(
        rng: &mut Lcg,
        (b, l, di, n): (usize, usize, usize, usize),
        dtype: DType,
    ) -> [Tensor; 5] {
        let dev = Device::Cpu;
        let delta = rand_tensor(rng, (b, l, di), 0.05, 1.0, dtype, &dev);
        let a = rand_tensor(rng, (di, n), -2.0, -0.1, dtype, &dev);
        let bm = rand_tensor(rng, (b, l, n), -1.0, 1.0, dtype, &dev);
        let cm = rand_tensor(rng, (b, l, n), -1.0, 1.0, dtype, &dev);
        let x = rand_tensor(rng, (b, l, di), -1.0, 1.0, dtype, &dev);
        [delta, a, bm, cm, x]
    }

    /// The recurrence written out with scalars (f64).
    fn naive(ops: &[Tensor; 5]) -> Vec<f64> {
        let v = |t: &Tensor| -> Vec<f64> {
            t.to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        let (b, l, di) = ops[0].dims3().unwrap();
        let n = ops[1].dim(1).unwrap();
        let (delta, a, bm, cm, x) = (v(&ops[0]), v(&ops[1]), v(&ops[2]), v(&ops[3]), v(&ops[4]));
        let mut y = vec![0.0; b * l * di];
        for bi in 0..b {
            for d in 0..di {
                let mut s = vec![0.0; n];
                for t in 0..l {
                    let dl = delta[(bi * l + t) * di + d];
                    let xv = x[(bi * l + t) * di + d];
                    let mut acc = 0.0;
                    for k in 0..n {
                        s[k] =
                            (dl * a[d * n + k]).exp() * s[k] + dl * xv * bm[(bi * l + t) * n + k];
                        acc += s[k] * cm[(bi * l + t) * n + k];
                    }
                    y[(bi * l + t) * di + d] = acc;
                }
            }
        }
        y
    }

    fn flat(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    fn run(ops: &[Tensor; 5], imp: ScanImpl) -> Tensor {
        selective_scan(&ops[0], &ops[1], &ops[2], &ops[3], &ops[4], imp).unwrap()
    }

    #[test]
    fn both_scans_match_the_scalar_recurrence() {
        let mut rng = Lcg::new(1);
        for shape in [(3, 7, 5, 4), (1, 1, 1, 1), (2, 9, 3, 6)] {
            let ops = operands(&mut rng, shape, DType::F64);
            let want = naive(&ops);
            for imp in [ScanImpl::Fused, ScanImpl::Composed] {
                let y = run(&ops, imp);
                assert_eq!(y.dims(), &[shape.0, shape.1, shape.2]);
                let err = max_abs_diff(&flat(&y), &want);
                assert!(err < 1e-12, "{imp:?} {shape:?}: {err}");
            }
        }
    }

    #[test]
    fn fused_matches_composed_in_f32() {
        let mut rng = Lcg::new(2);
        let ops = operands(&mut rng, (4, 11, 6, 5), DType::F32);
        let f = flat(&run(&ops, ScanImpl::Fused));
        let c = flat(&run(&ops, ScanImpl::Composed));
        assert!(max_abs_diff(&f, &c) < 1e-5);
    }

    /// Loss `Σ w ⊙ y` with fixed random weights, so every output's gradient differs.
    fn loss_fn(imp: ScanImpl, w: Tensor) -> impl Fn(&[Var]) -> candle_core::Result<Tensor> {
        move |v: &[Var]| {
            let y = selective_scan(
                v[0].as_tensor(),
                v[1].as_tensor(),
                v[2].as_tensor(),
                v[3].as_tensor(),
                v[4].as_tensor(),
                imp,
            )?;
            (y * &w)?.sum_all()
        }
    }

    fn vars(ops: &[Tensor; 5]) -> Vec<Var> {
        ops.iter().map(|t| Var::from_tensor(t).unwrap()).collect()
    }

    #[test]
    fn both_scans_pass_finite_differences() {
        let mut rng = Lcg::new(3);
        let ops = operands(&mut rng, (2, 6, 3, 4), DType::F64);
        let w = rand_tensor(&mut rng, (2, 6, 3), -1.0, 1.0, DType::F64, &Device::Cpu);
        for imp in [ScanImpl::Fused, ScanImpl::Composed] {
            let v = vars(&ops);
            let report =
                check_gradients(&v, loss_fn(imp, w.clone()), GradCheckConfig::default()).unwrap();
            assert_eq!(report.checked, 2 * 6 * 3 * 2 + 3 * 4 + 2 * 2 * 6 * 4);
            report.assert_ok();
        }
    }

    #[test]
    fn fused_gradients_equal_composed_gradients() {
        let mut rng = Lcg::new(4);
        for (shape, dtype, tol) in [
            ((3, 8, 5, 4), DType::F64, 1e-12),
            ((4, 13, 7, 3), DType::F32, 2e-5),
            ((1, 1, 2, 1), DType::F64, 1e-12),
        ] {
            let ops = operands(&mut rng, shape, dtype);
            let w = rand_tensor(
                &mut rng,
                (shape.0, shape.1, shape.2),
                -1.0,
                1.0,
                dtype,
                &Device::Cpu,
            );
            let grads: Vec<Vec<Vec<f64>>> = [ScanImpl::Fused, ScanImpl::Composed]
                .into_iter()
                .map(|imp| {
                    let v = vars(&ops);
                    let g = loss_fn(imp, w.clone())(&v).unwrap().backward().unwrap();
                    v.iter()
                        .map(|var| flat(g.get(var.as_tensor()).unwrap()))
                        .collect()
                })
                .collect();
            for (i, (f, c)) in grads[0].iter().zip(&grads[1]).enumerate() {
                let scale = c.iter().fold(1.0f64, |m, x| m.max(x.abs()));
                let err = max_abs_diff(f, c) / scale;
                assert!(err < tol, "{shape:?} {dtype:?} operand {i}: {err}");
            }
        }
    }

    /// Gated operands: scan operands plus δ bias, D and z.
    fn gated_operands(
        rng: &mut Lcg,
        (b, l, di, n): (usize, usize, usize, usize),
        dtype: DType,
    ) -> [Tensor; 8] {
        let dev = Device::Cpu;
        let [delta, a, bm, cm, x] = operands(rng, (b, l, di, n), dtype);
        // δraw around 0 (softplus ≈ 0.3 .. 1.3), both signs.
        let delta_raw = (delta * 3.0).unwrap().affine(1.0, -1.5).unwrap();
        let bias = rand_tensor(rng, di, -0.5, 0.5, dtype, &dev);
        let d = rand_tensor(rng, di, 0.5, 1.5, dtype, &dev);
        let z = rand_tensor(rng, (b, l, di), -2.0, 2.0, dtype, &dev);
        [delta_raw, bias, a, bm, cm, d, x, z]
    }

    fn gated_loss(imp: ScanImpl, w: Tensor) -> impl Fn(&[Var]) -> candle_core::Result<Tensor> {
        move |v: &[Var]| {
            let t: Vec<&Tensor> = v.iter().map(|v| v.as_tensor()).collect();
            let y = selective_scan_gated(t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], imp)?;
            (y * &w)?.sum_all()
        }
    }

    #[test]
    fn gated_scan_matches_its_definition() {
        let mut rng = Lcg::new(6);
        let ops = gated_operands(&mut rng, (3, 7, 5, 4), DType::F64);
        let delta = mtrec_nn::softplus(&ops[0].broadcast_add(&ops[1]).unwrap()).unwrap();
        let plain = naive(&[
            delta,
            ops[2].clone(),
            ops[3].clone(),
            ops[4].clone(),
            ops[6].clone(),
        ]);
        let (xv, zv, dv) = (flat(&ops[6]), flat(&ops[7]), flat(&ops[5]));
        let want: Vec<f64> = plain
            .iter()
            .enumerate()
            .map(|(i, y)| {
                let z = zv[i];
                (y + dv[i % 5] * xv[i]) * z / (1.0 + (-z).exp())
            })
            .collect();
        for imp in [ScanImpl::Fused, ScanImpl::Composed] {
            let t: Vec<&Tensor> = ops.iter().collect();
            let y =
                selective_scan_gated(t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], imp).unwrap();
            let err = max_abs_diff(&flat(&y), &want);
            assert!(err < 1e-12, "{imp:?}: {err}");
        }
    }

    #[test]
    fn gated_scans_pass_finite_differences() {
        let mut rng = Lcg::new(7);
        let ops = gated_operands(&mut rng, (2, 5, 3, 2), DType::F64);
        let w = rand_tensor(&mut rng, (2, 5, 3), -1.0, 1.0, DType::F64, &Device::Cpu);
        for imp in [ScanImpl::Fused, ScanImpl::Composed] {
            let v: Vec<Var> = ops.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
            check_gradients(&v, gated_loss(imp, w.clone()), GradCheckConfig::default())
                .unwrap()
                .assert_ok();
        }
    }

    #[test]
    fn fused_gated_gradients_equal_composed_gradients() {
        let mut rng = Lcg::new(8);
        for (shape, dtype, tol) in [
            ((3, 9, 6, 4), DType::F64, 1e-12),
            ((4, 13, 10, 3), DType::F32, 5e-5),
        ] {
            let ops = gated_operands(&mut rng, shape, dtype);
            let w = rand_tensor(
                &mut rng,
                (shape.0, shape.1, shape.2),
                -1.0,
                1.0,
                dtype,
                &Device::Cpu,
            );
            let grads: Vec<Vec<Vec<f64>>> = [ScanImpl::Fused, ScanImpl::Composed]
                .into_iter()
                .map(|imp| {
                    let v: Vec<Var> = ops.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
                    let g = gated_loss(imp, w.clone())(&v).unwrap().backward().unwrap();
                    v.iter()
                        .map(|var| flat(g.get(var.as_tensor()).unwrap()))
                        .collect()
                })
                .collect();
            for (i, (f, c)) in grads[0].iter().zip(&grads[1]).enumerate() {
                let scale = c.iter().fold(1.0f64, |m, x| m.max(x.abs()));
                let err = max_abs_diff(f, c) / scale;
                assert!(err < tol, "{shape:?} {dtype:?} operand {i}: {err}");
            }
        }
    }

    #[test]
    fn rejects_mismatched_shapes() {
        let mut rng = Lcg::new(5);
        let ops = operands(&mut rng, (2, 3, 4, 5), DType::F32);
        let bad_a = ops[1].narrow(1, 0, 4).unwrap();
        for imp in [ScanImpl::Fused, ScanImpl::Composed] {
            assert!(selective_scan(&ops[0], &bad_a, &ops[2], &ops[3], &ops[4], imp).is_err());
            assert!(selective_scan(
                &ops[0],
                &ops[1],
                &ops[2],
                &ops[3],
                &ops[0].narrow(2, 0, 3).unwrap(),
                imp
            )
            .is_err());
        }
    }
}
