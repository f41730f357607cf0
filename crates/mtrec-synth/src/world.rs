//! The simulation: the catalogue, the users' hidden traits, one trajectory per user (slate, choice,
//! mental reward, interest update, stop), the calibration of the base stop hazard, and the censoring
//! that makes the log's total exact. The model and its constants are described in the crate docs.

use indicatif::ProgressBar;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp1, Gamma, Poisson, StandardNormal};
use rayon::prelude::*;
use serde::Serialize;

use crate::config::{Params, SynthConfig};
use crate::error::{Result, SynthError};

/// ChaCha8 stream of the catalogue (items, categories). Users use the streams 1..=users.
const STREAM_CATALOGUE: u64 = 1 << 63;
/// ChaCha8 stream of the onboarding permutation.
const STREAM_ONBOARDING: u64 = (1 << 63) + 1;
/// Draws per slate slot before the slot is left empty (the item was seen or already in the slate).
const SLOT_TRIES: usize = 8;
/// Evaluations of the pilot before calibration gives up.
const MAX_EVALUATIONS: usize = 60;
/// Relative excess of the pilot's total over its goal that ends the calibration.
const TOLERANCE: f64 = 0.001;
/// Full runs tried (each with twice the margin) before the total is declared unreachable.
const MAX_ATTEMPTS: usize = 4;
const SECONDS_PER_DAY: f64 = 86_400.0;

pub(crate) fn rng_for(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

fn shuffle<T>(v: &mut [T], rng: &mut ChaCha8Rng) {
    // Fisher-Yates written out, so the permutation depends only on the ChaCha stream.
    for i in (1..v.len()).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
}

fn cumulative(weights: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut acc = 0.0;
    weights
        .into_iter()
        .map(|w| {
            acc += w;
            acc
        })
        .collect()
}

/// Index drawn with probability proportional to the increments of `cdf` (non-empty, increasing).
fn sample_cdf(cdf: &[f64], rng: &mut ChaCha8Rng) -> usize {
    let x = rng.random::<f64>() * cdf[cdf.len() - 1];
    cdf.partition_point(|&c| c <= x).min(cdf.len() - 1)
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// A user's static *taste match* with a favourite category of Dirichlet weight `weight`, among her
/// `favourites` favourites: `ln(1 + K·w) / ln 2` (1 for an average favourite, `w = 1/K`). Categories
/// outside her favourites match 0. Public so that ground-truth metrics (`mtrec-truth`) evaluate the
/// same expression as the simulator.
pub fn taste_match(favourites: usize, weight: f64) -> f64 {
    (1.0 + favourites as f64 * weight).ln() / std::f64::consts::LN_2
}

/// The deterministic part of the mental reward of one engagement (see the crate docs): what the
/// satisfaction draw and the noise are applied to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RewardModel {
    /// Fatigue `f(t)` at the engagement's 0-based step.
    pub fatigue: f64,
    /// Probability that she is satisfied.
    pub p_satisfied: f64,
    /// The shift added to either mode (quality, taste, fatigue), before the noise.
    pub shift: f64,
    /// The reward expected over the satisfaction draw and the noise.
    pub expected_reward: f64,
}

impl Params {
    /// Fatigue `f(t) = fatigue_scale · t / (t + fatigue_steps)` at 0-based step `t`.
    pub fn fatigue(&self, t: usize) -> f64 {
        self.fatigue_scale * t as f64 / (t as f64 + self.fatigue_steps)
    }

    /// The reward model of engaging an item of quality `quality` with taste match `taste_match`
    /// ([`taste_match`], 0 outside her favourites) at 0-based step `t`. The simulator draws every
    /// logged reward from it, so a counterfactual item gets exactly the expectation she would have had.
    pub fn reward_model(&self, quality: f64, taste_match: f64, t: usize) -> RewardModel {
        let taste = taste_match - 0.5;
        let fatigue = self.fatigue(t);
        let z = self.satisfaction_bias
            + self.satisfaction_quality * quality
            + self.satisfaction_taste * taste
            - fatigue;
        let p_sat = sigmoid(z);
        let shift = self.reward_quality * quality + self.reward_taste * taste
            - self.fatigue_in_reward * fatigue;
        let expected =
            p_sat * self.reward_satisfied + (1.0 - p_sat) * self.reward_disappointed + shift;
        RewardModel {
            fatigue,
            p_satisfied: p_sat,
            shift,
            expected_reward: expected,
        }
    }
}

/// An item of the catalogue, with its hidden attributes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Item {
    /// Category id, 1-based.
    pub category: u32,
    /// Latent quality `q ~ N(0, 1)`: drives the mental reward, invisible before engaging.
    pub quality: f64,
    /// Latent appeal `a ~ N(0, 1)`, independent of quality (a click-bait headline): drives the choice.
    pub appeal: f64,
    /// Exposure weight within its category (log-normal); says how often the platform shows it.
    pub popularity: f64,
}

/// The catalogue and the exposure samplers built on it.
#[derive(Debug, Clone)]
pub(crate) struct Catalogue {
    /// Item `id` is `items[id - 1]`.
    pub items: Vec<Item>,
    /// Exposure weight of category `id` is `category_weight[id - 1]` (Zipf over a shuffled rank).
    pub category_weight: Vec<f64>,
    category_cdf: Vec<f64>,
    /// Items of category `c` are `by_category[category_offsets[c - 1]..category_offsets[c]]`.
    category_offsets: Vec<usize>,
    by_category: Vec<u32>,
    /// Popularity of `by_category`, cumulated within each category.
    within_cdf: Vec<f64>,
    /// `onboarding_item[u - 1]`: the item user `u` engages first (0 = none: she chooses from a slate).
    onboarding_item: Vec<u32>,
    /// `onboarding_user[id - 1]`: the user whose first engagement item `id` is.
    pub onboarding_user: Vec<u32>,
}

impl Catalogue {
    pub fn new(cfg: &SynthConfig) -> Self {
        let p = &cfg.params;
        let mut rng = rng_for(cfg.seed, STREAM_CATALOGUE);
        let n_cat = cfg.categories;
        let mut by_rank: Vec<u32> = (1..=n_cat as u32).collect();
        shuffle(&mut by_rank, &mut rng);
        let mut category_weight = vec![0.0; n_cat];
        for (rank, &c) in by_rank.iter().enumerate() {
            category_weight[c as usize - 1] = (rank as f64 + 1.0).powf(-p.category_zipf);
        }
        let category_cdf = cumulative(category_weight.iter().copied());

        // One item per category, the rest in proportion to category popularity, then shuffled ids.
        let mut cats: Vec<u32> = (1..=n_cat as u32).collect();
        cats.reserve(cfg.items - n_cat);
        while cats.len() < cfg.items {
            cats.push(sample_cdf(&category_cdf, &mut rng) as u32 + 1);
        }
        shuffle(&mut cats, &mut rng);
        let items: Vec<Item> = cats
            .iter()
            .map(|&category| {
                let quality: f64 = rng.sample(StandardNormal);
                let appeal: f64 = rng.sample(StandardNormal);
                let z: f64 = rng.sample(StandardNormal);
                Item {
                    category,
                    quality,
                    appeal,
                    popularity: (p.item_popularity_sigma * z).exp(),
                }
            })
            .collect();

        let mut category_offsets = vec![0usize; n_cat + 1];
        for it in &items {
            category_offsets[it.category as usize] += 1;
        }
        for c in 1..=n_cat {
            category_offsets[c] += category_offsets[c - 1];
        }
        let mut fill = category_offsets.clone();
        let mut by_category = vec![0u32; items.len()];
        for (idx, it) in items.iter().enumerate() {
            let slot = &mut fill[it.category as usize - 1];
            by_category[*slot] = idx as u32 + 1;
            *slot += 1;
        }
        let mut within_cdf = vec![0.0; items.len()];
        for c in 0..n_cat {
            let mut acc = 0.0;
            for k in category_offsets[c]..category_offsets[c + 1] {
                acc += items[by_category[k] as usize - 1].popularity;
                within_cdf[k] = acc;
            }
        }

        // Onboarding: item j is the first engagement of the j-th user of a seeded permutation.
        let mut orng = rng_for(cfg.seed, STREAM_ONBOARDING);
        let mut users: Vec<u32> = (1..=cfg.users as u32).collect();
        shuffle(&mut users, &mut orng);
        let mut onboarding_item = vec![0u32; cfg.users];
        let onboarding_user: Vec<u32> = users[..cfg.items].to_vec();
        for (j, &u) in onboarding_user.iter().enumerate() {
            onboarding_item[u as usize - 1] = j as u32 + 1;
        }

        Catalogue {
            items,
            category_weight,
            category_cdf,
            category_offsets,
            by_category,
            within_cdf,
            onboarding_item,
            onboarding_user,
        }
    }

    fn sample_category(&self, rng: &mut ChaCha8Rng) -> u32 {
        sample_cdf(&self.category_cdf, rng) as u32 + 1
    }

    /// An item of category `c`, by popularity.
    fn sample_item(&self, c: u32, rng: &mut ChaCha8Rng) -> u32 {
        let range = self.category_offsets[c as usize - 1]..self.category_offsets[c as usize];
        let k = sample_cdf(&self.within_cdf[range.clone()], rng);
        self.by_category[range.start + k]
    }

    fn item(&self, id: u32) -> &Item {
        &self.items[id as usize - 1]
    }
}

/// A user's hidden traits and what became of her.
#[derive(Debug, Clone, PartialEq)]
pub struct UserTruth {
    /// Favourite categories with their taste weights (Dirichlet; they sum to 1).
    pub favourites: Vec<(u32, f64)>,
    /// Gamma(k, 1/k) frailty: multiplies her stop hazard and her time gaps (activity = 1 / frailty).
    pub frailty: f64,
    /// Engagements before she stopped of her own accord (or reached the length cap).
    pub natural_length: u32,
    /// Engagements in the log: `natural_length` less those censored at the end of the window.
    pub length: u32,
}

/// One engagement with its ground truth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Engagement {
    pub item: u32,
    pub category: u32,
    /// Unix seconds, strictly increasing within a user.
    pub time: i64,
    /// The mental reward she felt (never in the log).
    pub reward: f32,
    /// Its expectation given item, user and step: the satisfaction draw and the noise averaged out.
    pub expected_reward: f32,
    /// The mixture component: satisfied or disappointed.
    pub satisfied: bool,
    /// The catalogue's onboarding item (her first engagement), not a choice from a slate.
    pub onboarding: bool,
}

/// Distributions built once per world.
struct Model<'a> {
    cfg: &'a SynthConfig,
    cat: &'a Catalogue,
    frailty: Gamma<f64>,
    taste: Gamma<f64>,
    extra_favourites: Option<Poisson<f64>>,
    cap: usize,
}

impl<'a> Model<'a> {
    fn new(cfg: &'a SynthConfig, cat: &'a Catalogue) -> Result<Self> {
        let p = &cfg.params;
        let bad = |what: &str, e: String| SynthError::Config(format!("{what}: {e}"));
        Ok(Model {
            cfg,
            cat,
            frailty: Gamma::new(p.activity_shape, 1.0 / p.activity_shape)
                .map_err(|e| bad("activity_shape", e.to_string()))?,
            taste: Gamma::new(p.taste_concentration, 1.0)
                .map_err(|e| bad("taste_concentration", e.to_string()))?,
            extra_favourites: if p.extra_favourites_mean > 0.0 {
                Some(
                    Poisson::new(p.extra_favourites_mean)
                        .map_err(|e| bad("extra_favourites_mean", e.to_string()))?,
                )
            } else {
                None
            },
            cap: cfg.length_cap(),
        })
    }
}

/// Per-thread buffers, reused from user to user.
struct Scratch {
    /// Bit `id` set = the current user engaged with item `id`.
    seen: Vec<u64>,
    /// Current interest per category met so far (favourites and visited ones); others: background.
    interest: Vec<(u32, f64)>,
    /// Static taste match of the favourite categories (0 for the others).
    taste: Vec<(u32, f64)>,
    slate: Vec<u32>,
    log: Vec<Engagement>,
}

impl Scratch {
    fn new(n_items: usize) -> Self {
        Scratch {
            seen: vec![0; n_items / 64 + 1],
            interest: Vec::new(),
            taste: Vec::new(),
            slate: Vec::new(),
            log: Vec::new(),
        }
    }
    fn is_seen(&self, id: u32) -> bool {
        self.seen[id as usize / 64] & (1 << (id % 64)) != 0
    }
    fn set_seen(&mut self, id: u32) {
        self.seen[id as usize / 64] |= 1 << (id % 64);
    }
    fn interest_of(&self, c: u32, background: f64) -> f64 {
        self.interest
            .iter()
            .find(|(k, _)| *k == c)
            .map_or(background, |&(_, v)| v)
    }
    fn taste_of(&self, c: u32) -> f64 {
        self.taste
            .iter()
            .find(|(k, _)| *k == c)
            .map_or(0.0, |&(_, v)| v)
    }
}

/// A user's hidden traits, the first draws of her stream: her frailty and her favourite categories
/// with their taste weights (Dirichlet, summing to 1).
fn draw_traits(m: &Model, rng: &mut ChaCha8Rng) -> (f64, Vec<(u32, f64)>) {
    let cfg = m.cfg;
    let p = &cfg.params;
    let frailty = m.frailty.sample(rng);
    let extra = m
        .extra_favourites
        .as_ref()
        .map_or(0, |d| d.sample(rng) as usize);
    let n_fav = (1 + extra.min(p.max_favourites - 1)).min(cfg.categories);
    let mut favourites: Vec<(u32, f64)> = Vec::with_capacity(n_fav);
    let mut tries = 0;
    while favourites.len() < n_fav && tries < 64 * n_fav {
        let c = m.cat.sample_category(rng);
        if !favourites.iter().any(|&(k, _)| k == c) {
            favourites.push((c, m.taste.sample(rng)));
        }
        tries += 1;
    }
    let total: f64 = favourites.iter().map(|f| f.1).sum();
    let k = favourites.len() as f64;
    for f in &mut favourites {
        f.1 = if total > 0.0 { f.1 / total } else { 1.0 / k };
    }
    (frailty, favourites)
}

/// Every user's favourite categories with their exact taste weights (`users.parquet` rounds them to
/// four decimals), drawn again from the configuration's seed: they are the first draws of each
/// user's stream, so this costs the catalogue and a few draws per user, not a simulation. Entry
/// `u - 1` is user `u`'s.
pub fn user_favourites(cfg: &SynthConfig) -> Result<Vec<Vec<(u32, f64)>>> {
    cfg.validate()?;
    let cat = Catalogue::new(cfg);
    let m = Model::new(cfg, &cat)?;
    Ok((1..=cfg.users as u32)
        .into_par_iter()
        .map(|u| draw_traits(&m, &mut rng_for(cfg.seed, u as u64)).1)
        .collect())
}

/// Simulates user `u` (1-based) with base stop hazard `base_hazard`; her engagements are left in
/// `s.log`. All randomness comes from her own ChaCha8 stream, and every step draws the same numbers
/// whatever the hazard, so a higher hazard can only shorten her sequence (common random numbers).
fn simulate_user(m: &Model, u: u32, base_hazard: f64, s: &mut Scratch) -> UserTruth {
    let cfg = m.cfg;
    let p = &cfg.params;
    let cat = m.cat;
    let mut rng = rng_for(cfg.seed, u as u64);

    let (frailty, favourites) = draw_traits(m, &mut rng);
    s.taste.clear();
    s.interest.clear();
    for &(c, w) in &favourites {
        s.taste.push((c, taste_match(favourites.len(), w)));
        s.interest
            .push((c, w.clamp(p.interest_min, p.interest_max)));
    }
    let mut time =
        p.start_unix + (rng.random::<f64>() * p.start_window_days * SECONDS_PER_DAY) as i64;

    s.log.clear();
    let mut mood = 0.0;
    let onboarding_item = cat.onboarding_item[u as usize - 1];
    loop {
        let t = s.log.len();
        // Exposure and choice.
        let (item, onboarding) = if t == 0 && onboarding_item != 0 {
            (onboarding_item, true)
        } else {
            (choose(m, s, &mut rng), false)
        };
        s.set_seen(item);
        let it = cat.item(item);
        let c = it.category;

        // The mental reward: a satisfied/disappointed mixture.
        let rm = p.reward_model(it.quality, s.taste_of(c), t);
        let satisfied = rng.random::<f64>() < rm.p_satisfied;
        let noise: f64 = rng.sample(StandardNormal);
        let centre = if satisfied {
            p.reward_satisfied
        } else {
            p.reward_disappointed
        };
        let reward = centre + rm.shift + p.reward_noise * noise;
        let expected = rm.expected_reward;
        s.log.push(Engagement {
            item,
            category: c,
            time,
            reward: reward as f32,
            expected_reward: expected as f32,
            satisfied,
            onboarding,
        });

        // O1: the reward reshapes her interest in the category.
        let factor = (p.interest_rate * reward).exp();
        match s.interest.iter_mut().find(|(k, _)| *k == c) {
            Some(e) => e.1 = (e.1 * factor).clamp(p.interest_min, p.interest_max),
            None => s.interest.push((
                c,
                (p.background_interest * factor).clamp(p.interest_min, p.interest_max),
            )),
        }
        // O2: her mood (recent rewards) sets how likely she is to stop.
        mood = if t == 0 {
            reward
        } else {
            p.mood_memory * mood + (1.0 - p.mood_memory) * reward
        };

        let gap: f64 = rng.sample::<f64, _>(Exp1) * p.mean_gap_days * SECONDS_PER_DAY * frailty;
        time += (gap as i64).max(p.min_gap_seconds);
        let stop_draw = rng.random::<f64>();
        let n = s.log.len();
        if n >= m.cap {
            break;
        }
        if n >= p.min_length {
            let hazard = (base_hazard * frailty * (-p.stop_sensitivity * mood).exp()).min(1.0);
            if stop_draw < hazard {
                break;
            }
        }
    }
    for e in &s.log {
        s.seen[e.item as usize / 64] = 0;
    }
    let n = s.log.len() as u32;
    UserTruth {
        favourites,
        frailty,
        natural_length: n,
        length: n,
    }
}

/// One step's slate, and the item she engages with.
fn choose(m: &Model, s: &mut Scratch, rng: &mut ChaCha8Rng) -> u32 {
    let p = &m.cfg.params;
    let cat = m.cat;
    s.slate.clear();
    for _ in 0..p.slate_size {
        for _ in 0..SLOT_TRIES {
            let c = if rng.random::<f64>() < p.taste_exposure {
                // A category from her current interests.
                let total: f64 = s.interest.iter().map(|e| e.1).sum();
                let mut x = rng.random::<f64>() * total;
                let mut pick = s.interest[s.interest.len() - 1].0;
                for &(k, v) in &s.interest {
                    if x < v {
                        pick = k;
                        break;
                    }
                    x -= v;
                }
                pick
            } else {
                cat.sample_category(rng)
            };
            let item = cat.sample_item(c, rng);
            if !s.is_seen(item) && !s.slate.contains(&item) {
                s.slate.push(item);
                break;
            }
        }
    }
    if s.slate.is_empty() {
        // Every draw hit a seen item: any unseen item (at least half the catalogue is unseen).
        loop {
            let item = rng.random_range(1..=cat.items.len() as u32);
            if !s.is_seen(item) {
                s.slate.push(item);
                break;
            }
        }
    }
    // Gumbel-max: the argmax of utility + Gumbel noise is a draw from softmax(utility).
    let mut best = s.slate[0];
    let mut best_u = f64::NEG_INFINITY;
    for &item in &s.slate {
        let it = cat.item(item);
        let uniform = rng.random::<f64>().max(f64::MIN_POSITIVE);
        let gumbel = -(-uniform.ln()).ln();
        let utility = p.beta_appeal * it.appeal
            + p.beta_taste * s.interest_of(it.category, p.background_interest).ln()
            + gumbel;
        if utility > best_u {
            best_u = utility;
            best = item;
        }
    }
    best
}

/// How the base stop hazard was set and what censoring removed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    /// The base stop hazard of the model (see `Params::stop_sensitivity`).
    pub base_hazard: f64,
    /// Users simulated to calibrate it (the first ones; all when the world is small).
    pub pilot_users: usize,
    /// Relative excess the pilot aimed at, so that the full run overshoots the exact total.
    pub margin: f64,
    /// Pilot simulations run.
    pub evaluations: usize,
    /// Full runs (more than one only when a run fell short and the margin was doubled).
    pub attempts: usize,
    /// Engagements before censoring.
    pub natural_engagements: u64,
    /// Engagements removed at the end of the observation window to make the total exact.
    pub censored_engagements: u64,
    /// Users who lost engagements to censoring.
    pub censored_users: usize,
    /// Time of the first censored engagement (unix seconds): no engagement at this time or later is
    /// logged beyond a user's first `min_length`. None when nothing was censored.
    pub window_end: Option<i64>,
}

/// A generated world: catalogue, users, their logged engagements and the ground truth of each.
#[derive(Debug, Clone)]
pub struct World {
    pub(crate) config: SynthConfig,
    pub(crate) catalogue: Catalogue,
    pub(crate) users: Vec<UserTruth>,
    pub(crate) offsets: Vec<usize>,
    pub(crate) log: Vec<Engagement>,
    pub(crate) calibration: Calibration,
}

impl World {
    /// Generates the world of `cfg` (no progress display).
    pub fn generate(cfg: &SynthConfig) -> Result<World> {
        Self::generate_with_progress(cfg, &ProgressBar::hidden())
    }

    /// Generates the world of `cfg`, advancing `progress` by one per simulated user of the full run.
    /// The result depends only on `cfg` (not on the number of threads).
    pub fn generate_with_progress(cfg: &SynthConfig, progress: &ProgressBar) -> Result<World> {
        cfg.validate()?;
        let start = std::time::Instant::now();
        let catalogue = Catalogue::new(cfg);
        let model = Model::new(cfg, &catalogue)?;
        let target = cfg.engagements;
        let pilot = cfg.users.min(cfg.params.pilot_users);
        let full = pilot == cfg.users;
        let mut evaluations = 0;

        // First aim the pilot at the exact mean; its spread then sets the margin that the full run
        // needs to overshoot the total with high probability (none when the pilot is everyone).
        progress.set_message(format!("calibrating the stop hazard on {pilot} users"));
        let (mut hazard, _, sd) = calibrate(
            &model,
            pilot,
            cfg.mean_length(),
            1.0 / (cfg.mean_length() - cfg.params.min_length as f64 + 0.5),
            &mut evaluations,
        )?;
        let mut margin = if full {
            0.0
        } else {
            0.002
                + 3.0 * sd * (1.0 / pilot as f64 - 1.0 / cfg.users as f64).sqrt()
                    / cfg.mean_length()
        };
        for attempt in 1..=MAX_ATTEMPTS {
            if margin > 0.0 {
                hazard = calibrate(
                    &model,
                    pilot,
                    cfg.mean_length() * (1.0 + margin),
                    hazard,
                    &mut evaluations,
                )?
                .0;
            }
            tracing::debug!(
                "attempt {attempt}: base hazard {hazard:.6}, margin {margin:.4}, {evaluations} pilot runs"
            );
            progress.set_message("simulating users");
            progress.set_length(cfg.users as u64);
            progress.set_position(0);
            let runs: Vec<(UserTruth, Vec<Engagement>)> = (1..=cfg.users as u32)
                .into_par_iter()
                .map_init(
                    || Scratch::new(cfg.items + 1),
                    |s, u| {
                        let truth = simulate_user(&model, u, hazard, s);
                        progress.inc(1);
                        (truth, s.log.clone())
                    },
                )
                .collect();
            let natural: u64 = runs.iter().map(|r| r.0.natural_length as u64).sum();
            if natural < target {
                tracing::info!(
                    "the run gave {natural} engagements, short of {target}: doubling the margin"
                );
                margin = if margin > 0.0 { margin * 2.0 } else { 0.01 };
                continue;
            }
            let (users, logs): (Vec<UserTruth>, Vec<Vec<Engagement>>) = runs.into_iter().unzip();
            let mut world = World {
                config: cfg.clone(),
                catalogue,
                users,
                offsets: Vec::new(),
                log: Vec::new(),
                calibration: Calibration {
                    base_hazard: hazard,
                    pilot_users: pilot,
                    margin,
                    evaluations,
                    attempts: attempt,
                    natural_engagements: natural,
                    censored_engagements: 0,
                    censored_users: 0,
                    window_end: None,
                },
            };
            world.censor_and_flatten(logs);
            tracing::info!(
                "simulated {} users, {} engagements ({} censored) in {:.2}s",
                cfg.users,
                world.log.len(),
                world.calibration.censored_engagements,
                start.elapsed().as_secs_f64()
            );
            return Ok(world);
        }
        Err(SynthError::Calibration(format!(
            "{MAX_ATTEMPTS} runs fell short of {target} engagements; raise params.pilot_users"
        )))
    }

    /// Removes the globally latest engagements (never one of a user's first `min_length`) until the
    /// log holds exactly `config.engagements`: the observation window ends, as a crawl's does. Since
    /// times increase within a user, what is removed is always the end of a sequence.
    fn censor_and_flatten(&mut self, logs: Vec<Vec<Engagement>>) {
        let min_len = self.config.params.min_length;
        let natural = self.calibration.natural_engagements;
        let excess = (natural - self.config.engagements) as usize;
        let mut keep: Vec<usize> = logs.iter().map(Vec::len).collect();
        if excess > 0 {
            let mut keys: Vec<(i64, u32, u32)> = Vec::with_capacity(natural as usize);
            for (u, log) in logs.iter().enumerate() {
                for (t, e) in log.iter().enumerate().skip(min_len) {
                    keys.push((e.time, u as u32, t as u32));
                }
            }
            // The `excess` largest keys (all distinct) are censored.
            keys.select_nth_unstable_by(excess - 1, |a, b| b.cmp(a));
            let cutoff = keys[excess - 1];
            self.calibration.window_end = Some(cutoff.0);
            for (u, log) in logs.iter().enumerate() {
                if let Some(t) =
                    (min_len..log.len()).find(|&t| (log[t].time, u as u32, t as u32) >= cutoff)
                {
                    keep[u] = t;
                    self.calibration.censored_users += 1;
                }
            }
            self.calibration.censored_engagements = excess as u64;
        }
        let mut offsets = Vec::with_capacity(logs.len() + 1);
        offsets.push(0);
        let mut flat = Vec::with_capacity(self.config.engagements as usize);
        for (u, log) in logs.into_iter().enumerate() {
            flat.extend_from_slice(&log[..keep[u]]);
            self.users[u].length = keep[u] as u32;
            offsets.push(flat.len());
        }
        self.offsets = offsets;
        self.log = flat;
    }

    /// The configuration the world was generated from.
    pub fn config(&self) -> &SynthConfig {
        &self.config
    }
    /// Number of users (ids 1..=n).
    pub fn n_users(&self) -> usize {
        self.users.len()
    }
    /// The catalogue: item `id` is `items()[id - 1]`.
    pub fn items(&self) -> &[Item] {
        &self.catalogue.items
    }
    /// Item `id` (1-based).
    pub fn item(&self, id: u32) -> &Item {
        self.catalogue.item(id)
    }
    /// Exposure weight of category `id` at `category_weights()[id - 1]`.
    pub fn category_weights(&self) -> &[f64] {
        &self.catalogue.category_weight
    }
    /// The user whose onboarding (first) engagement item `id` is.
    pub fn onboarding_user(&self, id: u32) -> u32 {
        self.catalogue.onboarding_user[id as usize - 1]
    }
    /// Users' hidden traits: user `u` is `users()[u - 1]`.
    pub fn users(&self) -> &[UserTruth] {
        &self.users
    }
    /// The logged engagements of user `u` (1-based), in order.
    pub fn engagements(&self, u: u32) -> &[Engagement] {
        &self.log[self.offsets[u as usize - 1]..self.offsets[u as usize]]
    }
    /// All logged engagements, user after user.
    pub fn all_engagements(&self) -> &[Engagement] {
        &self.log
    }
    /// How the stop hazard was calibrated and what was censored.
    pub fn calibration(&self) -> &Calibration {
        &self.calibration
    }
}

/// Finds a base hazard whose pilot mean length is at least `goal_mean` and at most `TOLERANCE` above
/// it. The pilot mean falls as the hazard rises (common random numbers), and the mean extra length
/// is roughly inversely proportional to the hazard, which gives the secant step; a bracket and
/// geometric bisection keep the search safe. Returns (hazard, pilot mean, pilot sd).
fn calibrate(
    m: &Model,
    pilot: usize,
    goal_mean: f64,
    start: f64,
    evaluations: &mut usize,
) -> Result<(f64, f64, f64)> {
    let min_len = m.cfg.params.min_length as f64;
    let goal_total = (goal_mean * pilot as f64).ceil() as u64;
    let mut lo: Option<(f64, f64, f64)> = None; // pilot total >= goal: hazard too low or right
    let mut hi: Option<f64> = None; // pilot total < goal: hazard too high
    let mut h = start.clamp(1e-9, 1e9);
    for _ in 0..MAX_EVALUATIONS {
        *evaluations += 1;
        let lengths: Vec<u32> = (1..=pilot as u32)
            .into_par_iter()
            .map_init(
                || Scratch::new(m.cfg.items + 1),
                |s, u| simulate_user(m, u, h, s).natural_length,
            )
            .collect();
        let total: u64 = lengths.iter().map(|&l| l as u64).sum();
        let mean = total as f64 / pilot as f64;
        let var = lengths
            .iter()
            .map(|&l| (l as f64 - mean).powi(2))
            .sum::<f64>()
            / pilot as f64;
        tracing::debug!("pilot: hazard {h:.6} -> mean length {mean:.4} (goal {goal_mean:.4})");
        if total >= goal_total {
            if lo.is_none_or(|l| h > l.0) {
                lo = Some((h, mean, var.sqrt()));
            }
            if (total - goal_total) as f64 <= TOLERANCE * goal_total as f64 {
                return Ok((h, mean, var.sqrt()));
            }
        } else if hi.is_none_or(|x| h < x) {
            hi = Some(h);
        }
        // Aim at the middle of the accepted window, and move by at least 0.1% so that a flat stretch
        // of the (step-shaped) pilot total is crossed rather than crept along.
        let aim = goal_mean * (1.0 + TOLERANCE / 2.0);
        let mut ratio = ((mean - min_len).max(1e-6) / (aim - min_len)).clamp(0.05, 20.0);
        if (ratio - 1.0).abs() < 1e-3 {
            ratio = if mean > aim { 1.0 + 1e-3 } else { 1.0 - 1e-3 };
        }
        let mut next = h * ratio;
        if let (Some(l), Some(u)) = (lo, hi) {
            if u / l.0 < 1.0 + 1e-5 {
                return Ok(l);
            }
            if !(next > l.0 && next < u) {
                next = (l.0 * u).sqrt();
            }
        }
        h = next.clamp(1e-9, 1e9);
    }
    lo.ok_or_else(|| {
        SynthError::Calibration(format!(
            "no stop hazard gives a mean length of {goal_mean:.3} (is the length cap too low?)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_fills_every_category_and_onboards_every_item_once() {
        let cfg = SynthConfig::preset("tiny", 3).unwrap();
        let cat = Catalogue::new(&cfg);
        assert_eq!(cat.items.len(), cfg.items);
        for c in 1..=cfg.categories as u32 {
            assert!(cat.items.iter().any(|it| it.category == c), "category {c}");
        }
        let mut users = cat.onboarding_user.clone();
        users.sort_unstable();
        users.dedup();
        assert_eq!(users.len(), cfg.items);
        let onboarded = cat.onboarding_item.iter().filter(|&&i| i != 0).count();
        assert_eq!(onboarded, cfg.items);
        // Sampling within a category stays in it.
        let mut rng = rng_for(1, 1);
        for c in 1..=cfg.categories as u32 {
            for _ in 0..20 {
                assert_eq!(cat.item(cat.sample_item(c, &mut rng)).category, c);
            }
        }
    }

    #[test]
    fn favourites_and_reward_model_reproduce_the_world() {
        let cfg = SynthConfig::preset("tiny", 21).unwrap();
        let w = World::generate(&cfg).unwrap();
        let favs = user_favourites(&cfg).unwrap();
        assert_eq!(favs.len(), cfg.users);
        let p = &cfg.params;
        for (i, truth) in w.users().iter().enumerate() {
            assert_eq!(favs[i], truth.favourites, "user {}", i + 1);
            for (t, e) in w.engagements(i as u32 + 1).iter().enumerate() {
                let m = truth
                    .favourites
                    .iter()
                    .find(|f| f.0 == e.category)
                    .map_or(0.0, |f| taste_match(truth.favourites.len(), f.1));
                let rm = p.reward_model(w.item(e.item).quality, m, t);
                assert_eq!(rm.expected_reward as f32, e.expected_reward);
                assert!(rm.p_satisfied > 0.0 && rm.p_satisfied < 1.0);
            }
        }
        // Hand values: an average favourite matches 1, a lone favourite of weight 1 too.
        assert!((taste_match(4, 0.25) - 1.0).abs() < 1e-15);
        assert!((taste_match(1, 1.0) - 1.0).abs() < 1e-15);
        assert!((taste_match(2, 0.0)).abs() < 1e-15);
        // q = 0, m = 0.5, t = 0: z = bias, no shift.
        let rm = p.reward_model(0.0, 0.5, 0);
        let ps = 1.0 / (1.0 + (-p.satisfaction_bias).exp());
        assert!((rm.p_satisfied - ps).abs() < 1e-15);
        assert!(
            (rm.expected_reward - (ps * p.reward_satisfied + (1.0 - ps) * p.reward_disappointed))
                .abs()
                < 1e-15
        );
        assert!((p.fatigue(5) - p.fatigue_scale * 5.0 / (5.0 + p.fatigue_steps)).abs() < 1e-15);
    }

    #[test]
    fn a_higher_hazard_never_lengthens_a_user() {
        let cfg = SynthConfig::preset("tiny", 5).unwrap();
        let cat = Catalogue::new(&cfg);
        let m = Model::new(&cfg, &cat).unwrap();
        let mut s = Scratch::new(cfg.items + 1);
        for u in 1..=50 {
            let a = simulate_user(&m, u, 0.1, &mut s);
            let log_a = s.log.clone();
            let b = simulate_user(&m, u, 0.4, &mut s);
            assert!(b.natural_length <= a.natural_length, "user {u}");
            assert!(b.natural_length >= cfg.params.min_length as u32);
            // Same prefix: the hazard changes only where she stops.
            assert_eq!(&log_a[..s.log.len()], &s.log[..]);
            assert!(s.seen.iter().all(|&w| w == 0), "seen bits are cleared");
        }
    }

    #[test]
    fn censoring_cuts_sequence_ends_and_keeps_the_first_steps() {
        let mut cfg = SynthConfig::preset("tiny", 9).unwrap();
        cfg.params.pilot_users = 50; // a pilot smaller than the population: the run overshoots
        let w = World::generate(&cfg).unwrap();
        let c = w.calibration().clone();
        assert_eq!(w.all_engagements().len() as u64, cfg.engagements);
        assert!(c.margin > 0.0);
        assert!(c.censored_engagements > 0 && c.censored_users > 0);
        assert_eq!(
            c.natural_engagements - c.censored_engagements,
            cfg.engagements
        );
        let end = c.window_end.unwrap();
        let cat = Catalogue::new(&cfg);
        let m = Model::new(&cfg, &cat).unwrap();
        let mut s = Scratch::new(cfg.items + 1);
        let (mut cut_users, mut cut) = (0, 0);
        for (u, t) in w.users().iter().enumerate() {
            let log = w.engagements(u as u32 + 1);
            assert_eq!(log.len(), t.length as usize);
            assert!(t.length as usize >= cfg.params.min_length);
            for e in &log[cfg.params.min_length..] {
                assert!(e.time <= end);
            }
            // The natural sequence, simulated again: the log is its prefix, the rest is after the end.
            let again = simulate_user(&m, u as u32 + 1, c.base_hazard, &mut s);
            assert_eq!(again.natural_length, t.natural_length);
            assert_eq!(&s.log[..log.len()], log);
            if t.length < t.natural_length {
                cut_users += 1;
                cut += t.natural_length - t.length;
                assert!(s.log[log.len()..].iter().all(|e| e.time >= end));
            }
        }
        assert_eq!(cut_users, c.censored_users);
        assert_eq!(cut as u64, c.censored_engagements);
    }
}
