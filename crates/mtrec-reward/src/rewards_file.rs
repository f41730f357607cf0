//! Typed column reads of a parquet rewards file ([`crate::write_patch`]'s format), with errors
//! that name the file and the column.

use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::error::{Result, RewardError};

/// An open rewards file.
pub(crate) struct RewardsFile {
    path: PathBuf,
    df: DataFrame,
}

impl RewardsFile {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| RewardError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let df = ParquetReader::new(file)
            .finish()
            .map_err(|e| RewardError::Rewards {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        Ok(RewardsFile {
            path: path.to_path_buf(),
            df,
        })
    }

    pub(crate) fn bad(&self, message: String) -> RewardError {
        RewardError::Rewards {
            path: self.path.clone(),
            message,
        }
    }

    /// Column `name` cast to `dt`; a missing column or a missing value is an error.
    fn column(&self, name: &str, dt: DataType) -> Result<Series> {
        let s = self
            .df
            .column(name)
            .map_err(|_| self.bad(format!("missing column '{name}'")))?
            .as_materialized_series()
            .cast(&dt)
            .map_err(|e| self.bad(format!("column '{name}': {e}")))?;
        if s.null_count() > 0 {
            return Err(self.bad(format!(
                "column '{name}' has {} missing values",
                s.null_count()
            )));
        }
        Ok(s)
    }

    pub(crate) fn u32s(&self, name: &str) -> Result<Vec<u32>> {
        Ok(self
            .column(name, DataType::UInt32)?
            .u32()
            .map_err(|e| self.bad(e.to_string()))?
            .into_no_null_iter()
            .collect())
    }

    pub(crate) fn f32s(&self, name: &str) -> Result<Vec<f32>> {
        Ok(self
            .column(name, DataType::Float32)?
            .f32()
            .map_err(|e| self.bad(e.to_string()))?
            .into_no_null_iter()
            .collect())
    }

    pub(crate) fn bools(&self, name: &str) -> Result<Vec<bool>> {
        Ok(self
            .column(name, DataType::Boolean)?
            .bool()
            .map_err(|e| self.bad(e.to_string()))?
            .iter()
            .map(|b| b.unwrap_or(false))
            .collect())
    }
}
