//! The crate's error type: every failure names what was wrong (the file and tensor for weights, the
//! argument and its shape for inputs) so a caller never has to guess.

use std::path::PathBuf;

/// Errors of loading the simulator, running its networks and stepping the environment.
#[derive(Debug, thiserror::Error)]
pub enum VtbError {
    /// The weights file could not be opened or parsed as safetensors.
    #[error("cannot read the Virtual Taobao weights {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: candle_core::Error,
    },
    /// A tensor the simulator needs is absent from the weights file.
    #[error("{path}: tensor `{name}` is missing (expected shape {expected:?})")]
    MissingTensor {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
    },
    /// A tensor of the weights file has the wrong shape.
    #[error("{path}: tensor `{name}` has shape {got:?}, expected {expected:?}")]
    TensorShape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// A tensor of the weights file holds NaN or infinite values.
    #[error("{path}: tensor `{name}` holds non-finite values")]
    NonFiniteWeights { path: PathBuf, name: String },
    /// An input tensor passed to a forward function has the wrong shape or dtype.
    #[error("{what}: expected {expected}, got shape {got:?} ({dtype})")]
    InputShape {
        what: &'static str,
        expected: String,
        got: Vec<usize>,
        dtype: String,
    },
    /// A flat input buffer has the wrong length.
    #[error("{what}: expected {expected} values, got {got}")]
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// An action passed to [`crate::VecEnv::step`] is NaN or infinite.
    #[error("action {index} of slot {slot} is not finite ({value})")]
    NonFiniteAction {
        slot: usize,
        index: usize,
        value: f32,
    },
    /// A categorical distribution could not be sampled because its logits are not finite.
    #[error("{what}: the logits are not finite (max {max}), cannot sample")]
    NonFiniteLogits { what: &'static str, max: f32 },
    /// An invalid argument or configuration (zero slots, zero episodes, ...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An error of candle while running a network.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, VtbError>;
