//! Learning tests (slow, `#[ignore]`d): the reference recipe (3 epochs, batch 128, about 950 steps)
//! of every backbone on a 2,000-user slice of real Amazon Beauty must lift the test AUC well above
//! chance. Run them in release:
//!
//! ```sh
//! cargo test --workspace --release --test learning -- --ignored --test-threads 1   # all eight
//! cargo test --workspace --release --test learning -- --ignored din                # one
//! ```
//! They skip with a notice when `../shared` is absent.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use mtrec_data::{prepare_files, Format, PrepareConfig, PreparedDataset, ReadOptions};
use mtrec_train::{train_run, Progress, RunConfig, RunOptions, TrainConfig};

/// Users in the slice (the first lines of the S3-Rec sequence file, one user per line).
const USERS: usize = 2000;
/// The bar: a model that learned nothing scores 0.5.
const MIN_AUC: f64 = 0.6;

fn slice(dir: &Path) -> Option<(PathBuf, PreparedDataset)> {
    let src = mtrec_data::testing::shared_path("data/amazon2014-5core/Beauty.txt")?;
    let path = dir.join("beauty-2000.txt");
    let mut out = std::fs::File::create(&path).unwrap();
    let reader = std::io::BufReader::new(std::fs::File::open(src).unwrap());
    for line in reader.lines().take(USERS) {
        writeln!(out, "{}", line.unwrap()).unwrap();
    }
    drop(out);
    let attrs =
        mtrec_data::testing::shared_path("data/amazon2014-5core/Beauty_item2attributes.json")?;
    let ds = prepare_files(
        Format::S3rec,
        &[path.clone(), attrs],
        &ReadOptions::default(),
        &PrepareConfig::default(),
    )
    .unwrap();
    Some((path, ds))
}

/// Trains `model` with the default recipe (`steps` caps it for the slowest models).
fn learns(model: &str, steps: Option<u64>) {
    let tmp = tempfile::tempdir().unwrap();
    let Some((data, ds)) = slice(tmp.path()) else {
        return;
    };
    let cfg = RunConfig {
        model: model.to_owned(),
        model_config: mtrec_models::effective_config(model, None).unwrap(),
        data,
        rewards: None,
        train: TrainConfig {
            seed: 1,
            epochs: 3,
            max_steps: steps,
            validation_fraction: 0.0,
            ..TrainConfig::default()
        },
    };
    let build = mtrec_models::builder(cfg.model.clone(), cfg.model_config.clone());
    let m = train_run(
        &tmp.path().join("run"),
        &cfg,
        &ds,
        &build,
        &RunOptions {
            progress: Progress::Hidden,
            ..RunOptions::default()
        },
    )
    .unwrap();
    eprintln!(
        "{model}: {} steps, test AUC all steps {:.4}, last pair {:.4}, ΔNCIS {:.3}",
        m.training.steps, m.test.auc_all_steps, m.test.auc, m.test.delta_ncis
    );
    assert!(
        m.test.auc_all_steps > MIN_AUC,
        "{model}: test AUC {} after {} steps",
        m.test.auc_all_steps,
        m.training.steps
    );
}

#[test]
#[ignore = "slow: run with --release -- --ignored"]
fn widedeep_learns() {
    learns("widedeep", None);
}

#[test]
#[ignore = "slow: run with --release -- --ignored"]
fn pnn_learns() {
    learns("pnn", None);
}

#[test]
#[ignore = "slow: run with --release -- --ignored"]
fn deepfm_learns() {
    learns("deepfm", None);
}

#[test]
#[ignore = "slow: run with --release -- --ignored"]
fn din_learns() {
    learns("din", None);
}

#[test]
#[ignore = "slow: run with --release -- --ignored"]
fn dien_learns() {
    learns("dien", None);
}

#[test]
#[ignore = "slow: run with --release -- --ignored"]
fn sasrec_learns() {
    learns("sasrec", None);
}

#[test]
#[ignore = "slow: run with --release -- --ignored"]
fn linrec_learns() {
    learns("linrec", None);
}

#[test]
#[ignore = "slow: run with --release -- --ignored"]
fn sigma_learns() {
    learns("sigma", Some(200));
}
