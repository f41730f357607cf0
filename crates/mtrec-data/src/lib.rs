//! # mtrec-data
//!
//! Reads recommendation logs in the formats that public recommendation codes use and turns them into a
//! [`PreparedDataset`]: per-user positive sequences, one fixed negative per step, a user-level split and
//! provenance. The pipeline follows `specs/method.md` §6.4 (DIN's id remapping, a stable per-user sort,
//! DIN's or DIEN's negative rule, DIEN's 10% test users).
//!
//! ```no_run
//! use mtrec_data::{prepare_files, Format, PrepareConfig, ReadOptions};
//! let inputs = vec!["Beauty.txt".into(), "Beauty_item2attributes.json".into()];
//! let ds = prepare_files(Format::S3rec, &inputs, &ReadOptions::default(), &PrepareConfig::default())?;
//! ds.save("data/generated/beauty".as_ref(), true)?;
//! println!("{}", ds.stats());
//! # Ok::<(), mtrec_data::DataError>(())
//! ```

pub mod dataset;
pub mod error;
pub mod formats;
pub mod interactions;
pub mod io;
pub mod prepare;
pub mod pylit;
pub mod testing;

use std::path::PathBuf;

pub use dataset::{InputFile, Manifest, PreparedDataset, Stats};
pub use error::{DataError, Result};
pub use formats::{read, CategoryRule, ColumnMap, Format, ReadOptions};
pub use interactions::Interactions;
pub use prepare::{prepare, NegativeRule, PrepareConfig};

/// Fingerprints of input files (size and SHA-256), computed in parallel.
pub fn fingerprint(paths: &[PathBuf]) -> Result<Vec<InputFile>> {
    use rayon::prelude::*;
    paths
        .par_iter()
        .map(|p| {
            let meta = std::fs::metadata(p).map_err(|e| DataError::io(p, e))?;
            Ok(InputFile {
                path: p.clone(),
                bytes: meta.len(),
                sha256: io::sha256_file(p)?,
            })
        })
        .collect()
}

/// Reads `inputs`, fingerprints them, and prepares the dataset (not yet written: see
/// [`PreparedDataset::save`]). The manifest lists every file the reader used, with its SHA-256.
pub fn prepare_files(
    format: Format,
    inputs: &[PathBuf],
    read_opts: &ReadOptions,
    cfg: &PrepareConfig,
) -> Result<PreparedDataset> {
    // Hash the named files while reading; files a reader found by itself (an S3-Rec attribute file,
    // the files of a DIEN folder) are hashed afterwards.
    let named: Vec<PathBuf> = inputs.iter().filter(|p| p.is_file()).cloned().collect();
    let start = std::time::Instant::now();
    let (table, prints) = rayon::join(
        || formats::read(format, inputs, read_opts),
        || fingerprint(&named),
    );
    let table = table?;
    tracing::info!(
        "read {} interactions in {:.2}s (inputs hashed alongside)",
        table.len(),
        start.elapsed().as_secs_f64()
    );
    let start = std::time::Instant::now();
    let mut prints = prints?;
    let extra: Vec<PathBuf> = table
        .sources()
        .iter()
        .filter(|s| !named.contains(s))
        .cloned()
        .collect();
    prints.extend(fingerprint(&extra)?);
    let mut ds = prepare(&table, cfg, prints)?;
    tracing::info!(
        "ids, order, negatives and split in {:.2}s",
        start.elapsed().as_secs_f64()
    );
    if format == Format::AmazonJson {
        ds.manifest.rules.category_rule = Some(read_opts.category_rule);
    }
    Ok(ds)
}
