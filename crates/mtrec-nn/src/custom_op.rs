//! Plumbing shared by the candle custom ops with CPU kernels (the fused GRU, linear attention and
//! pointwise ops here, SIGMA's scan and convolution): whether an operand can take the CPU path,
//! operands' data as slices, and the AVX2 build of a kernel ([`avx2_dispatch`](crate::avx2_dispatch)).

use candle_core::{bail, DType, Layout, Result, Storage, Tensor, WithDType};

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

/// Borrows the contiguous CPU data of each of `ts` as `&[T]` and runs `f` on them (for a
/// backward pass); `op` names the op in the errors. The storages are read-locked in order, so
/// the tensors must not share a storage (a second read lock of one storage can deadlock).
pub fn with_cpu_slices<T: WithDType, R, const N: usize>(
    ts: [&Tensor; N],
    op: &str,
    f: impl FnOnce([&[T]; N]) -> Result<R>,
) -> Result<R> {
    let held: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(N);
    for (storage, layout) in &held {
        let Storage::Cpu(cpu) = &**storage else {
            bail!("{op}: the fused backward runs on CPU tensors only");
        };
        slices.push(contiguous_slice(cpu.as_slice::<T>()?, layout, op)?);
    }
    match <[&[T]; N]>::try_from(slices) {
        Ok(slices) => f(slices),
        Err(_) => bail!("{op}: {N} operands expected"),
    }
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
