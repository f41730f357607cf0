//! The canonical interaction table that every reader produces: one row per logged positive engagement,
//! with the raw user/item/category keys, an ordering time, and the source file and line of the row so
//! that later errors can point back to the input.

use std::path::PathBuf;

use polars::prelude::*;

use crate::error::{DataError, PolarsContext, Result};

/// Column names of the canonical table.
pub mod cols {
    pub const USER: &str = "user";
    pub const ITEM: &str = "item";
    pub const CATEGORY: &str = "category";
    pub const TIME: &str = "time";
    pub const SOURCE: &str = "source";
    pub const LINE: &str = "line";
}

/// Category given to items that the input does not categorise (DIEN's name for it).
pub const DEFAULT_CATEGORY: &str = "default_cat";

/// Interactions as read from one set of raw inputs.
///
/// Columns: `user`, `item`, `category` (strings: raw keys), `time` (i64; any order key, a unix time or a
/// position), `source` (u32 index into [`Interactions::sources`]) and `line` (u64, 1-based line or row
/// of the source). No nulls.
#[derive(Debug, Clone)]
pub struct Interactions {
    df: DataFrame,
    sources: Vec<PathBuf>,
    format: String,
}

impl Interactions {
    /// Wraps a frame after checking its schema, that it has rows and that no value is missing.
    pub fn new(df: DataFrame, sources: Vec<PathBuf>, format: impl Into<String>) -> Result<Self> {
        let format = format.into();
        let expected: [(&str, DataType); 6] = [
            (cols::USER, DataType::String),
            (cols::ITEM, DataType::String),
            (cols::CATEGORY, DataType::String),
            (cols::TIME, DataType::Int64),
            (cols::SOURCE, DataType::UInt32),
            (cols::LINE, DataType::UInt64),
        ];
        for (name, dtype) in &expected {
            let c = df.column(name).map_err(|_| {
                DataError::Invalid(format!("interaction table lacks column '{name}'"))
            })?;
            if c.dtype() != dtype {
                return Err(DataError::Invalid(format!(
                    "interaction column '{name}' has type {}, expected {dtype}",
                    c.dtype()
                )));
            }
        }
        let df = df
            .select(expected.iter().map(|(n, _)| PlSmallStr::from_str(n)))
            .ctx(|| "selecting interaction columns".into())?;
        if df.height() == 0 {
            return Err(DataError::Empty {
                what: format!(
                    "the input ({})",
                    sources
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                hint: "no interaction was found; check the file and the --format".into(),
            });
        }
        let this = Interactions {
            df,
            sources,
            format,
        };
        for (name, _) in &expected {
            this.check_no_nulls(name)?;
        }
        Ok(this)
    }

    /// The table.
    pub fn df(&self) -> &DataFrame {
        &self.df
    }

    /// The input files, indexed by the `source` column.
    pub fn sources(&self) -> &[PathBuf] {
        &self.sources
    }

    /// The format name the table was read with.
    pub fn format(&self) -> &str {
        &self.format
    }

    /// Number of interactions.
    pub fn len(&self) -> usize {
        self.df.height()
    }

    /// True when there is no interaction (never the case for a constructed table).
    pub fn is_empty(&self) -> bool {
        self.df.height() == 0
    }

    fn check_no_nulls(&self, name: &str) -> Result<()> {
        let c = self.df.column(name).ctx(|| format!("column {name}"))?;
        if c.null_count() == 0 {
            return Ok(());
        }
        let mask = c.is_null();
        let row = mask.iter().position(|v| v == Some(true)).unwrap_or(0);
        let (path, line) = self.locate(row);
        Err(DataError::parse(path, line, Some(name), "missing value"))
    }

    /// The file and line of row `row`.
    pub fn locate(&self, row: usize) -> (PathBuf, u64) {
        let source = self
            .df
            .column(cols::SOURCE)
            .ok()
            .and_then(|c| c.u32().ok().and_then(|ca| ca.get(row)))
            .unwrap_or(0) as usize;
        let line = self
            .df
            .column(cols::LINE)
            .ok()
            .and_then(|c| c.u64().ok().and_then(|ca| ca.get(row)))
            .unwrap_or(0);
        (self.sources.get(source).cloned().unwrap_or_default(), line)
    }
}

/// Row-by-row builder for the readers of small text formats.
#[derive(Debug, Default)]
pub struct RowsBuilder {
    user: Vec<String>,
    item: Vec<String>,
    category: Vec<String>,
    time: Vec<i64>,
    source: Vec<u32>,
    line: Vec<u64>,
}

impl RowsBuilder {
    /// Appends one interaction.
    pub fn push(
        &mut self,
        user: &str,
        item: &str,
        category: &str,
        time: i64,
        source: u32,
        line: u64,
    ) {
        self.user.push(user.to_owned());
        self.item.push(item.to_owned());
        self.category.push(category.to_owned());
        self.time.push(time);
        self.source.push(source);
        self.line.push(line);
    }

    /// Number of rows so far.
    pub fn len(&self) -> usize {
        self.user.len()
    }

    /// True when no row was pushed.
    pub fn is_empty(&self) -> bool {
        self.user.is_empty()
    }

    /// The polars frame of the rows.
    pub fn into_frame(self) -> Result<DataFrame> {
        let h = self.user.len();
        DataFrame::new(
            h,
            vec![
                Column::new(cols::USER.into(), self.user),
                Column::new(cols::ITEM.into(), self.item),
                Column::new(cols::CATEGORY.into(), self.category),
                Column::new(cols::TIME.into(), self.time),
                Column::new(cols::SOURCE.into(), self.source),
                Column::new(cols::LINE.into(), self.line),
            ],
        )
        .ctx(|| "building the interaction table".into())
    }

    /// The finished table.
    pub fn finish(self, sources: Vec<PathBuf>, format: &str) -> Result<Interactions> {
        Interactions::new(self.into_frame()?, sources, format)
    }
}
