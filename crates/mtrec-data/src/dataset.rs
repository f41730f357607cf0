//! The prepared dataset: flat per-user sequences with their fixed negatives, the user split, the id
//! vocabularies and a manifest of provenance. On disk it is a folder of parquet files plus
//! `manifest.json`; in memory it is plain contiguous arrays, which is what training reads.

use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, PolarsContext, Result};
use crate::formats::CategoryRule;
use crate::io::{write_atomic, StagedDir};
use crate::prepare::PrepareConfig;

/// Version of the on-disk layout; bumped on any incompatible change.
pub const FORMAT_VERSION: u32 = 1;

/// File names inside a prepared dataset folder.
pub mod files {
    pub const MANIFEST: &str = "manifest.json";
    pub const INTERACTIONS: &str = "interactions.parquet";
    pub const USERS: &str = "users.parquet";
    pub const ITEMS: &str = "items.parquet";
    pub const CATEGORIES: &str = "categories.parquet";
}

/// One input file and its fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
}

/// The rules a dataset was prepared with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rules {
    pub prepare: PrepareConfig,
    /// Category rule of amazon-json inputs (other formats carry their category).
    pub category_rule: Option<CategoryRule>,
    pub id_order: String,
    pub order: String,
}

/// Sizes of the dataset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub users: usize,
    pub items: usize,
    pub categories: usize,
    pub interactions: usize,
    pub train_users: usize,
    pub test_users: usize,
    /// (h, i, y) samples: two per step t >= 2 (positive and negative), DIN/DIEN style.
    pub train_samples: usize,
    pub test_samples: usize,
}

/// `manifest.json`: provenance and counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub mtrec_version: String,
    pub source_format: String,
    pub inputs: Vec<InputFile>,
    pub rules: Rules,
    pub counts: Counts,
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// A prepared dataset in memory. Ids start at 1; 0 is padding in every vocabulary.
#[derive(Debug, Clone)]
pub struct PreparedDataset {
    pub manifest: Manifest,
    offsets: Vec<usize>,
    items: Vec<u32>,
    times: Vec<i64>,
    negatives: Vec<u32>,
    is_test: Vec<bool>,
    item_category: Vec<u32>,
    user_keys: Vec<String>,
    item_keys: Vec<String>,
    category_keys: Vec<String>,
}

impl PreparedDataset {
    /// Assembles a dataset and fills in the manifest's counts, checking that the parts agree.
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        mut manifest: Manifest,
        offsets: Vec<usize>,
        items: Vec<u32>,
        times: Vec<i64>,
        negatives: Vec<u32>,
        is_test: Vec<bool>,
        item_category: Vec<u32>,
        user_keys: Vec<String>,
        item_keys: Vec<String>,
        category_keys: Vec<String>,
    ) -> Result<Self> {
        let bad = |m: String| DataError::Invalid(format!("inconsistent dataset: {m}"));
        let n_users = user_keys.len().saturating_sub(1);
        if offsets.len() != n_users + 2 || offsets.first() != Some(&0) || offsets[1] != 0 {
            return Err(bad(format!(
                "{} offsets for {n_users} users",
                offsets.len()
            )));
        }
        if offsets.windows(2).any(|w| w[0] > w[1]) || offsets[n_users + 1] != items.len() {
            return Err(bad("offsets are not a partition of the interactions".into()));
        }
        if times.len() != items.len() || negatives.len() != items.len() {
            return Err(bad("column lengths differ".into()));
        }
        if is_test.len() != n_users + 1 || item_category.len() != item_keys.len() {
            return Err(bad("vocabulary lengths differ".into()));
        }
        let n_items = item_keys.len().saturating_sub(1) as u32;
        let n_cats = category_keys.len().saturating_sub(1) as u32;
        if let Some(i) = items
            .iter()
            .chain(&negatives)
            .find(|&&i| i == 0 || i > n_items)
        {
            return Err(bad(format!("item id {i} outside 1..={n_items}")));
        }
        if let Some(c) = item_category[1..].iter().find(|&&c| c == 0 || c > n_cats) {
            return Err(bad(format!("category id {c} outside 1..={n_cats}")));
        }
        if items.is_empty() {
            return Err(DataError::Empty {
                what: "the dataset".into(),
                hint: "no interaction".into(),
            });
        }
        let mut counts = Counts {
            users: n_users,
            items: n_items as usize,
            categories: n_cats as usize,
            interactions: items.len(),
            ..Counts::default()
        };
        for u in 1..=n_users {
            let len = offsets[u + 1] - offsets[u];
            let samples = 2 * len.saturating_sub(1);
            if is_test[u] {
                counts.test_users += 1;
                counts.test_samples += samples;
            } else {
                counts.train_users += 1;
                counts.train_samples += samples;
            }
        }
        manifest.counts = counts;
        Ok(PreparedDataset {
            manifest,
            offsets,
            items,
            times,
            negatives,
            is_test,
            item_category,
            user_keys,
            item_keys,
            category_keys,
        })
    }

    /// Number of users (ids 1..=n).
    pub fn n_users(&self) -> usize {
        self.user_keys.len() - 1
    }
    /// Number of items (ids 1..=n).
    pub fn n_items(&self) -> usize {
        self.item_keys.len() - 1
    }
    /// Number of categories (ids 1..=n).
    pub fn n_categories(&self) -> usize {
        self.category_keys.len() - 1
    }
    /// Rows of an item embedding table, padding included.
    pub fn item_vocab(&self) -> usize {
        self.item_keys.len()
    }
    /// Rows of a category embedding table, padding included.
    pub fn category_vocab(&self) -> usize {
        self.category_keys.len()
    }
    /// Number of interactions.
    pub fn n_interactions(&self) -> usize {
        self.items.len()
    }
    /// The user's positive items in order.
    pub fn sequence(&self, user: usize) -> &[u32] {
        &self.items[self.offsets[user]..self.offsets[user + 1]]
    }
    /// The user's negative items, one per step (`negatives(u)[t]` pairs with `sequence(u)[t]`).
    pub fn negatives(&self, user: usize) -> &[u32] {
        &self.negatives[self.offsets[user]..self.offsets[user + 1]]
    }
    /// The order keys of the user's steps.
    pub fn times(&self, user: usize) -> &[i64] {
        &self.times[self.offsets[user]..self.offsets[user + 1]]
    }
    /// Where user `u`'s steps start in the flat arrays (`offsets()[u]..offsets()[u+1]`).
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }
    /// All positive items, user after user.
    pub fn flat_items(&self) -> &[u32] {
        &self.items
    }
    /// All negative items, aligned with [`Self::flat_items`].
    pub fn flat_negatives(&self) -> &[u32] {
        &self.negatives
    }
    /// True for held-out test users.
    pub fn is_test(&self, user: usize) -> bool {
        self.is_test[user]
    }
    /// Category id of every item id (index 0: padding, category 0).
    pub fn item_category(&self) -> &[u32] {
        &self.item_category
    }
    /// Raw key of a user id.
    pub fn user_key(&self, user: usize) -> &str {
        &self.user_keys[user]
    }
    /// Raw key of an item id.
    pub fn item_key(&self, item: usize) -> &str {
        &self.item_keys[item]
    }
    /// Raw key of a category id.
    pub fn category_key(&self, cat: usize) -> &str {
        &self.category_keys[cat]
    }

    /// Writes the dataset folder atomically: everything goes to a staging folder that is renamed into
    /// place at the end. An existing folder is replaced only when `overwrite` is set.
    pub fn save(&self, dir: &Path, overwrite: bool) -> Result<PathBuf> {
        let staged = StagedDir::new(dir, overwrite)?;
        let p = staged.path();
        let n = self.items.len();
        let mut user_col = Vec::with_capacity(n);
        let mut step_col = Vec::with_capacity(n);
        for u in 1..=self.n_users() {
            for t in 0..(self.offsets[u + 1] - self.offsets[u]) {
                user_col.push(u as u32);
                step_col.push(t as u32);
            }
        }
        let cat = |i: &u32| self.item_category[*i as usize];
        let mut inter = DataFrame::new(
            n,
            vec![
                Column::new("user".into(), user_col),
                Column::new("step".into(), step_col),
                Column::new("item".into(), self.items.clone()),
                Column::new(
                    "category".into(),
                    self.items.iter().map(cat).collect::<Vec<_>>(),
                ),
                Column::new("time".into(), self.times.clone()),
                Column::new("negative".into(), self.negatives.clone()),
                Column::new(
                    "negative_category".into(),
                    self.negatives.iter().map(cat).collect::<Vec<_>>(),
                ),
            ],
        )
        .ctx(|| "interactions frame".into())?;
        write_parquet(&p.join(files::INTERACTIONS), &mut inter)?;

        let nu = self.n_users();
        let mut users = DataFrame::new(
            nu,
            vec![
                Column::new("user".into(), (1..=nu as u32).collect::<Vec<_>>()),
                Column::new("key".into(), self.user_keys[1..].to_vec()),
                Column::new("test".into(), self.is_test[1..].to_vec()),
                Column::new(
                    "length".into(),
                    (1..=nu)
                        .map(|u| (self.offsets[u + 1] - self.offsets[u]) as u32)
                        .collect::<Vec<_>>(),
                ),
            ],
        )
        .ctx(|| "users frame".into())?;
        write_parquet(&p.join(files::USERS), &mut users)?;

        let ni = self.n_items();
        let mut items = DataFrame::new(
            ni,
            vec![
                Column::new("item".into(), (1..=ni as u32).collect::<Vec<_>>()),
                Column::new("key".into(), self.item_keys[1..].to_vec()),
                Column::new("category".into(), self.item_category[1..].to_vec()),
            ],
        )
        .ctx(|| "items frame".into())?;
        write_parquet(&p.join(files::ITEMS), &mut items)?;

        let nc = self.n_categories();
        let mut cats = DataFrame::new(
            nc,
            vec![
                Column::new("category".into(), (1..=nc as u32).collect::<Vec<_>>()),
                Column::new("key".into(), self.category_keys[1..].to_vec()),
            ],
        )
        .ctx(|| "categories frame".into())?;
        write_parquet(&p.join(files::CATEGORIES), &mut cats)?;

        let json = serde_json::to_vec_pretty(&self.manifest)
            .map_err(|e| DataError::Invalid(format!("manifest: {e}")))?;
        write_atomic(&p.join(files::MANIFEST), &json)?;
        staged.commit()
    }

    /// Reads a dataset folder written by [`Self::save`], checking its consistency.
    pub fn load(dir: &Path) -> Result<Self> {
        let err = |m: String| DataError::prepared(dir, m);
        if !dir.is_dir() {
            return Err(err("no such folder (run `mtrec prepare` first)".into()));
        }
        let mpath = dir.join(files::MANIFEST);
        let bytes = std::fs::read(&mpath).map_err(|e| DataError::io(&mpath, e))?;
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| DataError::parse(&mpath, e.line() as u64, None, e.to_string()))?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(err(format!(
                "layout version {} but this mtrec reads version {FORMAT_VERSION}; prepare it again",
                manifest.format_version
            )));
        }
        let users = read_parquet(&dir.join(files::USERS))?;
        let items_df = read_parquet(&dir.join(files::ITEMS))?;
        let cats_df = read_parquet(&dir.join(files::CATEGORIES))?;
        let inter = read_parquet(&dir.join(files::INTERACTIONS))?;

        let user_keys = with_padding(strings(&users, "key", dir)?);
        let is_test = {
            let mut v = vec![false];
            v.extend(
                users
                    .column("test")
                    .and_then(|c| {
                        c.bool()
                            .map(|ca| ca.iter().map(|b| b.unwrap_or(false)).collect::<Vec<_>>())
                    })
                    .map_err(|e| err(format!("users.parquet: column 'test': {e}")))?,
            );
            v
        };
        check_ids(&users, "user", dir)?;
        check_ids(&items_df, "item", dir)?;
        check_ids(&cats_df, "category", dir)?;
        let item_keys = with_padding(strings(&items_df, "key", dir)?);
        let category_keys = with_padding(strings(&cats_df, "key", dir)?);
        let mut item_category = vec![0u32];
        item_category.extend(u32s(&items_df, "category", dir)?);

        let user_col = u32s(&inter, "user", dir)?;
        let step_col = u32s(&inter, "step", dir)?;
        let n_users = user_keys.len() - 1;
        let mut offsets = vec![0usize; n_users + 2];
        for (row, (&u, &t)) in user_col.iter().zip(&step_col).enumerate() {
            let u = u as usize;
            if u == 0 || u > n_users {
                return Err(err(format!(
                    "interactions row {row}: user id {u} outside 1..={n_users}"
                )));
            }
            if t as usize != offsets[u + 1] {
                return Err(err(format!(
                    "interactions row {row}: steps of user {u} are not 0, 1, 2, ... in order"
                )));
            }
            offsets[u + 1] += 1;
        }
        for u in 1..offsets.len() {
            offsets[u] += offsets[u - 1];
        }
        if user_col.windows(2).any(|w| w[0] > w[1]) {
            return Err(err("interactions are not sorted by user".into()));
        }
        let times = inter
            .column("time")
            .and_then(|c| c.i64().map(|ca| ca.into_no_null_iter().collect::<Vec<_>>()))
            .map_err(|e| err(format!("interactions.parquet: column 'time': {e}")))?;
        PreparedDataset::from_parts(
            manifest,
            offsets,
            u32s(&inter, "item", dir)?,
            times,
            u32s(&inter, "negative", dir)?,
            is_test,
            item_category,
            user_keys,
            item_keys,
            category_keys,
        )
        .map_err(|e| err(e.to_string()))
    }

    /// Summary statistics.
    pub fn stats(&self) -> Stats {
        let mut lens: Vec<usize> = (1..=self.n_users())
            .map(|u| self.offsets[u + 1] - self.offsets[u])
            .collect();
        lens.sort_unstable();
        let median = if lens.is_empty() {
            0.0
        } else if lens.len() % 2 == 1 {
            lens[lens.len() / 2] as f64
        } else {
            (lens[lens.len() / 2 - 1] + lens[lens.len() / 2]) as f64 / 2.0
        };
        let c = &self.manifest.counts;
        Stats {
            source_format: self.manifest.source_format.clone(),
            users: c.users,
            items: c.items,
            interactions: c.interactions,
            categories: c.categories,
            train_users: c.train_users,
            test_users: c.test_users,
            train_samples: c.train_samples,
            test_samples: c.test_samples,
            sequence_min: lens.first().copied().unwrap_or(0),
            sequence_median: median,
            sequence_mean: c.interactions as f64 / c.users.max(1) as f64,
            sequence_max: lens.last().copied().unwrap_or(0),
            max_history: self.manifest.rules.prepare.max_history,
            seed: self.manifest.rules.prepare.seed,
        }
    }
}

/// What `mtrec stats` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub source_format: String,
    pub users: usize,
    pub items: usize,
    pub interactions: usize,
    pub categories: usize,
    pub train_users: usize,
    pub test_users: usize,
    pub train_samples: usize,
    pub test_samples: usize,
    pub sequence_min: usize,
    pub sequence_median: f64,
    pub sequence_mean: f64,
    pub sequence_max: usize,
    pub max_history: usize,
    pub seed: u64,
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rows: [(&str, String); 11] = [
            ("source format", self.source_format.clone()),
            ("users", group(self.users)),
            ("items", group(self.items)),
            ("interactions", group(self.interactions)),
            ("categories", group(self.categories)),
            (
                "train / test users",
                format!("{} / {}", group(self.train_users), group(self.test_users)),
            ),
            (
                "train / test samples",
                format!(
                    "{} / {}",
                    group(self.train_samples),
                    group(self.test_samples)
                ),
            ),
            (
                "sequence length",
                format!(
                    "min {} / median {} / mean {:.2} / max {}",
                    self.sequence_min, self.sequence_median, self.sequence_mean, self.sequence_max
                ),
            ),
            ("history cap", self.max_history.to_string()),
            ("seed", self.seed.to_string()),
            ("padding id", "0 (real ids start at 1)".into()),
        ];
        for (k, v) in rows {
            writeln!(f, "{k:<22}{v}")?;
        }
        Ok(())
    }
}

/// 198502 -> "198,502".
pub fn group(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn write_parquet(path: &Path, df: &mut DataFrame) -> Result<()> {
    let f = File::create(path).map_err(|e| DataError::io(path, e))?;
    ParquetWriter::new(f)
        .finish(df)
        .ctx(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn read_parquet(path: &Path) -> Result<DataFrame> {
    let f = File::open(path).map_err(|e| DataError::io(path, e))?;
    ParquetReader::new(f)
        .finish()
        .ctx(|| format!("reading {}", path.display()))
}

fn with_padding(mut keys: Vec<String>) -> Vec<String> {
    keys.insert(0, String::new());
    keys
}

fn strings(df: &DataFrame, name: &str, dir: &Path) -> Result<Vec<String>> {
    df.column(name)
        .and_then(|c| {
            c.str()
                .map(|ca| ca.iter().map(|v| v.unwrap_or("").to_owned()).collect())
        })
        .map_err(|e| DataError::prepared(dir, format!("column '{name}': {e}")))
}

fn u32s(df: &DataFrame, name: &str, dir: &Path) -> Result<Vec<u32>> {
    let c = df
        .column(name)
        .map_err(|e| DataError::prepared(dir, format!("column '{name}': {e}")))?;
    if c.null_count() > 0 {
        return Err(DataError::prepared(
            dir,
            format!("column '{name}' has missing values"),
        ));
    }
    c.u32()
        .map(|ca| ca.into_no_null_iter().collect())
        .map_err(|e| DataError::prepared(dir, format!("column '{name}': {e}")))
}

/// Id columns must read 1, 2, 3, ... so that ids index the arrays directly.
fn check_ids(df: &DataFrame, name: &str, dir: &Path) -> Result<()> {
    let ids = u32s(df, name, dir)?;
    if ids.iter().enumerate().any(|(i, &id)| id as usize != i + 1) {
        return Err(DataError::prepared(
            dir,
            format!("{name} ids are not 1..={}", ids.len()),
        ));
    }
    Ok(())
}
