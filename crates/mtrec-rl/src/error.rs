//! Errors of the RL trainers. A variant that comes from the caller's side (settings, environment,
//! reward hook, files) says which setting, which step or which file, so the cause can be found
//! without a debugger.

use std::path::PathBuf;

/// The error type environments and reward hooks return: any error, boxed, so that an adapter
/// (the Virtual Taobao simulator, a candle reward model) can pass its own errors through without
/// this crate knowing them.
pub type EnvError = Box<dyn std::error::Error + Send + Sync>;

/// Result alias of this crate.
pub type Result<T, E = RlError> = std::result::Result<T, E>;

/// Everything that can go wrong while training or evaluating a policy.
#[derive(Debug, thiserror::Error)]
pub enum RlError {
    /// A setting out of its domain, or settings that contradict each other (or the environment).
    #[error("invalid {algo} settings: {message}")]
    Config { algo: &'static str, message: String },
    /// `Env::step` or `Env::reset` failed.
    #[error("environment failed at env step {env_steps}: {source}")]
    Env {
        env_steps: u64,
        #[source]
        source: EnvError,
    },
    /// The environment broke the [`crate::Env`] contract (wrong lengths, non-finite reward ...).
    #[error("environment contract broken at env step {env_steps}: {message}")]
    EnvContract { env_steps: u64, message: String },
    /// The reward hook failed or returned something unusable.
    #[error("reward hook failed at env step {env_steps}: {source}")]
    Hook {
        env_steps: u64,
        #[source]
        source: EnvError,
    },
    /// A training-curve callback asked to stop with an error.
    #[error("callback failed at env step {env_steps}: {source}")]
    Callback {
        env_steps: u64,
        #[source]
        source: EnvError,
    },
    /// A loss became NaN or infinite: training stops rather than write garbage weights.
    #[error(
        "{algo}: non-finite {what} ({value}) at update {update} (env step {env_steps}); \
         check the rewards (scale), the observations and the learning rate"
    )]
    NonFinite {
        algo: &'static str,
        what: String,
        value: f64,
        update: u64,
        env_steps: u64,
    },
    /// A weights file that cannot be written or read, or that belongs to another model.
    #[error("weights file {path}: {message}")]
    Weights { path: PathBuf, message: String },
    /// Observations or actions of the wrong size passed to a policy.
    #[error("shape error: {0}")]
    Shape(String),
    /// A tensor operation failed.
    #[error("tensor error: {}", mtrec_train::candle_message(.0))]
    Candle(#[from] candle_core::Error),
    /// The optimiser failed.
    #[error(transparent)]
    Train(#[from] mtrec_train::TrainError),
}

impl RlError {
    pub(crate) fn config(algo: &'static str, message: impl Into<String>) -> Self {
        RlError::Config {
            algo,
            message: message.into(),
        }
    }
}
