//! The crate's error type: every function that takes user input returns `Result<_, EvalError>`.

/// Why a metric could not be computed. `what` names the metric or argument, so that a message like
/// `AUC: scores: NaN at index 17` says where to look.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// Two inputs that must be aligned element by element have different lengths.
    #[error("{what}: lengths differ ({expected} expected, {found} found)")]
    LengthMismatch {
        what: &'static str,
        expected: usize,
        found: usize,
    },

    /// An input that must hold at least one element is empty.
    #[error("{what}: empty input")]
    Empty { what: &'static str },

    /// A NaN where a number is needed.
    #[error("{what}: NaN at index {index}")]
    NaN { what: &'static str, index: usize },

    /// A label that is not 0/1 (or `false`/`true`).
    #[error("{what}: label {value} at index {index} is neither 0 nor 1")]
    InvalidLabel {
        what: &'static str,
        index: usize,
        value: f64,
    },

    /// A probability outside `[0, 1]`.
    #[error("{what}: probability {value} at index {index} is outside [0, 1]")]
    InvalidProbability {
        what: &'static str,
        index: usize,
        value: f64,
    },

    /// AUC needs at least one positive and one negative.
    #[error(
        "{what}: AUC is undefined without both classes ({positives} positives, {negatives} negatives)"
    )]
    SingleClass {
        what: &'static str,
        positives: usize,
        negatives: usize,
    },

    /// GAUC: no group has both classes, so no per-group AUC exists.
    #[error("GAUC: none of the {groups} groups has both a positive and a negative")]
    NoEligibleGroup { groups: usize },

    /// A parameter outside its domain (a level outside (0, 1), a negative cap offset, ...).
    #[error("invalid parameter {name} = {value}: {reason}")]
    InvalidParameter {
        name: &'static str,
        value: f64,
        reason: &'static str,
    },

    /// NCIS: a trajectory without any positive step (a user with a single review has no sample).
    #[error("NCIS: trajectory {user} has no positive step (users with fewer than two reviews have no samples; leave them out)")]
    EmptyTrajectory { user: usize },

    /// NCIS: a NaN logit.
    #[error("NCIS: trajectory {user}: NaN {kind} logit at step {step}")]
    NaNLogit {
        user: usize,
        step: usize,
        kind: &'static str,
    },

    /// NCIS with negatives: a trajectory lacks the negative logits, or has not one per positive step.
    #[error("NCIS: trajectory {user}: {found} negative logits for {expected} positive steps (with_negatives needs one per step)")]
    NegativesMismatch {
        user: usize,
        expected: usize,
        found: usize,
    },

    /// ΔNCIS: the trained and the initial model were not evaluated on the same trajectories.
    #[error("ΔNCIS: trajectory {user} has {trained} steps for the trained model but {init} for the initial one")]
    TrajectoryMismatch {
        user: usize,
        trained: usize,
        init: usize,
    },

    /// NCIS: every importance weight is zero (every trajectory has a step with probability 0).
    #[error("NCIS: every trajectory has probability zero (a logit of -inf in each)")]
    ZeroWeights,

    /// Fewer values than the statistic needs (a t-interval needs two).
    #[error("{what}: needs at least {needed} values, found {found}")]
    TooFewValues {
        what: &'static str,
        needed: usize,
        found: usize,
    },

    /// Bootstrap: the statistic is undefined on the original sample, or on every resample.
    #[error("bootstrap: the statistic is undefined {on}")]
    UndefinedStatistic { on: &'static str },
}

/// Shorthand for `Result<T, EvalError>`.
pub type Result<T> = std::result::Result<T, EvalError>;
