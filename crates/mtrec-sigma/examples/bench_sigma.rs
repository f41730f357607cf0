//! Forward + backward timing of the SIGMA backbone (CTR head, BCE loss) on random data.
//!
//! `cargo run --release -p mtrec-sigma --example bench_sigma -- [fused|composed] [batch] [steps] [len]`
//! Peak memory: run the built binary under `/usr/bin/time -v` (maximum resident set size).

use std::time::Instant;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use mtrec_nn::{bce_with_logits, Align, HeadKind, HostBatch, Model, Vocab};
use mtrec_sigma::{Config, ScanImpl, Sigma};

#[global_allocator]
static GLOBAL: mtrec_alloc::MiMalloc = mtrec_alloc::MiMalloc;

/// Process CPU time (user + system) in seconds, from `/proc/self/stat` (Linux; 0 elsewhere), so
/// timings on a shared machine can be read next to the wall clock.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn main() -> candle_core::Result<()> {
    mtrec_alloc::tune();
    let args: Vec<String> = std::env::args().collect();
    let scan = match args.get(1).map(String::as_str) {
        Some("composed") => ScanImpl::Composed,
        _ => ScanImpl::Fused,
    };
    let batch: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1024);
    let steps: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    let cfg = Config {
        scan,
        ..Config::default()
    };
    let width = cfg.max_history;
    // Amazon Electronics vocabulary sizes.
    let vocab = Vocab {
        users: 192_404,
        items: 63_002,
        categories: 802,
    };
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
    let sigma = Sigma::new(&cfg, vocab, vb.clone())?;
    let model = Model::new(Box::new(sigma), HeadKind::Ctr, vb)?;
    let params: usize = vm.all_vars().iter().map(|v| v.elem_count()).sum();

    // Random histories of length 1..=50 (xorshift), left-aligned, fixed width.
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    let mut next = |m: u64| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s % m
    };
    let mut hb = HostBatch::default();
    for _ in 0..batch {
        let len = 1 + next(width as u64) as usize;
        for t in 0..width {
            let real = t < len;
            hb.hist_items
                .push(if real { 1 + next(63_001) as u32 } else { 0 });
            hb.hist_cats
                .push(if real { 1 + next(801) as u32 } else { 0 });
            hb.hist_neg_items.push(0);
            hb.hist_neg_cats.push(0);
            hb.mask.push(if real { 1.0 } else { 0.0 });
        }
        hb.lengths.push(len as u32);
        hb.target_items.push(1 + next(63_001) as u32);
        hb.target_cats.push(1 + next(801) as u32);
        hb.labels.push(next(2) as f32);
        hb.users.push(1);
    }
    let b = hb.to_device(width, Align::Left, &dev)?;
    println!(
        "sigma {scan:?} B={batch} L={width} d={} N={} params={params} threads={}",
        cfg.hidden_size,
        cfg.d_state,
        candle_core::utils::get_num_threads()
    );
    for step in 0..=steps {
        let c0 = cpu_seconds();
        let t0 = Instant::now();
        let out = model.forward(&b, true)?;
        let loss = bce_with_logits(&out.logits, &b.labels)?;
        let l: f32 = loss.to_scalar()?;
        let t1 = Instant::now();
        let grads = loss.backward()?;
        let t2 = Instant::now();
        let with_grad = vm
            .all_vars()
            .iter()
            .filter(|v| grads.get(v.as_tensor()).is_some())
            .count();
        println!(
            "{} {step}: loss {l:.4} fwd {:.0} ms bwd {:.0} ms total {:.0} ms, cpu {:.1} s ({with_grad} vars with gradients)",
            if step == 0 { "warm-up" } else { "step" },
            (t1 - t0).as_secs_f64() * 1e3,
            (t2 - t1).as_secs_f64() * 1e3,
            (t2 - t0).as_secs_f64() * 1e3,
            cpu_seconds() - c0,
        );
    }
    Ok(())
}
