//! Forward and forward+backward time of the SASRec backbone (default = official config, Amazon
//! Electronics vocabulary, width 50) with a CTR head (BCE) and a Quantile(10) head, on the CPU.
//!
//! ```text
//! cargo run -p mtrec-sasrec --example bench_sasrec --release -- [B ...]     # default B = 1024
//! ```
//!
//! Two batches per size: lengths uniform in 0..=50 and "short" lengths with mean ≈ 8 (the Amazon
//! data's average). The model always sees 50 columns (its fixed layout), so both cost the same.

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use mtrec_nn::transformer::testkit::random_batch;
use mtrec_nn::{bce_with_logits, HeadKind, Model, Vocab};
use mtrec_sasrec::{Config, SasRec};

#[global_allocator]
static GLOBAL: mtrec_alloc::MiMalloc = mtrec_alloc::MiMalloc;

/// Amazon Electronics as in DIEN's Table 1 (+1 for the padding id).
const VOCAB: Vocab = Vocab {
    users: 192_404,
    items: 63_002,
    categories: 802,
};

fn lengths(b: usize, max: usize, short: bool, seed: u64) -> Vec<usize> {
    let mut s = seed;
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 33) as usize
    };
    (0..b)
        .map(|_| {
            if short {
                let mut l = 1;
                while l < max && next() % 8 != 0 {
                    l += 1;
                }
                l
            } else {
                next() % (max + 1)
            }
        })
        .collect()
}

fn median_ms(mut f: impl FnMut() -> Result<()>, reps: usize) -> Result<f64> {
    f()?; // warm-up
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(|a, b| a.total_cmp(b));
    Ok(t[reps / 2])
}

fn main() -> Result<()> {
    mtrec_alloc::tune();
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() { vec![1024] } else { sizes };
    let cfg = Config::default();
    let dev = Device::Cpu;
    println!(
        "sasrec {cfg:?}\nprofile {}, threads {}",
        if cfg!(debug_assertions) {
            "dev"
        } else {
            "release"
        },
        candle_core::utils::get_num_threads()
    );
    for kind in [HeadKind::Ctr, HeadKind::Quantile(10)] {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let model = Model::new(Box::new(SasRec::new(&cfg, VOCAB, vb.clone())?), kind, vb)?;
        let width = model.backbone().layout().max_history;
        for &b in &sizes {
            for short in [false, true] {
                let lens = lengths(b, width, short, b as u64 + short as u64);
                let mean = lens.iter().sum::<usize>() as f64 / b as f64;
                let batch = random_batch(VOCAB, &lens, width, model.layout().align, 1, &dev)?;
                let loss = |train: bool| -> Result<Tensor> {
                    let out = model.forward(&batch, train)?.logits;
                    match kind {
                        HeadKind::Ctr => bce_with_logits(&out, &batch.labels),
                        _ => out.sqr()?.mean_all(),
                    }
                };
                let eval = median_ms(|| loss(false).map(|_| ()), 5)?;
                let fwd = median_ms(|| loss(true).map(|_| ()), 5)?;
                let fb = median_ms(|| loss(true)?.backward().map(|_| ()), 5)?;
                println!(
                    "{kind:?} B={b} L={width} mean len {mean:.1}: eval fwd {eval:.0} ms, train fwd {fwd:.0} ms, fwd+bwd {fb:.0} ms ({:.0} samples/s)",
                    b as f64 / fb * 1e3
                );
            }
        }
    }
    Ok(())
}
