//! Tabular logs through polars: DIN's remapped CSV (`user_id,item_id,time,cate_id`) and a user's own
//! CSV or parquet log with configurable column names.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use polars::chunked_array::cast::CastOptions;
use polars::prelude::*;

use crate::error::{DataError, PolarsContext, Result};
use crate::interactions::{cols, Interactions, DEFAULT_CATEGORY};
use crate::io::{is_gzip, open_maybe_gz, read_error};

/// Which columns of a table hold what. `time` absent = file order; `category` absent = one category.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ColumnMap {
    pub user: String,
    pub item: String,
    pub time: Option<String>,
    pub category: Option<String>,
}

impl ColumnMap {
    /// DIN's `remap.pkl` reviews frame written as CSV.
    pub fn din() -> Self {
        ColumnMap {
            user: "user_id".into(),
            item: "item_id".into(),
            time: Some("time".into()),
            category: Some("cate_id".into()),
        }
    }
}

impl Default for ColumnMap {
    fn default() -> Self {
        ColumnMap {
            user: "user_id".into(),
            item: "item_id".into(),
            time: Some("timestamp".into()),
            category: Some("category".into()),
        }
    }
}

/// The two table encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    Csv,
    Parquet,
}

/// Reads CSV or parquet files (CSV may be gzip) and maps their columns to the canonical table.
pub fn read_table(
    inputs: &[PathBuf],
    kind: TableKind,
    map: &ColumnMap,
    format: &str,
) -> Result<Interactions> {
    if inputs.is_empty() {
        return Err(DataError::Invalid(format!("{format}: no input file")));
    }
    let mut frames = Vec::new();
    for (source, path) in inputs.iter().enumerate() {
        let raw = match kind {
            TableKind::Csv => read_csv(path)?,
            TableKind::Parquet => read_parquet(path)?,
        };
        // CSV: row i is on line i + 2 (after the header); parquet: rows are numbered from 1.
        let first = if kind == TableKind::Csv { 2 } else { 1 };
        frames.push(canonical(path, raw, map, source as u32, first)?);
    }
    let df = super::amazon::concat_frames(frames)?;
    Interactions::new(df, inputs.to_vec(), format)
}

fn read_csv(path: &Path) -> Result<DataFrame> {
    let opts = CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(10_000));
    if is_gzip(path)? {
        let mut bytes = Vec::new();
        open_maybe_gz(path)?
            .read_to_end(&mut bytes)
            .map_err(|e| read_error(path, true, e))?;
        opts.into_reader_with_file_handle(Cursor::new(bytes))
            .finish()
            .ctx(|| format!("reading CSV {}", path.display()))
    } else {
        opts.try_into_reader_with_file_path(Some(path.to_path_buf()))
            .and_then(|r| r.finish())
            .ctx(|| format!("reading CSV {}", path.display()))
    }
}

fn read_parquet(path: &Path) -> Result<DataFrame> {
    let f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    ParquetReader::new(f)
        .finish()
        .ctx(|| format!("reading parquet {}", path.display()))
}

fn get<'a>(path: &Path, df: &'a DataFrame, name: &str) -> Result<&'a Column> {
    df.column(name).map_err(|_| DataError::MissingColumn {
        path: path.to_path_buf(),
        column: name.to_owned(),
        present: df
            .get_column_names()
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Casts one column, naming the first row whose value does not convert.
fn cast(path: &Path, c: &Column, to: &DataType, name: &str, first_line: u64) -> Result<Column> {
    let out = c
        .cast_with_options(to, CastOptions::NonStrict)
        .ctx(|| format!("{}: column '{name}'", path.display()))?;
    let lost = out.null_count() - c.null_count().min(out.null_count());
    if lost > 0 {
        let before = c.is_null();
        let after = out.is_null();
        let row = before
            .iter()
            .zip(after.iter())
            .position(|(b, a)| a == Some(true) && b == Some(false))
            .unwrap_or(0);
        let value = c.get(row).map(|v| v.to_string()).unwrap_or_default();
        return Err(DataError::parse(
            path,
            row as u64 + first_line,
            Some(name),
            format!("cannot read {value} as {to}"),
        ));
    }
    Ok(out)
}

fn canonical(
    path: &Path,
    df: DataFrame,
    map: &ColumnMap,
    source: u32,
    first: u64,
) -> Result<DataFrame> {
    let h = df.height();
    let user = cast(
        path,
        get(path, &df, &map.user)?,
        &DataType::String,
        &map.user,
        first,
    )?;
    let item = cast(
        path,
        get(path, &df, &map.item)?,
        &DataType::String,
        &map.item,
        first,
    )?;
    let category = match &map.category {
        Some(c) => cast(path, get(path, &df, c)?, &DataType::String, c, first)?,
        None => Column::new(cols::CATEGORY.into(), vec![DEFAULT_CATEGORY; h]),
    };
    let time = match &map.time {
        Some(t) => cast(path, get(path, &df, t)?, &DataType::Int64, t, first)?,
        None => Column::new(cols::TIME.into(), (0..h as i64).collect::<Vec<_>>()),
    };
    // Report missing values against the user's own column names.
    for (c, name) in [
        (&user, map.user.as_str()),
        (&item, map.item.as_str()),
        (&category, map.category.as_deref().unwrap_or(cols::CATEGORY)),
        (&time, map.time.as_deref().unwrap_or(cols::TIME)),
    ] {
        if c.null_count() > 0 {
            let row = c
                .is_null()
                .iter()
                .position(|v| v == Some(true))
                .unwrap_or(0);
            return Err(DataError::parse(
                path,
                row as u64 + first,
                Some(name),
                "missing value",
            ));
        }
    }
    DataFrame::new(
        h,
        vec![
            user.with_name(cols::USER.into()),
            item.with_name(cols::ITEM.into()),
            category.with_name(cols::CATEGORY.into()),
            time.with_name(cols::TIME.into()),
            Column::new(cols::SOURCE.into(), vec![source; h]),
            Column::new(
                cols::LINE.into(),
                (first..first + h as u64).collect::<Vec<_>>(),
            ),
        ],
    )
    .ctx(|| "canonical table".into())
}
