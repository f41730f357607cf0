//! [`GroundTruth`]: a world folder's hidden truth, indexed by the ids that a prepared dataset of its
//! log keeps (users, items and categories are the integers `1..n`; step `t` is 0-based in both).

use std::fs::File;
use std::path::{Path, PathBuf};

use mtrec_data::PreparedDataset;
use mtrec_synth::{files, taste_match, Params, SynthConfig, MODEL_VERSION};
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TruthError};

/// The truth of one logged engagement.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EngagementTruth {
    /// The engaged item (the dataset's positive at that step).
    pub item: u32,
    /// The mental reward she felt.
    pub true_reward: f32,
    /// Its expectation over the satisfaction draw and the noise (what any model can hope to learn).
    pub expected_reward: f32,
    /// Satisfied or disappointed (the mixture component).
    pub satisfied: bool,
    /// Her first engagement was the catalogue's onboarding item, not a choice.
    pub onboarding: bool,
}

/// A world's hidden truth: the behaviour constants, each item's quality and category, each user's
/// favourite categories with their taste weights, and every logged engagement's reward.
#[derive(Debug, Clone)]
pub struct GroundTruth {
    dir: PathBuf,
    config: SynthConfig,
    /// `quality[id]`, `category[id]` (index 0 unused).
    quality: Vec<f64>,
    category: Vec<u32>,
    /// `taste[u]`: (category, taste match) of user `u`'s favourites (index 0 unused).
    taste: Vec<Vec<(u32, f64)>>,
    exact_tastes: bool,
    /// Engagements of user `u` are `log[offsets[u - 1]..offsets[u]]`, by step.
    offsets: Vec<usize>,
    log: Vec<EngagementTruth>,
}

fn read_parquet(path: &Path) -> Result<DataFrame> {
    let f = File::open(path).map_err(|e| TruthError::file(path, e.to_string()))?;
    ParquetReader::new(f)
        .finish()
        .map_err(|e| TruthError::file(path, format!("not a parquet table: {e}")))
}

/// Column `name` of `df` cast to `dtype`, with no nulls.
fn column(df: &DataFrame, path: &Path, name: &str, dtype: &DataType) -> Result<Series> {
    let c = df.column(name).map_err(|_| {
        TruthError::file(
            path,
            format!(
                "no column '{name}' (columns: {})",
                df.get_column_names()
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })?;
    if c.null_count() > 0 {
        return Err(TruthError::file(path, format!("column '{name}' has nulls")));
    }
    c.cast(dtype)
        .map(|c| c.as_materialized_series().clone())
        .map_err(|e| TruthError::file(path, format!("column '{name}': {e}")))
}

fn u32s(df: &DataFrame, path: &Path, name: &str) -> Result<Vec<u32>> {
    let s = column(df, path, name, &DataType::UInt32)?;
    let ca = s
        .u32()
        .map_err(|e| TruthError::file(path, format!("column '{name}': {e}")))?;
    Ok(ca.into_no_null_iter().collect())
}

fn f64s(df: &DataFrame, path: &Path, name: &str) -> Result<Vec<f64>> {
    let s = column(df, path, name, &DataType::Float64)?;
    let ca = s
        .f64()
        .map_err(|e| TruthError::file(path, format!("column '{name}': {e}")))?;
    Ok(ca.into_no_null_iter().collect())
}

fn f32s(df: &DataFrame, path: &Path, name: &str) -> Result<Vec<f32>> {
    let s = column(df, path, name, &DataType::Float32)?;
    let ca = s
        .f32()
        .map_err(|e| TruthError::file(path, format!("column '{name}': {e}")))?;
    Ok(ca.into_no_null_iter().collect())
}

fn bools(df: &DataFrame, path: &Path, name: &str) -> Result<Vec<bool>> {
    let s = column(df, path, name, &DataType::Boolean)?;
    let ca = s
        .bool()
        .map_err(|e| TruthError::file(path, format!("column '{name}': {e}")))?;
    Ok(ca.iter().map(|b| b.unwrap_or(false)).collect())
}

fn strs(df: &DataFrame, path: &Path, name: &str) -> Result<Vec<String>> {
    let s = column(df, path, name, &DataType::String)?;
    let ca = s
        .str()
        .map_err(|e| TruthError::file(path, format!("column '{name}': {e}")))?;
    Ok(ca
        .iter()
        .map(|x| x.unwrap_or_default().to_owned())
        .collect())
}

/// Reads the configuration a world was generated from out of `world.json`.
fn read_config(path: &Path) -> Result<(SynthConfig, u32)> {
    let bytes = std::fs::read(path).map_err(|e| TruthError::file(path, e.to_string()))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| TruthError::file(path, format!("not JSON: {e}")))?;
    let field = |ptr: &str| {
        v.pointer(ptr)
            .ok_or_else(|| TruthError::file(path, format!("no field '{}'", &ptr[1..])))
    };
    let uint = |ptr: &str| -> Result<u64> {
        field(ptr)?.as_u64().ok_or_else(|| {
            TruthError::file(path, format!("field '{}' is not an integer", &ptr[1..]))
        })
    };
    let params: Params = serde_json::from_value(field("/params")?.clone())
        .map_err(|e| TruthError::file(path, format!("field 'params': {e}")))?;
    let cfg = SynthConfig {
        preset: field("/preset")?.as_str().unwrap_or_default().to_owned(),
        seed: uint("/seed")?,
        users: uint("/target/users")? as usize,
        items: uint("/target/items")? as usize,
        categories: uint("/target/categories")? as usize,
        engagements: uint("/target/engagements")?,
        params,
    };
    Ok((cfg, uint("/model_version")? as u32))
}

/// `"3;7"` and `"0.2500;0.7500"` of `users.parquet` as (category, weight) pairs.
fn parse_favourites(path: &Path, user: u32, cats: &str, weights: &str) -> Result<Vec<(u32, f64)>> {
    let bad = || {
        TruthError::file(
            path,
            format!("user {user}: favourites '{cats}' / taste_weights '{weights}' do not parse"),
        )
    };
    let c: Vec<u32> = cats
        .split(';')
        .map(|x| x.trim().parse().map_err(|_| bad()))
        .collect::<Result<_>>()?;
    let w: Vec<f64> = weights
        .split(';')
        .map(|x| x.trim().parse().map_err(|_| bad()))
        .collect::<Result<_>>()?;
    if c.len() != w.len() || c.is_empty() {
        return Err(bad());
    }
    Ok(c.into_iter().zip(w).collect())
}

impl GroundTruth {
    /// Reads the truth of the world folder `world_dir` (`world.json`, `items.parquet`,
    /// `users.parquet`, `rewards.parquet`, as `mtrec synth` writes them).
    ///
    /// `users.parquet` rounds taste weights to four decimals, which would move a counterfactual
    /// expected reward by up to ~3e-4; since the favourites are the first draws of each user's
    /// seeded stream, they are drawn again exactly from `world.json`
    /// ([`mtrec_synth::user_favourites`]) and checked against the file. When they disagree (a world
    /// of another model version), the file's rounded weights are used and
    /// [`GroundTruth::exact_tastes`] says so.
    pub fn load(world_dir: &Path) -> Result<Self> {
        if !world_dir.is_dir() {
            return Err(TruthError::file(
                world_dir,
                "no such folder (a world folder written by `mtrec synth`)",
            ));
        }
        let (config, model_version) = read_config(&world_dir.join(files::WORLD))?;

        // Items.
        let path = world_dir.join(files::ITEMS);
        let df = read_parquet(&path)?;
        let ids = u32s(&df, &path, "item_id")?;
        let cats = u32s(&df, &path, "category")?;
        let qual = f64s(&df, &path, "quality")?;
        let n_items = ids.iter().copied().max().unwrap_or(0) as usize;
        let mut quality = vec![f64::NAN; n_items + 1];
        let mut category = vec![0u32; n_items + 1];
        for ((&id, &c), &q) in ids.iter().zip(&cats).zip(&qual) {
            if id == 0 {
                return Err(TruthError::file(&path, "item_id 0 (ids start at 1)"));
            }
            quality[id as usize] = q;
            category[id as usize] = c;
        }
        if let Some(id) = (1..=n_items).find(|&i| category[i] == 0) {
            return Err(TruthError::file(&path, format!("item {id} is missing")));
        }

        // Users: favourites and taste weights.
        let path = world_dir.join(files::USERS);
        let df = read_parquet(&path)?;
        let users = u32s(&df, &path, "user_id")?;
        let favs = strs(&df, &path, "favourites")?;
        let weights = strs(&df, &path, "taste_weights")?;
        let n_users = users.iter().copied().max().unwrap_or(0) as usize;
        let mut file_favourites = vec![Vec::new(); n_users + 1];
        for ((&u, c), w) in users.iter().zip(&favs).zip(&weights) {
            if u == 0 {
                return Err(TruthError::file(&path, "user_id 0 (ids start at 1)"));
            }
            file_favourites[u as usize] = parse_favourites(&path, u, c, w)?;
        }
        if let Some(u) = (1..=n_users).find(|&u| file_favourites[u].is_empty()) {
            return Err(TruthError::file(&path, format!("user {u} is missing")));
        }
        let regenerated = if model_version == MODEL_VERSION && config.users == n_users {
            mtrec_synth::user_favourites(&config).ok()
        } else {
            None
        };
        let exact = regenerated.filter(|r| {
            r.iter().zip(&file_favourites[1..]).all(|(a, b)| {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|(x, y)| x.0 == y.0 && (x.1 - y.1).abs() <= 6e-5)
            })
        });
        let exact_tastes = exact.is_some();
        if !exact_tastes {
            tracing::warn!(
                "{}: the favourites could not be drawn again from world.json (model version {model_version}, this mtrec {MODEL_VERSION}); using the file's weights, rounded to 1e-4",
                path.display()
            );
        }
        let favourites: Vec<Vec<(u32, f64)>> = match exact {
            Some(r) => std::iter::once(Vec::new()).chain(r).collect(),
            None => file_favourites,
        };
        let taste = favourites
            .iter()
            .map(|f| {
                f.iter()
                    .map(|&(c, w)| (c, taste_match(f.len(), w)))
                    .collect()
            })
            .collect();

        // Rewards of the logged engagements.
        let path = world_dir.join(files::REWARDS);
        let df = read_parquet(&path)?;
        let r_user = u32s(&df, &path, "user_id")?;
        let r_step = u32s(&df, &path, "step")?;
        let r_item = u32s(&df, &path, "item_id")?;
        let r_cat = u32s(&df, &path, "category")?;
        let true_reward = f32s(&df, &path, "true_reward")?;
        let expected = f32s(&df, &path, "expected_reward")?;
        let satisfied = bools(&df, &path, "satisfied")?;
        let onboarding = bools(&df, &path, "onboarding")?;
        let mut order: Vec<usize> = (0..r_user.len()).collect();
        order.sort_by_key(|&k| (r_user[k], r_step[k]));
        let mut offsets = vec![0usize; n_users + 1];
        let mut log = Vec::with_capacity(order.len());
        for &k in &order {
            let (u, t, item) = (r_user[k], r_step[k], r_item[k]);
            if u == 0 || u as usize > n_users {
                return Err(TruthError::file(
                    &path,
                    format!("user {u} is not in {}", files::USERS),
                ));
            }
            let before = offsets[u as usize]; // engagements of u so far
            if t as usize != before {
                return Err(TruthError::file(
                    &path,
                    format!("user {u}: step {t} where step {before} was expected (steps are 0-based and consecutive)"),
                ));
            }
            if item == 0 || item as usize > n_items || category[item as usize] != r_cat[k] {
                return Err(TruthError::file(
                    &path,
                    format!(
                        "user {u} step {t}: item {item} of category {} does not match {}",
                        r_cat[k],
                        files::ITEMS
                    ),
                ));
            }
            offsets[u as usize] += 1;
            log.push(EngagementTruth {
                item,
                true_reward: true_reward[k],
                expected_reward: expected[k],
                satisfied: satisfied[k],
                onboarding: onboarding[k],
            });
        }
        // Counts per user -> cumulative offsets (offsets[u] is the end of user u).
        for u in 1..=n_users {
            offsets[u] += offsets[u - 1];
        }
        Ok(GroundTruth {
            dir: world_dir.to_path_buf(),
            config,
            quality,
            category,
            taste,
            exact_tastes,
            offsets,
            log,
        })
    }

    /// The world folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The configuration the world was generated from (preset, seed, parameters).
    pub fn config(&self) -> &SynthConfig {
        &self.config
    }
    /// Users (ids `1..=n`).
    pub fn n_users(&self) -> usize {
        self.offsets.len() - 1
    }
    /// Items (ids `1..=n`).
    pub fn n_items(&self) -> usize {
        self.quality.len() - 1
    }
    /// Whether taste weights are exact (drawn again from the seed) rather than the file's rounding.
    pub fn exact_tastes(&self) -> bool {
        self.exact_tastes
    }
    /// Category of item `id` (0 when unknown).
    pub fn item_category(&self, id: u32) -> u32 {
        self.category.get(id as usize).copied().unwrap_or(0)
    }

    /// The logged engagements of user `u`, by 0-based step (empty when unknown).
    pub fn engagements(&self, user: u32) -> &[EngagementTruth] {
        let u = user as usize;
        if u == 0 || u >= self.offsets.len() {
            return &[];
        }
        &self.log[self.offsets[u - 1]..self.offsets[u]]
    }

    /// The truth of user `user`'s engagement at 0-based step `step` (`mtrec_mdp::State::step`, the
    /// same index as `rewards.parquet`'s `step` and `PreparedDataset::sequence(user)[step]`).
    pub fn engagement(&self, user: u32, step: u32) -> Option<EngagementTruth> {
        self.engagements(user).get(step as usize).copied()
    }

    /// Her taste match with category `c` (0 outside her favourites).
    pub fn taste_match(&self, user: u32, c: u32) -> f64 {
        self.taste
            .get(user as usize)
            .and_then(|t| t.iter().find(|x| x.0 == c))
            .map_or(0.0, |x| x.1)
    }

    /// The counterfactual: the reward user `user` would expect to feel had she engaged `item` at
    /// 0-based step `step` instead (over the satisfaction draw and the noise). The mental reward
    /// depends on the item's quality and category, her static taste and the step's fatigue only (not
    /// on her changing interests or mood), so it is exact, and for the logged item it is the
    /// `expected_reward` of `rewards.parquet`. NaN for an unknown user or item.
    pub fn expected_reward(&self, user: u32, step: u32, item: u32) -> f64 {
        let i = item as usize;
        if i == 0 || i >= self.quality.len() || user == 0 || user as usize >= self.taste.len() {
            return f64::NAN;
        }
        let m = self.taste_match(user, self.category[i]);
        self.config
            .params
            .reward_model(self.quality[i], m, step as usize)
            .expected_reward
    }

    /// Checks that `ds` is a preparation of this world's log: the same user and item ids (by key),
    /// the same categories, and the same item at every (user, step). Every metric joins on these.
    pub fn check_dataset(&self, ds: &PreparedDataset) -> Result<()> {
        if ds.n_users() != self.n_users() {
            return Err(TruthError::Mismatch(format!(
                "{} users in the dataset, {} in the world",
                ds.n_users(),
                self.n_users()
            )));
        }
        if ds.n_items() != self.n_items() {
            return Err(TruthError::Mismatch(format!(
                "{} items in the dataset, {} in the world",
                ds.n_items(),
                self.n_items()
            )));
        }
        for i in 1..=ds.n_items() {
            if ds.item_key(i) != i.to_string() {
                return Err(TruthError::Mismatch(format!(
                    "dataset item {i} has key '{}', not {i}",
                    ds.item_key(i)
                )));
            }
            let c = ds.item_category()[i] as usize;
            if ds.category_key(c) != self.category[i].to_string() {
                return Err(TruthError::Mismatch(format!(
                    "item {i} is in category '{}' in the dataset, {} in the world",
                    ds.category_key(c),
                    self.category[i]
                )));
            }
        }
        for u in 1..=ds.n_users() {
            if ds.user_key(u) != u.to_string() {
                return Err(TruthError::Mismatch(format!(
                    "dataset user {u} has key '{}', not {u}",
                    ds.user_key(u)
                )));
            }
            let seq = ds.sequence(u);
            let log = self.engagements(u as u32);
            if seq.len() != log.len() {
                return Err(TruthError::Mismatch(format!(
                    "user {u} has {} steps in the dataset, {} in the world",
                    seq.len(),
                    log.len()
                )));
            }
            if let Some(t) = (0..seq.len()).find(|&t| seq[t] != log[t].item) {
                return Err(TruthError::Mismatch(format!(
                    "user {u} step {t}: item {} in the dataset, {} in the world",
                    seq[t], log[t].item
                )));
            }
        }
        Ok(())
    }
}
