//! End to end on real data: the Amazon 2014 5-core Beauty file through mtrec-data and mtrec-mdp.
//! Skips with a notice when `../shared` is absent (a user's clone); CI has it.

use std::path::PathBuf;

use candle_core::Device;
use mtrec_data::{prepare_files, Format, PrepareConfig, PreparedDataset, ReadOptions};
use mtrec_mdp::{samples, shuffled_indices, transitions, Batcher, Split};

fn beauty() -> Option<PathBuf> {
    mtrec_data::testing::shared_path("data/amazon2014-5core/Beauty.txt")
}

fn prepared(path: PathBuf) -> PreparedDataset {
    prepare_files(
        Format::S3rec,
        &[path],
        &ReadOptions::default(),
        &PrepareConfig::default(),
    )
    .unwrap()
}

#[test]
fn beauty_transitions_keep_the_mdp_invariants() {
    let Some(path) = beauty() else { return };
    let ds = prepared(path);
    let c = &ds.manifest.counts;
    assert_eq!(c.test_users, 2236, "10% of 22,363 users, rounded");
    // Every step after the first gives a positive and a negative sample.
    assert_eq!(c.train_samples + c.test_samples, 2 * (198_502 - 22_363));

    let train = transitions(&ds, Split::Train);
    assert_eq!(train.len(), c.train_samples);
    let mut ends = 0;
    for t in &train {
        let u = t.state.user as usize;
        assert!(!ds.is_test(u) && !ds.is_test(t.next.user as usize));
        let n = ds.sequence(u).len() as u32;
        assert_eq!(t.done, t.state.positive && t.state.step == n - 1);
        ends += usize::from(t.done);
        if !t.state.positive {
            assert!(!ds.sequence(u).contains(&t.state.item(&ds)));
        }
    }
    assert_eq!(ends, c.train_users, "one end per training trajectory");
}

#[test]
fn beauty_batches_cover_an_epoch() {
    let Some(path) = beauty() else { return };
    let ds = prepared(path);
    let train = samples(&ds, Split::Train);
    let order = shuffled_indices(train.len(), 1, 0);
    let batcher = Batcher::new(&ds);
    let mut seen = 0usize;
    let mut positives = 0f32;
    for chunk in order.chunks(4096) {
        let states: Vec<_> = chunk.iter().map(|&k| train[k]).collect();
        let b = batcher.batch(&states, &Device::Cpu).unwrap();
        assert!(b.width <= 100);
        seen += b.size;
        positives += b.labels.sum_all().unwrap().to_scalar::<f32>().unwrap();
    }
    assert_eq!(seen, train.len());
    assert_eq!(positives as usize * 2, train.len());
}
