//! # mtrec-synth
//!
//! A simulated recommendation world whose users feel a **known** mental reward. The MTRec paper
//! (Zhao et al., NeurIPS 2025, §5.3) can only judge learned mental rewards indirectly, since nobody
//! knows how satisfied real users were; here the satisfaction of every engagement is recorded. The
//! log looks like an Amazon 2014 5-core review file (only the sequence of engaged items, with times
//! and categories), so `mtrec prepare --format csv` and the MDP of `specs/method.md` §6–§7 apply
//! unchanged, and a reward model learned from it can be scored against the truth.
//!
//! ```no_run
//! use mtrec_synth::{SynthConfig, World};
//! let cfg = SynthConfig::preset("electronics-small", 1234)?;
//! let world = World::generate(&cfg)?;                 // deterministic in (preset, seed, params)
//! world.write("data/generated/synth-es".as_ref(), false)?;
//! print!("{}", world.summary());
//! # Ok::<(), mtrec_synth::SynthError>(())
//! ```
//!
//! ## The model
//!
//! **Catalogue.** `C` categories; the category of popularity rank `k` has exposure weight
//! `(k+1)^-1` (Zipf, [`Params::category_zipf`] = 1: a few big categories and a long tail, as Amazon's
//! leaf categories), ranks shuffled over the ids. Each category gets one item, the other items go to
//! categories in proportion to their weight (so an item's exposure does not depend on its category's
//! size). An item has a **quality** `q ~ N(0,1)`, an independent **appeal** `a ~ N(0,1)` (a click-bait
//! headline: appeal makes her click, quality makes her glad she did) and an exposure weight within its
//! category `exp(1.0·z)`, `z ~ N(0,1)` ([`Params::item_popularity_sigma`] = 1: log-normal, a moderate
//! head, so most items are shown now and then).
//!
//! **Users.** `1 + Poisson(1)` favourite categories, at most 5 ([`Params::extra_favourites_mean`],
//! [`Params::max_favourites`]: most people have one to three interests), drawn by category popularity,
//! with taste weights `w ~ Dirichlet(1)` ([`Params::taste_concentration`]: flat over the simplex, so one
//! favourite often dominates). Her *interest* in a favourite starts at `w`, in any other category at
//! 0.03 ([`Params::background_interest`]: in the choice, such a category weighs 10 to 30 times less
//! than a favourite of weight 0.3 to 1, yet it is not out of reach). Her
//! static *taste match* with category `c` is `ln(1 + K·w_c) / ln 2` (1 for an average favourite of
//! `K`, 0 outside them). A frailty `g ~ Gamma(2, 1/2)` (mean 1, [`Params::activity_shape`]) scales
//! her stop hazard and the gaps between her engagements: sequence lengths become a mixture of
//! geometric laws with Gamma-distributed rates, whose tail is a power law of index 2 — the heavy
//! tail of review counts (a few users review hundreds of items) — and active users engage often and
//! long.
//!
//! **Exposure and choice (each step).** A slate of 10 distinct unseen items ([`Params::slate_size`]);
//! each slot's category comes from her current interests with probability 0.5, else from global
//! category popularity ([`Params::taste_exposure`]: half personalised, half popular), and the item from
//! the category by exposure weight. She engages with one: a draw from
//! `softmax(1.5·a + 1.0·ln interest[c])` ([`Params::beta_appeal`], [`Params::beta_taste`]; written as
//! Gumbel-max). Quality is not in the choice: she cannot see it before engaging. She never engages an
//! item twice (Amazon reviews are one per user and item).
//!
//! **Onboarding.** Item `j` is the *first* engagement of the `j`-th user of a seeded permutation (which
//! is why a world needs at least as many users as items). Every item is therefore in the log, and a
//! prepared dataset has exactly the preset's item and category counts, as a 5-core file where every
//! item has reviews. The first engagement is only history in the MDP (samples start at step 2,
//! `specs/method.md` §6.4), never a choice a model learns, so no learnable step is forced. Onboarding
//! engagements are flagged in `rewards.parquet`.
//!
//! **Mental reward (never logged).** After engaging item `(q, c)` at 0-based step `t`, with taste
//! match `m` and fatigue `f(t) = 0.8·t/(t + 5)` ([`Params::fatigue_scale`],
//! [`Params::fatigue_steps`]: a wear that is steep over the first ten steps, as the paper's Fig. 3a
//! reads, and then levels off, so that heavy users can exist), she is *satisfied* with probability
//! `σ(0.3 + 1.2·q + 1.5·(m − 0.5) − f(t))` ([`Params::satisfaction_bias`],
//! [`Params::satisfaction_quality`], [`Params::satisfaction_taste`]: for an average item, about 3 in 4
//! in a favourite category and 2 in 5 outside them; about two engagements in three satisfy overall;
//! quality and taste both matter), and her reward is
//! `r = (satisfied ? +1 : −1) + 0.3·q + 0.2·(m − 0.5) − 0.5·f(t) + 0.3·ε`, `ε ~ N(0,1)`
//! ([`Params::reward_satisfied`], [`Params::reward_disappointed`], [`Params::reward_quality`],
//! [`Params::reward_taste`], [`Params::fatigue_in_reward`], [`Params::reward_noise`]). So the reward is
//! **bimodal** (modes 2 apart, spread 0.3 plus the shifts) and skewed by the unequal mixture — the
//! kind of distribution a distributional (quantile) reward model is for. Appeal plays no part: a
//! click-bait item is engaged often and disappoints as often as any other.
//! `rewards.parquet` also gives the expectation over the satisfaction draw and the noise.
//!
//! **O1: the reward reshapes her interests.** `interest[c] ← clamp(interest[c]·exp(0.6·r), 0.005, 5)`
//! ([`Params::interest_rate`], [`Params::interest_min`], [`Params::interest_max`]): a disappointment
//! (`r ≈ −1`) roughly halves her interest in the category, a satisfaction nearly doubles it, which
//! changes both the slates she is shown and her choice; a category met outside her favourites starts
//! from the background interest.
//!
//! **O2: the reward keeps her going.** Her mood is `M ← 0.5·M + 0.5·r` ([`Params::mood_memory`]: the
//! last two or three engagements count). After her 5th engagement ([`Params::min_length`], the 5-core
//! condition), after each engagement she stops with probability `min(1, h₀·g·exp(−2.0·M))`
//! ([`Params::stop_sensitivity`]: a satisfied mood (+1) makes stopping 7.4 times less likely than a
//! neutral one, a disappointed one 7.4 times more; weaker values leave the link between a user's
//! rewards and her length buried under fatigue, which lowers long users' mean reward).
//! Sequences are capped at 2,000 engagements and half the catalogue ([`Params::max_length`]).
//!
//! **Calendar.** Her first engagement is uniform over 2010–2013 ([`Params::start_unix`],
//! [`Params::start_window_days`]), then gaps `max(60 s, Exp · 15 days · g)` ([`Params::mean_gap_days`],
//! [`Params::min_gap_seconds`]): times are unix seconds, strictly increasing per user.
//!
//! **Exact counts.** The base hazard `h₀` is calibrated so that the mean length is the preset's: the
//! first [`Params::pilot_users`] = 40,000 users (all of them in small worlds) are simulated for a
//! candidate `h₀`, and a secant/bisection search finds it; each user draws the same random numbers
//! whatever `h₀`, so her length can only fall as `h₀` rises. For a pilot smaller than the world, `h₀`
//! aims a little above the total (0.2% plus three standard errors of the pilot's mean), and then the
//! globally latest engagements beyond each user's 5th are *censored*, as the end of a crawl would, until
//! the log holds exactly the preset's number. When the pilot is everyone, the search stops just above
//! the total (0.03% to 0.7% above in the presets) and that excess is censored the same way. `world.json` records `h₀`, the
//! margin and what was censored; `users.parquet` which users lost engagements.
//!
//! **Determinism.** Catalogue, onboarding and each user have their own ChaCha8 stream of the seed
//! (users: stream `u`; the others: streams `2^63`, `2^63 + 1`), users are simulated in parallel and
//! collected in order, and sums run in user order: the world, and every byte written, depends on the
//! preset, the seed and the parameters only, not on the number of threads.
//!
//! ## Presets
//!
//! | preset | users | items | categories | engagements | mean |
//! |---|---|---|---|---|---|
//! | `tiny` | 200 | 120 | 10 | 1,756 | 8.78 |
//! | `electronics-small` | 4,000 | 1,310 | 40 | 35,118 | 8.78 |
//! | `books-small` | 4,000 | 2,438 | 80 | 58,960 | 14.74 |
//! | `electronics-like` | 192,403 | 63,001 | 801 | 1,689,188 | 8.78 |
//! | `books-like` | 603,668 | 367,982 | 1,600 | 8,898,041 | 14.74 |
//!
//! The `-like` presets have the counts of the Amazon 2014 5-core Electronics and Books files (Table 2
//! of the paper, `specs/method.md` §6.1); the `-small` ones keep their mean length and items per user.
//!
//! ## Output folder
//!
//! See [`files`]: `interactions.csv` (`user_id,item_id,timestamp,category`: `mtrec prepare --format
//! csv` reads it with its default column names), `items.parquet`, `users.parquet`,
//! `categories.parquet`, `rewards.parquet` and `world.json`. Ids are the integers `1..n`, which
//! `prepare` keeps (it numbers integer keys numerically), so the ground truth joins a prepared dataset
//! on user, item, category and step directly.

pub mod config;
pub mod error;
pub mod output;
pub mod world;

pub use config::{Params, SynthConfig, DEFAULT_SEED, PRESETS};
pub use error::{Result, SynthError};
pub use output::{files, synthesize, write_world, Summary, MODEL_VERSION};
pub use world::{
    taste_match, user_favourites, Calibration, Engagement, Item, RewardModel, UserTruth, World,
};
