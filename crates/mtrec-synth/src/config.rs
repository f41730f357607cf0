//! What to simulate: the size of the world ([`SynthConfig`], from a named preset) and the constants of
//! the behaviour model ([`Params`]). Every constant is explained in the crate documentation; the field
//! docs here say what each one controls.

use serde::{Deserialize, Serialize};

use crate::error::{Result, SynthError};

/// Names of the presets, in the order `mtrec synth --help` and errors list them.
pub const PRESETS: [&str; 5] = [
    "tiny",
    "electronics-small",
    "books-small",
    "electronics-like",
    "books-like",
];

/// Default seed of `mtrec synth` (DIN's scripts use 1234 too; any value gives another world).
pub const DEFAULT_SEED: u64 = 1234;

/// The constants of the behaviour model. [`Params::default`] is the documented model; tests turn single
/// mechanisms off (for example `interest_rate = 0` removes O1) to show that each one does what it says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    // --- Catalogue -----------------------------------------------------------------------------
    /// Exposure weight of the category of popularity rank `k` (0-based) is `(k + 1)^-category_zipf`.
    pub category_zipf: f64,
    /// Within a category, an item's exposure weight is `exp(item_popularity_sigma * z)`, `z ~ N(0, 1)`.
    pub item_popularity_sigma: f64,

    // --- Users ---------------------------------------------------------------------------------
    /// Favourite categories per user: `1 + Poisson(extra_favourites_mean)`, at most `max_favourites`.
    pub extra_favourites_mean: f64,
    /// Upper bound on the number of favourite categories of a user.
    pub max_favourites: usize,
    /// Dirichlet concentration of the taste weights over the favourite categories.
    pub taste_concentration: f64,
    /// Starting interest in every category that is not a favourite (favourites start at their weight).
    pub background_interest: f64,
    /// Shape `k` of the Gamma(k, 1/k) frailty that scales a user's stop hazard and time gaps; also the
    /// tail index of the sequence-length distribution (lower = heavier tail).
    pub activity_shape: f64,

    // --- Exposure and choice -------------------------------------------------------------------
    /// Candidate items shown at each step.
    pub slate_size: usize,
    /// Share of slate slots whose category is drawn from the user's current interests (the rest follow
    /// global category popularity).
    pub taste_exposure: f64,
    /// Weight of an item's appeal in the choice utility.
    pub beta_appeal: f64,
    /// Weight of `ln interest[category]` in the choice utility.
    pub beta_taste: f64,

    // --- Mental reward -------------------------------------------------------------------------
    /// Satisfaction index `z = bias + quality_w * q + taste_w * (taste - 0.5) - fatigue(t)`;
    /// `P(satisfied) = sigmoid(z)`. This is `bias`.
    pub satisfaction_bias: f64,
    /// Weight of item quality in the satisfaction index.
    pub satisfaction_quality: f64,
    /// Weight of the user's (static) taste match in the satisfaction index.
    pub satisfaction_taste: f64,
    /// Centre of the reward of a satisfying engagement.
    pub reward_satisfied: f64,
    /// Centre of the reward of a disappointing engagement.
    pub reward_disappointed: f64,
    /// Quality shifts the reward within its mode by `reward_quality * q`.
    pub reward_quality: f64,
    /// Taste match shifts the reward within its mode by `reward_taste * (taste - 0.5)`.
    pub reward_taste: f64,
    /// Standard deviation of the Gaussian noise of a reward within its mode.
    pub reward_noise: f64,
    /// Fatigue at 0-based step `t`: `fatigue_scale * t / (t + fatigue_steps)` (it saturates at
    /// `fatigue_scale`).
    pub fatigue_scale: f64,
    /// Step at which fatigue reaches half its ceiling.
    pub fatigue_steps: f64,
    /// Share of the fatigue that also lowers the reward value directly (all of it lowers `z`).
    pub fatigue_in_reward: f64,

    // --- O1: reward reshapes interest ----------------------------------------------------------
    /// After a reward `r` in category `c`: `interest[c] *= exp(interest_rate * r)`.
    pub interest_rate: f64,
    /// Lower clamp of an interest.
    pub interest_min: f64,
    /// Upper clamp of an interest.
    pub interest_max: f64,

    // --- O2: reward keeps the user going -------------------------------------------------------
    /// Every user engages at least this many times (the 5-core condition).
    pub min_length: usize,
    /// Mood `m <- mood_memory * m + (1 - mood_memory) * r` (the first reward sets it).
    pub mood_memory: f64,
    /// Stop hazard after each engagement beyond `min_length`:
    /// `min(1, base_hazard * frailty * exp(-stop_sensitivity * mood))`.
    pub stop_sensitivity: f64,
    /// Longest sequence (also capped at half the catalogue).
    pub max_length: usize,

    // --- Calendar ------------------------------------------------------------------------------
    /// Earliest first engagement, unix seconds (2010-01-01 UTC).
    pub start_unix: i64,
    /// Users' first engagements are uniform over this many days.
    pub start_window_days: f64,
    /// Mean gap between two engagements of a user of frailty 1, in days (scaled by the frailty).
    pub mean_gap_days: f64,
    /// Shortest gap between two engagements of a user, in seconds.
    pub min_gap_seconds: i64,

    // --- Calibration of the base stop hazard ---------------------------------------------------
    /// Users simulated to calibrate the base hazard (all users when there are fewer).
    pub pilot_users: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            category_zipf: 1.0,
            item_popularity_sigma: 1.0,
            extra_favourites_mean: 1.0,
            max_favourites: 5,
            taste_concentration: 1.0,
            background_interest: 0.03,
            activity_shape: 2.0,
            slate_size: 10,
            taste_exposure: 0.5,
            beta_appeal: 1.5,
            beta_taste: 1.0,
            satisfaction_bias: 0.3,
            satisfaction_quality: 1.2,
            satisfaction_taste: 1.5,
            reward_satisfied: 1.0,
            reward_disappointed: -1.0,
            reward_quality: 0.3,
            reward_taste: 0.2,
            reward_noise: 0.3,
            fatigue_scale: 0.8,
            fatigue_steps: 5.0,
            fatigue_in_reward: 0.5,
            interest_rate: 0.6,
            interest_min: 0.005,
            interest_max: 5.0,
            min_length: 5,
            mood_memory: 0.5,
            stop_sensitivity: 2.0,
            max_length: 2000,
            start_unix: 1_262_304_000,
            start_window_days: 1461.0,
            mean_gap_days: 15.0,
            min_gap_seconds: 60,
            pilot_users: 40_000,
        }
    }
}

/// The size of a world, its seed and its behaviour constants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthConfig {
    /// The preset name (or a free label for a hand-made configuration).
    pub preset: String,
    pub seed: u64,
    /// Users; every one is in the log with at least `params.min_length` engagements.
    pub users: usize,
    /// Catalogue size; every item is engaged at least once (see the crate docs, "onboarding").
    pub items: usize,
    /// Categories; every one holds at least one item.
    pub categories: usize,
    /// Logged engagements in total, exactly.
    pub engagements: u64,
    pub params: Params,
}

impl SynthConfig {
    /// The named preset with `seed`; an unknown name lists the valid ones.
    pub fn preset(name: &str, seed: u64) -> Result<Self> {
        // (users, items, categories, engagements)
        let (users, items, categories, engagements) = match name {
            // For tests: a couple of thousand engagements, Electronics' mean length.
            "tiny" => (200, 120, 10, 1_756),
            // A few thousand users with Electronics' shape: items per user as in the real 5-core file
            // (63,001 / 192,403), the same mean length (8.78), 40 categories.
            "electronics-small" => (4_000, 1_310, 40, 35_118),
            // Books' shape: items per user 367,982 / 603,668, mean length 14.74, twice the categories
            // of electronics-small (the full files have 1,600 vs 801).
            "books-small" => (4_000, 2_438, 80, 58_960),
            // Table 2 of the paper and specs/method.md §6.1: the Amazon 2014 5-core counts.
            "electronics-like" => (192_403, 63_001, 801, 1_689_188),
            "books-like" => (603_668, 367_982, 1_600, 8_898_041),
            other => {
                return Err(SynthError::UnknownPreset {
                    name: other.to_owned(),
                    valid: PRESETS.join(", "),
                })
            }
        };
        Ok(SynthConfig {
            preset: name.to_owned(),
            seed,
            users,
            items,
            categories,
            engagements,
            params: Params::default(),
        })
    }

    /// Mean engagements per user that the world is calibrated to.
    pub fn mean_length(&self) -> f64 {
        self.engagements as f64 / self.users as f64
    }

    /// The longest sequence a user may have: `max_length`, and at most half the catalogue so that a
    /// user always finds unseen items quickly.
    pub fn length_cap(&self) -> usize {
        self.params.max_length.min(self.items / 2)
    }

    /// Checks that the sizes and constants describe a world that can be simulated.
    pub fn validate(&self) -> Result<()> {
        let p = &self.params;
        let bad = |m: String| Err(SynthError::Config(m));
        if self.users == 0 || self.categories == 0 {
            return bad("need at least one user and one category".into());
        }
        if self.users > u32::MAX as usize - 1 || self.items > u32::MAX as usize - 1 {
            return bad("too many users or items for 32-bit ids".into());
        }
        if self.items < self.categories {
            return bad(format!(
                "{} items cannot fill {} categories (each category holds at least one item)",
                self.items, self.categories
            ));
        }
        if self.items > self.users {
            return bad(format!(
                "{} items but only {} users: every item is the onboarding item of a distinct user, so \
                 items must not outnumber users",
                self.items, self.users
            ));
        }
        if p.min_length == 0 || self.length_cap() < p.min_length {
            return bad(format!(
                "the length cap {} (max_length, and half of {} items) is below min_length {}",
                self.length_cap(),
                self.items,
                p.min_length
            ));
        }
        let min_total = (self.users * p.min_length) as u64;
        if self.engagements <= min_total {
            return bad(format!(
                "{} engagements for {} users: need more than {} (min_length {} each) so that \
                 stopping is behaviour, not a constant",
                self.engagements, self.users, min_total, p.min_length
            ));
        }
        if self.mean_length() > self.length_cap() as f64 / 2.0 {
            return bad(format!(
                "mean length {:.2} is too close to the length cap {}",
                self.mean_length(),
                self.length_cap()
            ));
        }
        if p.slate_size == 0 || p.pilot_users == 0 {
            return bad("slate_size and pilot_users must be at least 1".into());
        }
        for (name, v) in [
            ("taste_exposure", p.taste_exposure),
            ("mood_memory", p.mood_memory),
            ("fatigue_in_reward", p.fatigue_in_reward),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(format!("{name} must be in [0, 1], got {v}"));
            }
        }
        for (name, v) in [
            ("taste_concentration", p.taste_concentration),
            ("background_interest", p.background_interest),
            ("activity_shape", p.activity_shape),
            ("interest_min", p.interest_min),
            ("fatigue_steps", p.fatigue_steps),
            ("start_window_days", p.start_window_days),
            ("mean_gap_days", p.mean_gap_days),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(format!("{name} must be positive, got {v}"));
            }
        }
        if p.interest_max < p.interest_min {
            return bad("interest_max must not be below interest_min".into());
        }
        if p.max_favourites == 0 || p.extra_favourites_mean < 0.0 || p.min_gap_seconds < 1 {
            return bad(
                "max_favourites and min_gap_seconds must be at least 1, extra_favourites_mean >= 0"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_carry_the_table_2_counts() {
        let e = SynthConfig::preset("electronics-like", 1).unwrap();
        assert_eq!(
            (e.users, e.items, e.categories, e.engagements),
            (192_403, 63_001, 801, 1_689_188)
        );
        assert!((e.mean_length() - 8.78).abs() < 0.005);
        let b = SynthConfig::preset("books-like", 1).unwrap();
        assert_eq!(
            (b.users, b.items, b.categories, b.engagements),
            (603_668, 367_982, 1_600, 8_898_041)
        );
        assert!((b.mean_length() - 14.74).abs() < 0.005);
        // The small presets keep the shape: the mean length and the items-per-user ratio.
        let es = SynthConfig::preset("electronics-small", 1).unwrap();
        assert!((es.mean_length() - e.mean_length()).abs() < 0.001);
        let ratio = |c: &SynthConfig| c.items as f64 / c.users as f64;
        assert!((ratio(&es) - ratio(&e)).abs() < 0.001);
        let bs = SynthConfig::preset("books-small", 1).unwrap();
        assert!((bs.mean_length() - b.mean_length()).abs() < 0.001);
        assert!((ratio(&bs) - ratio(&b)).abs() < 0.001);
        for name in PRESETS {
            SynthConfig::preset(name, 1).unwrap().validate().unwrap();
        }
    }

    #[test]
    fn unknown_preset_lists_the_valid_ones() {
        let err = SynthConfig::preset("electronic", 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("'electronic'"), "{err}");
        for name in PRESETS {
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn impossible_worlds_are_refused() {
        let mut c = SynthConfig::preset("tiny", 1).unwrap();
        c.engagements = 1_000; // = 200 users x 5
        assert!(c.validate().unwrap_err().to_string().contains("min_length"));
        let mut c = SynthConfig::preset("tiny", 1).unwrap();
        c.items = 500;
        assert!(c.validate().unwrap_err().to_string().contains("onboarding"));
        let mut c = SynthConfig::preset("tiny", 1).unwrap();
        c.params.taste_exposure = 1.5;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("taste_exposure"));
    }
}
