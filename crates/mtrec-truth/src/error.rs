//! Errors of the ground-truth metrics: they name the file and column, or the user and step, at fault.

use std::path::{Path, PathBuf};

/// Result alias of this crate.
pub type Result<T, E = TruthError> = std::result::Result<T, E>;

/// Everything that can go wrong while loading a world's truth or scoring a model against it.
#[derive(Debug, thiserror::Error)]
pub enum TruthError {
    /// A file of the world folder is missing, unreadable or not what the simulator writes.
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    /// The prepared dataset is not the log of this world.
    #[error("the dataset is not this world's log: {0} (prepare <world>/interactions.csv with `mtrec prepare --format csv`)")]
    Mismatch(String),
    /// A setting or a model that the metrics cannot use.
    #[error("{0}")]
    Invalid(String),
    #[error("model: {}", mtrec_train::candle_message(.0))]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Train(#[from] mtrec_train::TrainError),
    #[error(transparent)]
    Reward(#[from] mtrec_reward::RewardError),
    #[error(transparent)]
    Data(#[from] mtrec_data::DataError),
}

impl TruthError {
    pub(crate) fn file(path: &Path, message: impl Into<String>) -> Self {
        TruthError::File {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}
