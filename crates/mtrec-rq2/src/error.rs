//! Errors of the RQ2 experiment.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Rq2Error {
    /// A setting out of range or unknown.
    #[error("{0}")]
    Config(String),
    /// Expert data or a curve that cannot be used.
    #[error("{0}")]
    Data(String),
    /// A non-finite loss or a failed update.
    #[error("{0}")]
    Training(String),
    #[error("simulator: {0}")]
    Env(String),
    #[error("reinforcement learning: {0}")]
    Rl(String),
    #[error("tensor: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("optimiser: {0}")]
    Train(#[from] mtrec_train::TrainError),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T, E = Rq2Error> = std::result::Result<T, E>;
