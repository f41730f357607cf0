//! Per-component forward/backward timing (diagnostics).
//!
//! `cargo run --release -p mtrec-sigma --example bench_parts -- [rows] [gru|conv3|ffn|dwconv|mamba]`
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use mtrec_sigma::layers::{ConvSame, FeedForward, PtGru};
use mtrec_sigma::{Mamba, MambaDims, ScanImpl};

#[global_allocator]
static GLOBAL: mtrec_alloc::MiMalloc = mtrec_alloc::MiMalloc;

fn time(
    name: &str,
    x: &Var,
    f: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<()> {
    for _ in 0..2 {
        let t0 = Instant::now();
        let y = f(x.as_tensor())?;
        let loss = y.sqr()?.sum_all()?;
        let _: f32 = loss.to_scalar()?;
        let t1 = Instant::now();
        let _g = loss.backward()?;
        let t2 = Instant::now();
        println!(
            "{name}: fwd {:.0} ms bwd {:.0} ms",
            (t1 - t0).as_secs_f64() * 1e3,
            (t2 - t1).as_secs_f64() * 1e3
        );
    }
    Ok(())
}

fn main() -> candle_core::Result<()> {
    mtrec_alloc::tune();
    let b: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    let (l, d) = (50, 64);
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, l, d), &dev)?)?;
    let gru = PtGru::new(d, d, vb.pp("gru"))?;
    let conv = ConvSame::new(d, d, 3, vb.pp("conv"))?;
    let ffn = FeedForward::new(d, 4 * d, 0.2, 1e-12, 0.02, vb.pp("ffn"))?;
    let dims = MambaDims {
        d_model: d,
        d_state: 32,
        d_conv: 4,
        expand: 2,
        dt_rank: 4,
    };
    let mamba = Mamba::new(dims, 0.02, ScanImpl::Fused, vb.pp("mamba"))?;
    let only = std::env::args().nth(2).unwrap_or_default();
    let want = |name: &str| only.is_empty() || only == name;
    if want("gru") {
        time("gru", &x, &|x| gru.forward(x))?;
    }
    if want("conv3") {
        time("conv3", &x, &|x| conv.forward(x))?;
    }
    if want("ffn") {
        time("ffn", &x, &|x| ffn.forward(x, true))?;
    }
    if want("dwconv") {
        let xi = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, l, 2 * d), &dev)?)?;
        let w = Tensor::randn(0f32, 0.5, (2 * d, 1, 4), &dev)?;
        let bias = Tensor::randn(0f32, 0.5, 2 * d, &dev)?;
        for imp in [ScanImpl::Fused, ScanImpl::Composed] {
            time(&format!("dwconv+silu {imp:?}"), &xi, &|x| {
                mtrec_sigma::layers::causal_conv_silu(x, &w, &bias, imp)
            })?;
        }
    }
    if want("mamba") {
        time("mamba", &x, &|x| mamba.forward(x))?;
    }
    Ok(())
}
