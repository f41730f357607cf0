//! Plumbing shared by the candle custom ops with CPU kernels (the fused GRU here, SIGMA's scan and
//! convolution): whether an operand can take the CPU path, and its data as a slice.

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
