//! The rewards file: the mental rewards `r*(s,P)` and `r*(s,N)` of each training sample, which the
//! alignment loss reads as constants (`specs/method.md` §4, Alg. 2 step 4 "patch").
//!
//! # Format
//! A parquet file (`.parquet`, `.pq`) or a CSV file with a header (any other extension), one row per
//! sample:
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `user` | u32 | user id of the prepared dataset (1-based) |
//! | `step` | u32 | 0-based step of the shown item in the user's sequence (the `step` column of `interactions.parquet`; samples exist for `step >= 1`) |
//! | `positive` | bool | true: the logged positive is shown; false: the step's negative |
//! | `r_pos` | f32 | `r*(s, P)`: reward of engaging with the shown item |
//! | `r_neg` | f32 | `r*(s, N)`: reward of declining it |
//! | `q_pos_0..`, `q_neg_0..` | f32 | optional per-quantile rewards (QR-IQL heads); ignored here |
//!
//! Integer columns of any width are accepted (and checked to fit); `positive` may also be 0/1.
//! Every training sample must be present; test-user rows are allowed and unused. A duplicate key is
//! an error. Non-finite rewards are accepted here (with a warning): the trainer's NaN guard then
//! stops at the first batch that uses one and names it.

use std::path::{Path, PathBuf};

use mtrec_data::PreparedDataset;
use mtrec_mdp::State;
use polars::chunked_array::cast::CastOptions;
use polars::prelude::*;

use crate::error::{Result, TrainError};

/// Rewards of the samples of one dataset, indexed like its flat interaction arrays.
#[derive(Debug, Clone)]
pub struct Rewards {
    path: PathBuf,
    offsets: Vec<usize>,
    /// `[r_pos, r_neg]` per sample key `2·(offset[u] + step) + (positive ? 0 : 1)`.
    values: Vec<[f32; 2]>,
    present: Vec<bool>,
    rows: usize,
}

fn sample_key(offsets: &[usize], user: u32, step: u32, positive: bool) -> usize {
    2 * (offsets[user as usize] + step as usize) + usize::from(!positive)
}

impl Rewards {
    /// Reads a rewards file for `ds`. Rows must name existing `(user, step)` pairs of `ds`.
    pub fn load(path: &Path, ds: &PreparedDataset) -> Result<Self> {
        let df = read_table(path)?;
        let err = |m: String| TrainError::rewards(path, m);
        let column = |name: &str| -> Result<&Column> {
            df.column(name).map_err(|_| {
                err(format!(
                    "missing column '{name}' (columns present: {}; needed: user, step, positive, r_pos, r_neg)",
                    df.get_column_names()
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
        };
        let users = u32_column(column("user")?, "user", path)?;
        let steps = u32_column(column("step")?, "step", path)?;
        let positives = bool_column(column("positive")?, path)?;
        let r_pos = f32_column(column("r_pos")?, "r_pos", path)?;
        let r_neg = f32_column(column("r_neg")?, "r_neg", path)?;

        let offsets = ds.offsets().to_vec();
        let n = 2 * ds.n_interactions();
        let mut values = vec![[f32::NAN; 2]; n];
        let mut present = vec![false; n];
        let mut non_finite: Option<usize> = None;
        for row in 0..users.len() {
            let (u, t, p) = (users[row], steps[row], positives[row]);
            if u == 0 || u as usize > ds.n_users() {
                return Err(err(format!(
                    "row {}: user {u} is not in the dataset (users 1..={})",
                    row + 1,
                    ds.n_users()
                )));
            }
            let len = ds.sequence(u as usize).len();
            if t as usize >= len {
                return Err(err(format!(
                    "row {}: step {t} of user {u} is not in the dataset (the user has steps 0..{len})",
                    row + 1
                )));
            }
            let k = sample_key(&offsets, u, t, p);
            if present[k] {
                return Err(err(format!(
                    "row {}: second row for sample (user {u}, step {t}, positive {p})",
                    row + 1
                )));
            }
            present[k] = true;
            values[k] = [r_pos[row], r_neg[row]];
            if non_finite.is_none() && !(r_pos[row].is_finite() && r_neg[row].is_finite()) {
                non_finite = Some(row);
            }
        }
        if let Some(row) = non_finite {
            tracing::warn!(
                "{}: row {} (user {}, step {}) has a non-finite reward; training will stop if it is used",
                path.display(),
                row + 1,
                users[row],
                steps[row]
            );
        }
        Ok(Rewards {
            path: path.to_path_buf(),
            offsets,
            values,
            present,
            rows: users.len(),
        })
    }

    /// The file the rewards came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of rows read.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// `(r*(s,P), r*(s,N))` of sample `s`, if the file has it.
    pub fn get(&self, s: State) -> Option<(f32, f32)> {
        let u = s.user as usize;
        if u + 1 >= self.offsets.len() || self.offsets[u] + s.step as usize >= self.offsets[u + 1] {
            return None;
        }
        let k = sample_key(&self.offsets, s.user, s.step, s.positive);
        self.present[k].then(|| (self.values[k][0], self.values[k][1]))
    }

    /// Checks that every state has a reward; the error names the first missing one.
    pub fn check_covers(&self, states: &[State]) -> Result<()> {
        let mut first = None;
        let mut missing = 0;
        for s in states {
            if self.get(*s).is_none() {
                missing += 1;
                first.get_or_insert(*s);
            }
        }
        match first {
            None => Ok(()),
            Some(s) => Err(TrainError::MissingReward {
                path: self.path.clone(),
                user: s.user,
                step: s.step,
                positive: s.positive,
                missing,
            }),
        }
    }

    /// `r_pos` and `r_neg` columns of a batch of states (0 where missing; check coverage first).
    pub fn columns(&self, states: &[State]) -> (Vec<f32>, Vec<f32>) {
        states
            .iter()
            .map(|s| self.get(*s).unwrap_or((0.0, 0.0)))
            .unzip()
    }
}

fn is_parquet(path: &Path) -> bool {
    matches!(
        path.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("parquet") | Some("pq")
    )
}

fn read_table(path: &Path) -> Result<DataFrame> {
    if !path.is_file() {
        return Err(TrainError::rewards(path, "no such file"));
    }
    let res = if is_parquet(path) {
        let f = std::fs::File::open(path).map_err(|e| TrainError::io(path, e))?;
        ParquetReader::new(f).finish()
    } else {
        CsvReadOptions::default()
            .with_has_header(true)
            .with_infer_schema_length(Some(10_000))
            .try_into_reader_with_file_path(Some(path.to_path_buf()))
            .and_then(|r| r.finish())
    };
    res.map_err(|e| TrainError::rewards(path, format!("cannot read the table: {e}")))
}

fn no_nulls(c: &Column, name: &str, path: &Path) -> Result<()> {
    if c.null_count() > 0 {
        let row = c
            .is_null()
            .iter()
            .position(|b| b == Some(true))
            .unwrap_or(0);
        return Err(TrainError::rewards(
            path,
            format!("column '{name}' has a missing value in row {}", row + 1),
        ));
    }
    Ok(())
}

fn u32_column(c: &Column, name: &str, path: &Path) -> Result<Vec<u32>> {
    no_nulls(c, name, path)?;
    let bad = |m: String| TrainError::rewards(path, format!("column '{name}': {m}"));
    if !c.dtype().is_integer() {
        return Err(bad(format!("expected integers, found {}", c.dtype())));
    }
    let cast = c
        .cast_with_options(&DataType::UInt32, CastOptions::NonStrict)
        .map_err(|e| bad(e.to_string()))?;
    if cast.null_count() > 0 {
        let row = cast
            .is_null()
            .iter()
            .position(|b| b == Some(true))
            .unwrap_or(0);
        let v = c.get(row).map(|v| v.to_string()).unwrap_or_default();
        return Err(bad(format!("row {}: {v} is not a u32", row + 1)));
    }
    Ok(cast
        .u32()
        .map_err(|e| bad(e.to_string()))?
        .into_no_null_iter()
        .collect())
}

fn bool_column(c: &Column, path: &Path) -> Result<Vec<bool>> {
    no_nulls(c, "positive", path)?;
    let bad = |m: String| TrainError::rewards(path, format!("column 'positive': {m}"));
    match c.dtype() {
        DataType::Boolean => Ok(c
            .bool()
            .map_err(|e| bad(e.to_string()))?
            .iter()
            .map(|b| b.unwrap_or(false))
            .collect()),
        d if d.is_integer() => {
            let v = u32_column(c, "positive", path)?;
            v.iter()
                .enumerate()
                .map(|(row, &x)| match x {
                    0 => Ok(false),
                    1 => Ok(true),
                    _ => Err(bad(format!("row {}: {x} is neither 0 nor 1", row + 1))),
                })
                .collect()
        }
        d => Err(bad(format!("expected true/false or 0/1, found {d}"))),
    }
}

fn f32_column(c: &Column, name: &str, path: &Path) -> Result<Vec<f32>> {
    no_nulls(c, name, path)?;
    let bad = |m: String| TrainError::rewards(path, format!("column '{name}': {m}"));
    if !(c.dtype().is_float() || c.dtype().is_integer()) {
        return Err(bad(format!("expected numbers, found {}", c.dtype())));
    }
    let cast = c.cast(&DataType::Float32).map_err(|e| bad(e.to_string()))?;
    Ok(cast
        .f32()
        .map_err(|e| bad(e.to_string()))?
        .into_no_null_iter()
        .collect())
}

/// Writes a rewards file (parquet or CSV by extension) from `(state, r_pos, r_neg)` rows; for tests
/// and tools. The reward crate writes the real ones.
pub fn write_rewards(path: &Path, rows: &[(State, f32, f32)]) -> Result<()> {
    let n = rows.len();
    let mut df = DataFrame::new(
        n,
        vec![
            Column::new(
                "user".into(),
                rows.iter().map(|r| r.0.user).collect::<Vec<_>>(),
            ),
            Column::new(
                "step".into(),
                rows.iter().map(|r| r.0.step).collect::<Vec<_>>(),
            ),
            Column::new(
                "positive".into(),
                rows.iter().map(|r| r.0.positive).collect::<Vec<_>>(),
            ),
            Column::new("r_pos".into(), rows.iter().map(|r| r.1).collect::<Vec<_>>()),
            Column::new("r_neg".into(), rows.iter().map(|r| r.2).collect::<Vec<_>>()),
        ],
    )
    .map_err(|e| TrainError::rewards(path, e.to_string()))?;
    let mut buf = Vec::new();
    let res = if is_parquet(path) {
        ParquetWriter::new(&mut buf).finish(&mut df).map(|_| ())
    } else {
        CsvWriter::new(&mut buf)
            .include_header(true)
            .finish(&mut df)
    };
    res.map_err(|e| TrainError::rewards(path, format!("writing: {e}")))?;
    mtrec_data::io::write_atomic(path, &buf)?;
    Ok(())
}
