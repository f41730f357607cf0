//! Timing of the selective scan alone (forward, backward), fused vs composed.
//!
//! `cargo run --release -p mtrec-sigma --example bench_scan -- [fused|composed] [rows] [len] [d_inner] [d_state]`

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use mtrec_sigma::{selective_scan, ScanImpl};

#[global_allocator]
static GLOBAL: mtrec_alloc::MiMalloc = mtrec_alloc::MiMalloc;

fn main() -> candle_core::Result<()> {
    mtrec_alloc::tune();
    let args: Vec<String> = std::env::args().collect();
    let imp = match args.get(1).map(String::as_str) {
        Some("composed") => ScanImpl::Composed,
        _ => ScanImpl::Fused,
    };
    let num = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (b, l, di, n) = (num(2, 2048), num(3, 50), num(4, 128), num(5, 32));
    let dev = Device::Cpu;
    // `init`: magnitudes seen at SIGMA's initialisation (δ ≈ 0.69, A = −(1..N), tiny x, B, C and
    // upstream gradients), where long decays push values into the subnormal range.
    let init = std::env::var("SCAN_INIT").is_ok();
    let s = if init { 1e-3f32 } else { 1.0 };
    let delta = Var::from_tensor(&Tensor::rand(0.05f32, 1.0, (b, l, di), &dev)?)?;
    let a = if init {
        let v: Vec<f32> = (0..di * n).map(|i| -((i % n) as f32 + 1.0)).collect();
        Var::from_tensor(&Tensor::from_vec(v, (di, n), &dev)?)?
    } else {
        Var::from_tensor(&Tensor::rand(-2f32, -0.1, (di, n), &dev)?)?
    };
    let bm = Var::from_tensor(&(Tensor::randn(0f32, 1.0, (b, l, n), &dev)? * s as f64)?)?;
    let cm = Var::from_tensor(&(Tensor::randn(0f32, 1.0, (b, l, n), &dev)? * s as f64)?)?;
    let x = Var::from_tensor(&(Tensor::randn(0f32, 1.0, (b, l, di), &dev)? * s as f64)?)?;
    let w = (Tensor::randn(0f32, 1.0, (b, l, di), &dev)? * (s * s) as f64)?;
    println!("scan {imp:?} B={b} L={l} Di={di} N={n} init-like={init}");
    for step in 0..3 {
        let t0 = Instant::now();
        let y = selective_scan(&delta, &a, &bm, &cm, &x, imp)?;
        let loss = (y * &w)?.sum_all()?;
        let _: f32 = loss.to_scalar()?;
        let t1 = Instant::now();
        let g = loss.backward()?;
        let _: f32 = g
            .get(&a)
            .unwrap()
            .sum_all()?
            .to_dtype(DType::F32)?
            .to_scalar()?;
        let t2 = Instant::now();
        println!(
            "{step}: fwd {:.0} ms bwd {:.0} ms",
            (t1 - t0).as_secs_f64() * 1e3,
            (t2 - t1).as_secs_f64() * 1e3
        );
    }
    Ok(())
}
