//! Errors of the simulator: they name the preset, the parameter or the file concerned.

use std::path::{Path, PathBuf};

/// Result alias of this crate.
pub type Result<T, E = SynthError> = std::result::Result<T, E>;

/// Everything that can go wrong while building or writing a world.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// A preset name that does not exist.
    #[error("unknown preset '{name}' (valid presets: {valid})")]
    UnknownPreset { name: String, valid: String },
    /// Sizes or constants that do not describe a world that can be simulated.
    #[error("invalid world configuration: {0}")]
    Config(String),
    /// The stop hazard could not be calibrated to the requested mean length.
    #[error("calibration failed: {0}")]
    Calibration(String),
    /// The output folder exists and replacing it was not asked for.
    #[error("{} already exists (pass --force to replace it)", path.display())]
    Exists { path: PathBuf },
    /// An operating-system error on a file.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An error from polars while building or writing a table.
    #[error("{context}: {source}")]
    Polars {
        context: String,
        #[source]
        source: polars::error::PolarsError,
    },
    /// An error of the data crate (staging folder).
    #[error(transparent)]
    Data(#[from] mtrec_data::DataError),
}

impl SynthError {
    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        SynthError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
}

/// Attach a context string to polars results.
pub(crate) trait PolarsContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> PolarsContext<T> for polars::error::PolarsResult<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| SynthError::Polars {
            context: context(),
            source,
        })
    }
}
