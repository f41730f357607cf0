//! Errors of the trainer. Every variant that comes from user input names the file, the sample or
//! the setting, so that the user can see what to change.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

/// Everything that can go wrong while training or evaluating a recommender.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A training setting out of its domain, or settings that contradict each other.
    #[error("invalid training settings: {0}")]
    Config(String),
    /// A YAML file that does not parse into the settings it should hold.
    #[error("{path}: {message}")]
    Yaml { path: PathBuf, message: String },
    /// An operating-system error on a file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A rewards file that cannot be used (missing column, bad value, unknown sample).
    #[error("rewards file {path}: {message}")]
    Rewards { path: PathBuf, message: String },
    /// A training sample without a reward: the alignment loss needs `r*(s,P)` and `r*(s,N)` for
    /// every training sample.
    #[error(
        "rewards file {path}: no reward for training sample (user {user}, step {step}, positive {positive}); \
         {missing} training sample(s) missing in all (the file must hold every training sample's r_pos and r_neg)"
    )]
    MissingReward {
        path: PathBuf,
        user: u32,
        step: u32,
        positive: bool,
        missing: usize,
    },
    /// The loss became NaN or infinite: training stops rather than write garbage weights.
    #[error(
        "non-finite loss at epoch {epoch}, step {step} of the epoch (global step {global_step}): \
         loss {loss}, bce {bce}, align {align} (kappa {kappa}), aux {aux}{hint}"
    )]
    NonFinite {
        epoch: usize,
        step: usize,
        global_step: u64,
        loss: f64,
        bce: f64,
        align: f64,
        kappa: f64,
        aux: f64,
        hint: String,
    },
    /// A checkpoint that is missing, incomplete or does not belong to this run.
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    /// A run folder that cannot be used as asked (holds another run, has no checkpoint, ...).
    #[error("run folder {path}: {message}")]
    Run { path: PathBuf, message: String },
    /// Building the model failed.
    #[error("model '{model}': {message}")]
    Model { model: String, message: String },
    /// The dataset has no sample where one is needed.
    #[error("{0}")]
    Empty(String),
    /// An error of the data crate (prepared dataset, atomic writes).
    #[error(transparent)]
    Data(#[from] mtrec_data::DataError),
    /// An error of a metric.
    #[error("metrics: {0}")]
    Eval(#[from] mtrec_eval::EvalError),
    /// A tensor error (shapes, devices); a bug or an out-of-memory rather than bad input.
    #[error("tensor error: {}", candle_message(.0))]
    Candle(#[from] candle_core::Error),
}

/// A candle error's message without the backtrace candle attaches when `RUST_BACKTRACE` is set.
pub fn candle_message(e: &candle_core::Error) -> String {
    use candle_core::Error;
    match e {
        Error::WithBacktrace { inner, .. } => candle_message(inner),
        Error::Context { inner, context } => format!("{context}: {}", candle_message(inner)),
        Error::WithPath { inner, path } => format!("{}: {}", path.display(), candle_message(inner)),
        e => e.to_string(),
    }
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        TrainError::Checkpoint {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn rewards(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        TrainError::Rewards {
            path: path.into(),
            message: message.into(),
        }
    }
}
