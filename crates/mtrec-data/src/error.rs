//! Errors of the data crate. Every variant that comes from user input names the file and, where there
//! is one, the line and the field, so that a user can open the file and see what is wrong.

use std::path::{Path, PathBuf};

/// Result alias of this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// Everything that can go wrong while reading raw logs or a prepared dataset.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An operating-system error on a file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A malformed record: `line` is 1-based; `field` names the column or key when it is known.
    #[error("{path}:{line}: {}{message}", field.as_ref().map(|f| format!("field '{f}': ")).unwrap_or_default())]
    Parse {
        path: PathBuf,
        line: u64,
        field: Option<String>,
        message: String,
    },
    /// A table (CSV, parquet) lacks a column the format needs.
    #[error("{path}: missing column '{column}' (columns present: {present})")]
    MissingColumn {
        path: PathBuf,
        column: String,
        present: String,
    },
    /// A record refers to an item that the item table of the same input does not define.
    #[error("{path}:{line}: field '{field}': unknown item '{item}' (not in {defined_in})")]
    UnknownItem {
        path: PathBuf,
        line: u64,
        field: String,
        item: String,
        defined_in: String,
    },
    /// A gzip file that cannot be decompressed.
    #[error("{path}: not a readable gzip file: {message}")]
    Gzip { path: PathBuf, message: String },
    /// An input or a result that has no rows.
    #[error("{what} is empty: {hint}")]
    Empty { what: String, hint: String },
    /// Inputs that do not fit the chosen format or each other.
    #[error("{0}")]
    Invalid(String),
    /// A prepared dataset on disk that is missing parts or is inconsistent.
    #[error("prepared dataset {path}: {message}")]
    Prepared { path: PathBuf, message: String },
    /// An error from polars that could not be tied to a line.
    #[error("{context}: {source}")]
    Polars {
        context: String,
        #[source]
        source: polars::error::PolarsError,
    },
}

impl DataError {
    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub(crate) fn parse(
        path: impl AsRef<Path>,
        line: u64,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        DataError::Parse {
            path: path.as_ref().to_path_buf(),
            line,
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }

    pub(crate) fn polars(context: impl Into<String>, source: polars::error::PolarsError) -> Self {
        DataError::Polars {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn prepared(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        DataError::Prepared {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }
}

/// Attach a context string to polars results.
pub(crate) trait PolarsContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> PolarsContext<T> for polars::error::PolarsResult<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| DataError::polars(context(), e))
    }
}
