//! `cargo xtask bench-batch`: how fast the MDP batcher turns shuffled samples of a prepared dataset
//! into padded candle tensors, in samples per second, for both padding policies.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use candle_core::Device;
use mtrec_data::PreparedDataset;
use mtrec_mdp::{samples, shuffled_indices, transitions, Batcher, PadPolicy, Split};

#[derive(clap::Args)]
pub struct Args {
    /// A prepared dataset folder (from `mtrec prepare`).
    dataset: PathBuf,
    /// Batch size.
    #[arg(long, default_value_t = 1024)]
    batch: usize,
}

pub fn run(args: Args) -> Result<()> {
    let ds = PreparedDataset::load(&args.dataset)?;
    let train = samples(&ds, Split::Train);
    let trans = transitions(&ds, Split::Train);
    let order = shuffled_indices(train.len(), 0, 0);
    println!("{} training samples, batch {}", train.len(), args.batch);
    for (name, pad) in [
        ("pad to cap", PadPolicy::Fixed),
        ("pad to longest", PadPolicy::Longest),
    ] {
        let batcher = Batcher::new(&ds).with_pad(pad);
        let start = Instant::now();
        let mut states = Vec::with_capacity(args.batch);
        for chunk in order.chunks(args.batch) {
            states.clear();
            states.extend(chunk.iter().map(|&k| train[k]));
            batcher.batch(&states, &Device::Cpu)?;
        }
        let s = start.elapsed().as_secs_f64();
        println!(
            "{:<13}{name:<16}{:>12.0} per second ({s:.2} s per epoch)",
            "samples",
            train.len() as f64 / s
        );
        let start = Instant::now();
        let mut ts = Vec::with_capacity(args.batch);
        for chunk in order.chunks(args.batch) {
            ts.clear();
            ts.extend(chunk.iter().map(|&k| trans[k]));
            batcher.transitions(&ts, &Device::Cpu)?;
        }
        let s = start.elapsed().as_secs_f64();
        println!(
            "{:<13}{name:<16}{:>12.0} per second ({s:.2} s per epoch)",
            "transitions",
            trans.len() as f64 / s
        );
    }
    Ok(())
}
