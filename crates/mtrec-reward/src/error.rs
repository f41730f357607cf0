//! Errors of reward fitting, patching and inspection; each names the file, step or setting at fault.

use std::path::PathBuf;

pub type Result<T, E = RewardError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum RewardError {
    /// A setting out of its domain.
    #[error("invalid reward settings: {0}")]
    Config(String),
    /// A YAML file that does not parse into the settings it should hold.
    #[error("{path}: {message}")]
    Yaml { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The Q objective became NaN or infinite: the fit stops rather than write garbage rewards.
    #[error("non-finite {kind} loss at step {step}: {loss} (aux {aux}); try a lower lr")]
    NonFinite {
        kind: &'static str,
        step: u64,
        loss: f64,
        aux: f64,
    },
    /// A run folder or checkpoint that cannot be used as asked.
    #[error("run folder {path}: {message}")]
    Run { path: PathBuf, message: String },
    /// A rewards file that cannot be read for inspection.
    #[error("rewards file {path}: {message}")]
    Rewards { path: PathBuf, message: String },
    #[error("model '{model}': {message}")]
    Model { model: String, message: String },
    #[error("{0}")]
    Empty(String),
    #[error(transparent)]
    Data(#[from] mtrec_data::DataError),
    #[error(transparent)]
    Train(#[from] mtrec_train::TrainError),
    #[error("metrics: {0}")]
    Eval(#[from] mtrec_eval::EvalError),
    #[error("tensor error: {}", mtrec_train::candle_message(.0))]
    Candle(#[from] candle_core::Error),
}
