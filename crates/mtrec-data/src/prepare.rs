//! From the canonical interaction table to a [`PreparedDataset`] (specs/method.md §6.4): ids remapped
//! with 0 reserved for padding, a stable per-user order by (time, file order), one seeded negative per
//! step, and a seeded user-level train/test split.

use polars::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dataset::{Counts, InputFile, Manifest, PreparedDataset, Rules};
use crate::error::{DataError, PolarsContext, Result};
use crate::interactions::{cols, Interactions};

/// How the negative item of each step is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NegativeRule {
    /// DIN's `build_dataset.py`: uniform over all items, rejecting any item of the user's positives.
    Uniform,
    /// DIEN's `process_data.py`: drawn from all logged interactions (so by popularity), rejecting only
    /// the step's own positive item.
    Popularity,
}

impl std::str::FromStr for NegativeRule {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "uniform" | "din" => Ok(NegativeRule::Uniform),
            "popularity" | "dien" => Ok(NegativeRule::Popularity),
            other => Err(DataError::Invalid(format!(
                "unknown negative rule '{other}' (expected 'uniform' (DIN) or 'popularity' (DIEN))"
            ))),
        }
    }
}

impl std::fmt::Display for NegativeRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NegativeRule::Uniform => "uniform",
            NegativeRule::Popularity => "popularity",
        })
    }
}

/// Settings of `prepare`; the defaults are the spec's (§8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrepareConfig {
    /// Seed of negatives and split (DIN's scripts use 1234).
    pub seed: u64,
    /// Share of users held out for testing (DIEN and the paper: 10%).
    pub test_fraction: f64,
    /// Longest history a sample keeps (its most recent items); DIEN's maxlen is 100.
    pub max_history: usize,
    /// Negative sampling rule.
    pub negatives: NegativeRule,
}

impl Default for PrepareConfig {
    fn default() -> Self {
        PrepareConfig {
            seed: 1234,
            test_fraction: 0.1,
            max_history: 100,
            negatives: NegativeRule::Uniform,
        }
    }
}

impl PrepareConfig {
    fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.test_fraction) {
            return Err(DataError::Invalid(format!(
                "test fraction must be in [0, 1), got {}",
                self.test_fraction
            )));
        }
        if self.max_history == 0 {
            return Err(DataError::Invalid("max history must be at least 1".into()));
        }
        Ok(())
    }
}

/// Sorts raw keys: numerically when every key is a plain non-negative integer (S3-Rec and DIN ids keep
/// their order), otherwise by bytes, which for ASCII is Python's `sorted` as DIN's `build_map` uses.
pub fn sort_keys(keys: &mut [&str]) {
    let numeric = keys.iter().all(|k| {
        !k.is_empty()
            && k.bytes().all(|b| b.is_ascii_digit())
            && (k.len() == 1 || !k.starts_with('0'))
    });
    if numeric {
        keys.sort_unstable_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
    } else {
        keys.sort_unstable();
    }
}

fn str_column<'a>(df: &'a DataFrame, name: &str) -> Result<Vec<&'a str>> {
    let ca = df
        .column(name)
        .and_then(|c| c.str())
        .ctx(|| format!("column {name}"))?;
    Ok(ca.iter().map(|v| v.unwrap_or("")).collect())
}

fn id_map<'a>(keys: impl Iterator<Item = &'a str>) -> (Vec<String>, PlHashMap<&'a str, u32>) {
    let mut uniq: Vec<&str> = {
        let mut seen = PlHashSet::new();
        keys.filter(|k| seen.insert(*k)).collect()
    };
    sort_keys(&mut uniq);
    let mut names = Vec::with_capacity(uniq.len() + 1);
    names.push(String::new()); // id 0: padding
    let mut map = PlHashMap::with_capacity(uniq.len());
    for (i, k) in uniq.into_iter().enumerate() {
        map.insert(k, i as u32 + 1);
        names.push(k.to_owned());
    }
    (names, map)
}

/// Runs the whole preparation on a table; `inputs` are recorded in the manifest.
pub fn prepare(
    interactions: &Interactions,
    cfg: &PrepareConfig,
    inputs: Vec<InputFile>,
) -> Result<PreparedDataset> {
    cfg.validate()?;
    let t0 = std::time::Instant::now();
    let df = interactions.df();
    let users_raw = str_column(df, cols::USER)?;
    let items_raw = str_column(df, cols::ITEM)?;
    let cats_raw = str_column(df, cols::CATEGORY)?;

    // 1. Ids, 0 reserved for padding.
    let (user_keys, user_map) = id_map(users_raw.iter().copied());
    let (item_keys, item_map) = id_map(items_raw.iter().copied());
    // Category of an item: the first one met in file order.
    let mut item_cat_raw: Vec<&str> = vec![""; item_keys.len()];
    let mut conflicts = 0usize;
    for (it, c) in items_raw.iter().zip(&cats_raw) {
        let id = item_map[it] as usize;
        if item_cat_raw[id].is_empty() {
            item_cat_raw[id] = c;
        } else if item_cat_raw[id] != *c {
            conflicts += 1;
        }
    }
    let mut warnings = Vec::new();
    if conflicts > 0 {
        let w = format!("{conflicts} rows give an item another category than its first row; the first one is kept");
        tracing::warn!("{w}");
        warnings.push(w);
    }
    let (category_keys, cat_map) = id_map(item_cat_raw[1..].iter().copied());
    let mut item_category = vec![0u32; item_keys.len()];
    for (id, c) in item_cat_raw.iter().enumerate().skip(1) {
        item_category[id] = cat_map[c];
    }

    tracing::debug!("ids in {:.2}s", t0.elapsed().as_secs_f64());
    // 2. Stable order per user: (user, time, source file, line).
    let user_ids: Vec<u32> = users_raw.iter().map(|u| user_map[u]).collect();
    let item_ids: Vec<u32> = items_raw.iter().map(|i| item_map[i]).collect();
    let n_rows = user_ids.len();
    let times_in: Vec<i64> = df
        .column(cols::TIME)
        .and_then(|c| c.i64().map(|ca| ca.into_no_null_iter().collect()))
        .ctx(|| "time".into())?;
    let sources: Vec<u32> = df
        .column(cols::SOURCE)
        .and_then(|c| c.u32().map(|ca| ca.into_no_null_iter().collect()))
        .ctx(|| "source".into())?;
    let lines: Vec<u64> = df
        .column(cols::LINE)
        .and_then(|c| c.u64().map(|ca| ca.into_no_null_iter().collect()))
        .ctx(|| "line".into())?;
    // The full key is unique (a file and line name one row; readers that emit several rows from one
    // line, S3-Rec and DIEN samples, give them distinct times), so an unstable sort on it is
    // deterministic and stable in effect; a parallel sort of row indices is several times faster
    // than a multi-column frame sort.
    let mut perm: Vec<u32> = (0..n_rows as u32).collect();
    perm.par_sort_unstable_by_key(|&r| {
        let r = r as usize;
        (user_ids[r], times_in[r], sources[r], lines[r])
    });
    let items: Vec<u32> = perm.iter().map(|&r| item_ids[r as usize]).collect();
    let times: Vec<i64> = perm.iter().map(|&r| times_in[r as usize]).collect();
    let n_users = user_keys.len() - 1;
    let mut offsets = vec![0usize; n_users + 2];
    for &r in &perm {
        offsets[user_ids[r as usize] as usize + 1] += 1;
    }
    for u in 1..offsets.len() {
        offsets[u] += offsets[u - 1];
    }

    tracing::debug!("order in {:.2}s", t0.elapsed().as_secs_f64());
    // 3. Negatives, one per step, from a per-user ChaCha stream so the result does not depend on threads.
    let n_items = (item_keys.len() - 1) as u32;
    let negatives = draw_negatives(&items, &offsets, n_items, cfg, &user_keys)?;

    tracing::debug!("negatives in {:.2}s", t0.elapsed().as_secs_f64());
    // 4. User-level split.
    let is_test = split_users(n_users, cfg);

    let ds = PreparedDataset::from_parts(
        Manifest {
            format_version: crate::dataset::FORMAT_VERSION,
            mtrec_version: env!("CARGO_PKG_VERSION").to_owned(),
            source_format: interactions.format().to_owned(),
            inputs,
            rules: Rules {
                prepare: cfg.clone(),
                category_rule: None,
                id_order: "sorted raw keys (numeric when all keys are integers), 0 = padding"
                    .into(),
                order: "stable per user by (time, source file, line)".into(),
            },
            counts: Counts::default(),
            warnings,
        },
        offsets,
        items,
        times,
        negatives,
        is_test,
        item_category,
        user_keys,
        item_keys,
        category_keys,
    )?;
    Ok(ds)
}

/// One negative per interaction, following `cfg.negatives`.
fn draw_negatives(
    items: &[u32],
    offsets: &[usize],
    n_items: u32,
    cfg: &PrepareConfig,
    user_keys: &[String],
) -> Result<Vec<u32>> {
    let n_users = offsets.len() - 2;
    let per_user: Vec<Result<Vec<u32>>> = (1..=n_users)
        .into_par_iter()
        .map(|u| {
            let seq = &items[offsets[u]..offsets[u + 1]];
            let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
            rng.set_stream(u as u64);
            let mut out = Vec::with_capacity(seq.len());
            match cfg.negatives {
                NegativeRule::Uniform => {
                    let mut positives = seq.to_vec();
                    positives.sort_unstable();
                    positives.dedup();
                    if positives.len() as u32 >= n_items {
                        return Err(DataError::Invalid(format!(
                            "user '{}' engaged with all {n_items} items: no negative item can be drawn",
                            user_keys[u]
                        )));
                    }
                    for _ in seq {
                        loop {
                            let cand = rng.random_range(1..=n_items);
                            if positives.binary_search(&cand).is_err() {
                                out.push(cand);
                                break;
                            }
                        }
                    }
                }
                NegativeRule::Popularity => {
                    for &pos in seq {
                        // Bounded retries: if a dataset is (nearly) a single item, fail clearly.
                        let mut tries = 0;
                        loop {
                            let cand = items[rng.random_range(0..items.len())];
                            if cand != pos {
                                out.push(cand);
                                break;
                            }
                            tries += 1;
                            if tries > 10_000 {
                                return Err(DataError::Invalid(
                                    "popularity negatives: almost every interaction is the same item".into(),
                                ));
                            }
                        }
                    }
                }
            }
            Ok(out)
        })
        .collect();
    let mut negatives = Vec::with_capacity(items.len());
    for r in per_user {
        negatives.extend(r?);
    }
    Ok(negatives)
}

/// Marks `round(n * fraction)` users as test users, chosen by a seeded shuffle (index 0 is padding).
fn split_users(n_users: usize, cfg: &PrepareConfig) -> Vec<bool> {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    rng.set_stream(u64::MAX);
    let mut ids: Vec<usize> = (1..=n_users).collect();
    // Fisher-Yates, written out so the permutation depends only on the ChaCha stream.
    for i in (1..ids.len()).rev() {
        let j = rng.random_range(0..=i);
        ids.swap(i, j);
    }
    let mut n_test = (n_users as f64 * cfg.test_fraction).round() as usize;
    if n_users > 1 {
        n_test = n_test.min(n_users - 1);
    } else {
        n_test = 0;
    }
    let mut is_test = vec![false; n_users + 1];
    for &u in &ids[..n_test] {
        is_test[u] = true;
    }
    is_test
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_keys_sort_numerically_others_by_bytes() {
        let mut k = vec!["10", "9", "100", "1"];
        sort_keys(&mut k);
        assert_eq!(k, ["1", "9", "10", "100"]);
        let mut k = vec!["0000000116", "B0001", "000100039X", "0000000868"];
        sort_keys(&mut k);
        assert_eq!(k, ["0000000116", "0000000868", "000100039X", "B0001"]);
    }

    #[test]
    fn split_takes_the_fraction_and_is_seeded() {
        let cfg = PrepareConfig::default();
        let a = split_users(1000, &cfg);
        assert_eq!(a.iter().filter(|&&t| t).count(), 100);
        assert!(!a[0]);
        assert_eq!(a, split_users(1000, &cfg));
        let other = PrepareConfig { seed: 7, ..cfg };
        assert_ne!(a, split_users(1000, &other));
        assert_eq!(
            split_users(1, &PrepareConfig::default())
                .iter()
                .filter(|&&t| t)
                .count(),
            0
        );
    }
}
