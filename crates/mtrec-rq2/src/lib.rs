//! MTRec's RQ2 (paper §5.2, Eq. 11–12, Figure 2): reinforcement-learning recommenders on the
//! Virtual Taobao simulator, trained with and without the QR-IQL mental reward.

pub mod error;
pub mod experiment;
pub mod expert;
pub mod hook;
pub mod mental;
pub mod report;
pub mod vtb;

pub use error::{Result, Rq2Error};
pub use experiment::{run_fig2, Fig2Config, Fig2Outcome, Progress, Quiet, RunRecord};
pub use expert::{collect_expert, search_constant_action, CemConfig, ExpertConfig, ExpertStats};
pub use hook::MentalHook;
pub use mental::{
    fit_mental, fit_mental_with_progress, MentalConfig, MentalFit, MentalReward, Transitions,
};
pub use report::{bands, Band, Curve, EvalPoint};
pub use vtb::VtbEnv;
