//! Plumbing shared by the candle custom ops with CPU kernels (the fused GRU here, SIGMA's scan and
//! convolution): whether an operand can take the CPU path, and its data as a slice.

use candle_core::{bail, CpuStorage, DType, Layout, Result, Shape, Storage, Tensor, WithDType};

use crate::fastmath::Elem;

/// Whether a fused CPU kernel can run on `t`: a CPU tensor of f32 or f64.
pub fn fused_ok(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64)
}

/// The contiguous part of `data` that `layout` describes; `op` names the op in the error.
pub fn contiguous_slice<'a, T>(data: &'a [T], layout: &Layout, op: &str) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: operand is not contiguous"),
    }
}

/// Borrows the contiguous CPU data of `t` as `&[T]` and runs `f` on it (for a backward pass);
/// `op` names the op in the errors.
pub fn with_cpu_slice<T: WithDType, R>(
    t: &Tensor,
    op: &str,
    f: impl FnOnce(&[T]) -> Result<R>,
) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        bail!("{op}: the fused backward runs on CPU tensors only");
    };
    f(contiguous_slice(cpu.as_slice::<T>()?, layout, op)?)
}

/// A CPU kernel of three same-typed operands that returns a tensor of the first one's shape.
pub(crate) trait Kernel3 {
    /// The kernel on the operands' contiguous data.
    fn apply<F: Elem>(&self, a: &[F], b: &[F], c: &[F]) -> Vec<F>;
}

/// `CustomOp3::cpu_fwd` for a [`Kernel3`]: dispatches on f32/f64 and takes the contiguous slices;
/// `op` names the op in the errors.
pub(crate) fn cpu_fwd3<K: Kernel3>(
    kernel: &K,
    op: &str,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    (s3, l3): (&CpuStorage, &Layout),
) -> Result<(CpuStorage, Shape)> {
    let out = match (s1, s2, s3) {
        (CpuStorage::F32(a), CpuStorage::F32(b), CpuStorage::F32(c)) => {
            CpuStorage::F32(kernel.apply(
                contiguous_slice(a, l1, op)?,
                contiguous_slice(b, l2, op)?,
                contiguous_slice(c, l3, op)?,
            ))
        }
        (CpuStorage::F64(a), CpuStorage::F64(b), CpuStorage::F64(c)) => {
            CpuStorage::F64(kernel.apply(
                contiguous_slice(a, l1, op)?,
                contiguous_slice(b, l2, op)?,
                contiguous_slice(c, l3, op)?,
            ))
        }
        _ => bail!("{op}: f32 or f64 operands of one type only"),
    };
    Ok((out, l1.shape().clone()))
}

/// Defines `$name`, which runs `$imp` compiled for AVX2 where the CPU has it (std checks once and
/// caches) and for the x86-64 baseline (SSE2, 4 f32 lanes) elsewhere. Release builds target the
/// baseline, so without this the fused kernels' inner loops run at half the width these machines
/// have. Only the vector width changes: the kernels use no fused multiply-add and fix their
/// summation order in the source, so both versions give the same bits. `$imp` should be
/// `#[inline(always)]` so that its body is compiled inside each version. Per function, not
/// through a generic closure: a closure wrapper made SIGMA's scan 2.3x slower.
#[macro_export]
#[doc(hidden)]
macro_rules! avx2_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident, $avx:ident => $imp:ident
        <$T:ident: $bound:path> ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)?) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name<$T: $bound>($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2, checked just above.
                return unsafe { $avx($($arg),*) };
            }
            $imp($($arg),*)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $avx<$T: $bound>($($arg: $ty),*) $(-> $ret)? {
            $imp($($arg),*)
        }
    };
}
