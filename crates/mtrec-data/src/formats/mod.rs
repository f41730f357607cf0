//! One reader per raw format; each returns the canonical [`Interactions`] table.

pub mod amazon;
pub mod dien;
pub mod s3rec;
pub mod table;

use std::path::PathBuf;

pub use amazon::CategoryRule;
pub use table::ColumnMap;

use crate::error::{DataError, Result};
use crate::interactions::Interactions;

/// The raw formats `prepare` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Amazon 2014 `reviews_<Cat>_5.json` + `meta_<Cat>.json` (plain or gzip).
    AmazonJson,
    /// DIN's remapped CSV `user_id,item_id,time,cate_id`.
    DinCsv,
    /// DIEN's `reviews-info` + `item-info`, or `local_train` / `local_test`.
    Dien,
    /// S3-Rec `<DS>.txt` + `<DS>_item2attributes.json`.
    S3rec,
    /// Any CSV log, columns named by a [`ColumnMap`].
    Csv,
    /// Any parquet log, columns named by a [`ColumnMap`].
    Parquet,
}

impl Format {
    /// Every format with its command-line name.
    pub const ALL: [(Format, &'static str); 6] = [
        (Format::AmazonJson, "amazon-json"),
        (Format::DinCsv, "din-csv"),
        (Format::Dien, "dien"),
        (Format::S3rec, "s3rec"),
        (Format::Csv, "csv"),
        (Format::Parquet, "parquet"),
    ];

    /// The command-line name.
    pub fn name(&self) -> &'static str {
        Format::ALL
            .iter()
            .find(|(f, _)| f == self)
            .map(|(_, n)| *n)
            .unwrap_or("?")
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Format {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        Format::ALL
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(f, _)| *f)
            .ok_or_else(|| {
                DataError::Invalid(format!(
                    "unknown format '{s}'; expected one of: {}",
                    Format::ALL
                        .iter()
                        .map(|(_, n)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }
}

/// Options that only some formats use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOptions {
    /// amazon-json: which category path element is the category.
    pub category_rule: CategoryRule,
    /// csv / parquet: column names.
    pub columns: ColumnMap,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            category_rule: CategoryRule::LastOfLast,
            columns: ColumnMap::default(),
        }
    }
}

/// Reads `inputs` in `format` into the canonical table.
pub fn read(format: Format, inputs: &[PathBuf], opts: &ReadOptions) -> Result<Interactions> {
    if inputs.is_empty() {
        return Err(DataError::Invalid(format!("{format}: no input file given")));
    }
    for p in inputs {
        if !p.exists() {
            return Err(DataError::io(
                p,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
            ));
        }
    }
    let _span = tracing::info_span!("read", format = format.name()).entered();
    match format {
        Format::AmazonJson => amazon::read_amazon(inputs, opts.category_rule),
        Format::DinCsv => {
            table::read_table(inputs, table::TableKind::Csv, &ColumnMap::din(), "din-csv")
        }
        Format::Dien => dien::read_dien(inputs),
        Format::S3rec => s3rec::read_s3rec(inputs),
        Format::Csv => table::read_table(inputs, table::TableKind::Csv, &opts.columns, "csv"),
        Format::Parquet => {
            table::read_table(inputs, table::TableKind::Parquet, &opts.columns, "parquet")
        }
    }
}
