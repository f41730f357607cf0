//! Forward and forward+backward time of the DIEN backbone (official sizes, Amazon Electronics
//! vocabulary) with a CTR head and the auxiliary loss, on the CPU or (with `--features cuda`) the
//! first GPU.
//!
//! ```text
//! cargo run -p mtrec-dien --example bench [--release] [--features cuda] -- [B ...]
//! ```
//!
//! For each batch size (default 128 and 1024) two batches of width 100: "uniform" lengths drawn
//! uniformly from 0..=100 (one row forced to 100), and "short" lengths with mean ≈ 8 (the real
//! data's average; one row forced to 100, so the batch is still 100 wide). Reports the fastest of
//! 5 (B < 1024) or 3 runs after a warm-up. `DIEN_AUX_WEIGHT=0` times the model without the
//! auxiliary network. On a small shared machine set `CANDLE_NUM_THREADS=1`: candle's CPU thread
//! pool spin-waits on its workers, which collapses when the cores are busy with other work.

use std::time::Instant;

use candle_core::{DType, Device, Result};
use candle_nn::{VarBuilder, VarMap};
use mtrec_dien::{Config, Dien};
use mtrec_nn::ctr::testkit::random_batch;
use mtrec_nn::{bce_with_logits, HeadKind, Model, Vocab};

/// Amazon Electronics as in DIEN's Table 1 (+1 for the padding id).
const VOCAB: Vocab = Vocab {
    users: 192_404,
    items: 63_002,
    categories: 802,
};

fn lengths(b: usize, short: bool, seed: u64) -> Vec<usize> {
    let mut s = seed;
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 33) as usize
    };
    let mut v: Vec<usize> = (0..b)
        .map(|_| {
            if short {
                // geometric-ish, mean ≈ 8
                let mut l = 1;
                while l < 100 && next() % 8 != 0 {
                    l += 1;
                }
                l
            } else {
                next() % 101
            }
        })
        .collect();
    v[0] = 100;
    v
}

/// CPU time of the calling thread in seconds (Linux `/proc/thread-self/schedstat`; 0 elsewhere).
/// With `CANDLE_NUM_THREADS=1` all of candle's CPU work runs on this thread, so this is the work
/// done, undisturbed by other processes competing for the cores.
fn thread_cpu() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns * 1e-9)
}

fn main() -> Result<()> {
    let device = if cfg!(feature = "cuda") {
        Device::new_cuda(0)?
    } else {
        Device::Cpu
    };
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![128, 1024]
    } else {
        sizes
    };
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &device);
    let aux_loss_weight = std::env::var("DIEN_AUX_WEIGHT")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(1.0);
    let cfg = Config {
        aux_loss_weight,
        ..Config::default()
    };
    let backbone = Dien::new(&cfg, VOCAB, vb.clone())?;
    let model = Model::new(Box::new(backbone), HeadKind::Ctr, vb)?;
    println!(
        "device {device:?}, profile {}, candle threads {}, aux weight {aux_loss_weight}",
        if cfg!(debug_assertions) {
            "dev"
        } else {
            "release"
        },
        std::env::var("CANDLE_NUM_THREADS").unwrap_or_else(|_| "(default)".into())
    );
    for &b in &sizes {
        for short in [false, true] {
            let lens = lengths(b, short, b as u64 + short as u64);
            let mean = lens.iter().sum::<usize>() as f64 / b as f64;
            let batch = random_batch(VOCAB, &lens, 1, &Device::Cpu)?;
            let batch = mtrec_nn::Batch {
                users: batch.users.to_device(&device)?,
                hist_items: batch.hist_items.to_device(&device)?,
                hist_cats: batch.hist_cats.to_device(&device)?,
                hist_neg_items: batch.hist_neg_items.to_device(&device)?,
                hist_neg_cats: batch.hist_neg_cats.to_device(&device)?,
                mask: batch.mask.to_device(&device)?,
                lengths: batch.lengths.to_device(&device)?,
                target_items: batch.target_items.to_device(&device)?,
                target_cats: batch.target_cats.to_device(&device)?,
                labels: batch.labels.to_device(&device)?,
                ..batch
            };
            let reps = if b >= 1024 { 3 } else { 5 };
            let mut fwd_eval = Vec::new();
            let mut fwd_bwd = Vec::new();
            let mut cpu_eval = Vec::new();
            let mut cpu_train = Vec::new();
            for rep in 0..=reps {
                let c0 = thread_cpu();
                let t0 = Instant::now();
                let out = model.forward(&batch, false)?;
                let _ = out.logits.sum_all()?.to_scalar::<f32>()?;
                let t1 = Instant::now();
                let c1 = thread_cpu();
                let out = model.forward(&batch, true)?;
                let mut loss = bce_with_logits(&out.logits, &batch.labels)?;
                if let Some(aux) = &out.aux_loss {
                    loss = (loss + aux)?;
                }
                let grads = loss.backward()?;
                let _ = loss.to_scalar::<f32>()?;
                device.synchronize()?;
                let t2 = Instant::now();
                let c2 = thread_cpu();
                drop(grads);
                if rep > 0 {
                    // rep 0 warms up
                    fwd_eval.push((t1 - t0).as_secs_f64());
                    fwd_bwd.push((t2 - t1).as_secs_f64());
                    cpu_eval.push(c1 - c0);
                    cpu_train.push(c2 - c1);
                }
            }
            // The minimum: the machine is shared, the fastest run is the least disturbed one.
            let min = |v: &[f64]| v.iter().copied().fold(f64::MAX, f64::min) * 1e3;
            println!(
                "B={b:5} T=100 lengths {:7} (mean {mean:5.1}): eval forward {:7.1} ms (thread cpu {:7.1}), \
                 train forward+backward {:7.1} ms (thread cpu {:7.1})",
                if short { "short" } else { "uniform" },
                min(&fwd_eval),
                min(&cpu_eval),
                min(&fwd_bwd),
                min(&cpu_train)
            );
        }
    }
    Ok(())
}
