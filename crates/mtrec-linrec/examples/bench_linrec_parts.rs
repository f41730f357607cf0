//! Forward + backward time of the pieces of a LinRec layer at the default training shapes
//! (batch 1024 × width 50 = 51,200 tokens, d = 128, 8 heads, inner 256), each fused op beside
//! its op-composed form, and a matmul of the same size for scale.
//!
//! ```text
//! cargo run -p mtrec-linrec --example bench_linrec_parts --release -- [repeats]   # default 5
//! ```
//!
//! Prints the best of `repeats` runs of each piece in milliseconds. Set `RAYON_NUM_THREADS` and
//! `CANDLE_NUM_THREADS` to pin the thread count.

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use mtrec_nn::fused_pointwise::{bias_act, PointwiseAct};
use mtrec_nn::{LayerNorm, LinearAttention, LinearInit};

#[global_allocator]
static GLOBAL: mtrec_alloc::MiMalloc = mtrec_alloc::MiMalloc;

const TOKENS: usize = 1024 * 50;
const D: usize = 128;
const INNER: usize = 256;

/// Best time in ms of `repeats` runs of forward, then backward through a fixed projection.
fn time(repeats: usize, mut f: impl FnMut() -> Result<Tensor>) -> Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..repeats {
        let start = Instant::now();
        let y = f()?;
        let w = Tensor::ones(y.shape(), y.dtype(), y.device())?;
        let _grads = (y * w)?.sum_all()?.backward()?;
        best = best.min(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(best)
}

fn main() -> Result<()> {
    mtrec_alloc::tune();
    let repeats = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5usize);
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
    let att = LinearAttention::new(D, 8, 1e-6, LinearInit::Normal { std: 0.02 }, vb.pp("att"))?;
    let ln = LayerNorm::new(D, 1e-12, vb.pp("ln"))?;
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (1024, 50, D), &dev)?)?;
    let h = Var::from_tensor(&Tensor::randn(0f32, 1.0, (TOKENS, INNER), &dev)?)?;
    let b = Var::from_tensor(&Tensor::randn(0f32, 0.1, INNER, &dev)?)?;
    let w = Var::from_tensor(&Tensor::randn(0f32, 0.1, (INNER, D), &dev)?)?;
    let mask = mtrec_nn::dropout::mask_like(h.as_tensor(), 0.2, true)?;

    println!("piece | fused ms | composed ms");
    let xs = x.as_tensor();
    let fused = time(repeats, || att.forward_queries(xs, xs))?;
    let composed = time(repeats, || att.forward_queries_composed(xs, xs))?;
    println!("linear attention (with its 4 projections) | {fused:.1} | {composed:.1}");
    let start = Instant::now();
    for _ in 0..repeats {
        let _y = att.forward_queries(xs, xs)?;
    }
    let fwd = start.elapsed().as_secs_f64() * 1e3 / repeats as f64;
    let start = Instant::now();
    for _ in 0..repeats {
        let _y = att.forward_queries_composed(xs, xs)?;
    }
    let fwd_c = start.elapsed().as_secs_f64() * 1e3 / repeats as f64;
    println!("linear attention, forward only | {fwd:.1} | {fwd_c:.1}");
    let fused = time(repeats, || {
        bias_act(
            h.as_tensor(),
            b.as_tensor(),
            PointwiseAct::Gelu,
            mask.as_ref(),
        )
    })?;
    let composed = time(repeats, || {
        let z = mtrec_nn::add_last(h.as_tensor(), b.as_tensor())?.gelu_erf()?;
        match &mask {
            Some(m) => z * m,
            None => Ok(z),
        }
    })?;
    println!("bias + GELU + dropout [51200, 256] | {fused:.1} | {composed:.1}");
    for act in [PointwiseAct::Identity, PointwiseAct::Relu] {
        let fused = time(repeats, || {
            bias_act(h.as_tensor(), b.as_tensor(), act, mask.as_ref())
        })?;
        println!("bias + {act:?} + dropout [51200, 256] | {fused:.1} | -");
    }
    let mul = time(repeats, || h.as_tensor() * 2.0)?;
    println!("x · 2 [51200, 256] (a cheap op, for scale) | {mul:.1} | -");
    let fused = time(repeats, || ln.forward(xs))?;
    let composed = time(repeats, || ln.forward_composed(xs))?;
    println!("LayerNorm [51200, 128] | {fused:.1} | {composed:.1}");
    let mm = time(repeats, || h.as_tensor().matmul(w.as_tensor()))?;
    println!("matmul [51200, 256]·[256, 128] | {mm:.1} | -");
    Ok(())
}
